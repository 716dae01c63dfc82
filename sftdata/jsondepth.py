"""How deeply JSON text nests, found without parsing it (M17).

Arrow's JSON reader dies with SIGSEGV at about 10,000 levels, ``pl.from_arrow`` at about 1,000,
and Python's json raises RecursionError near 1,000. So JSON lines are measured before a parser
sees them: :func:`first_too_deep` finds the first line that nests deeper than a limit.

The scan is cheap where it can be: a block of lines with fewer ``[`` and ``{`` than the limit
cannot nest deeper (two byte counts); only blocks with more are measured exactly, with numpy over
their structural bytes (brackets outside strings, quotes not escaped, newlines ending lines).
"""

from __future__ import annotations

import numpy as np

# Nesting a record table may hold (Arrow and Polars columns): messages are list<struct> (2), a
# tool call inside a message 4 or 5; 64 leaves room for any honest extra column.
TABLE_MAX_DEPTH = 64
# Deeper than this, no Arrow or Polars reader is handed the text at all (crashes above ~1,000).
READER_MAX_DEPTH = 256
# Deeper than this, Python's json is not asked either (RecursionError near 1,000, and every
# later step that walks the value needs stack too): the line is a bad row naming its depth.
JSON_MAX_DEPTH = 800
BLOCK_BYTES = 1 << 16

_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[[ord(c) for c in '[]{}"\\\n']] = True
_DELTA = np.zeros(256, dtype=np.int64)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1


def first_too_deep(
    data: bytes | bytearray, limit: int, per_line: bool = True
) -> tuple[int, int] | None:
    """(0-based line index within ``data``, depth reached) of the first line nesting deeper
    than ``limit``, or None. ``per_line=False`` measures one JSON document spread over lines."""
    size, start = len(data), 0
    if not per_line:
        if data.count(b"[") + data.count(b"{") <= limit:
            return None
        found = _deepest(data, 0, size, limit, per_line=False)
        return None if found is None else (data.count(b"\n", 0, found[0]), found[1])
    while start < size:
        end = data.find(b"\n", min(start + BLOCK_BYTES, size))
        end = size if end < 0 else end + 1
        if data.count(b"[", start, end) + data.count(b"{", start, end) > limit:
            found = _deepest(data, start, end, limit)
            if found is not None:
                offset, depth = found
                return data.count(b"\n", 0, offset), depth
        start = end
    return None


def nesting_depth(data: bytes | bytearray) -> int:
    """The deepest nesting of any line in ``data`` (0 for a scalar)."""
    found = _deepest(data, 0, len(data), -1, deepest=True)
    return found[1] if found else 0


def _deepest(
    data: bytes | bytearray, start: int, end: int, limit: int, deepest: bool = False,
    per_line: bool = True,
) -> tuple[int, int] | None:
    """(byte offset, depth) where nesting first exceeds ``limit`` in data[start:end] (with
    ``deepest``: the deepest point overall), or None."""
    view = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    pos = np.flatnonzero(_STRUCTURAL[view])
    if pos.size == 0:
        return None
    ch = view[pos]
    backslash = ch == ord("\\")
    if backslash.any():  # a character after an odd run of backslashes is escaped
        bpos = pos[backslash]
        run_start = np.ones(bpos.size, dtype=bool)
        run_start[1:] = bpos[1:] != bpos[:-1] + 1
        starts = np.flatnonzero(run_start)
        lengths = np.diff(np.append(starts, bpos.size))
        after = bpos[starts] + lengths  # the byte after each run
        escaped = after[lengths % 2 == 1]
        keep = ~backslash & ~(np.isin(pos, escaped) & (ch != ord("\n")))
        pos, ch = pos[keep], ch[keep]
    newline = ch == ord("\n")
    if not per_line:
        pos, ch, newline = pos[~newline], ch[~newline], newline[~newline]
    index = np.arange(ch.size)
    line_start = np.maximum.accumulate(np.where(newline, index, -1))  # last newline at or before
    quotes = np.cumsum(ch == ord('"'))
    quotes_at_start = np.where(line_start >= 0, quotes[np.maximum(line_start, 0)], 0)
    outside = (quotes - quotes_at_start - (ch == ord('"'))) % 2 == 0
    depth = np.cumsum(np.where(outside, _DELTA[ch], 0))
    depth = depth - np.where(line_start >= 0, depth[np.maximum(line_start, 0)], 0)
    if deepest:
        at = int(np.argmax(depth))
        return int(pos[at]) + start, int(depth[at])
    over = np.flatnonzero(depth > limit)
    if over.size == 0:
        return None
    first = over[0]
    same_line = line_start == line_start[first]
    return int(pos[first]) + start, int(depth[same_line].max())
