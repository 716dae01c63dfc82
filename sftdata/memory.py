"""Memory budgets (``--memory``): parsing sizes and the default share of this machine's RAM.

A command given a budget decides from its input's size, read from metadata before any row is,
whether the whole input fits; when it does not, it works through the input in pieces sized to
the budget (pack: docs/bench/pack.md).
"""

from __future__ import annotations

import re

from .errors import UsageProblem

DEFAULT_SHARE = 0.5  # of the memory available when the command starts: others share the box
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def size_bytes(text: str) -> int | None:
    """Bytes in ``text`` (a number with an optional unit: 4GiB, 512MiB, 8G, 80GB), or None
    when it is not a size. The one size grammar of sftdata and sfttrain (--memory, --gpu-mem,
    mem_budget=)."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[unit])


def parse_size(text: str, label: str = "--memory") -> int:
    """Bytes in ``text``: a number with an optional unit (4GiB, 512MiB, 8G, 1.5e9 is not one)."""
    size = size_bytes(text)
    if size is None:
        raise UsageProblem(
            f"{label}: {text!r} is not a size; give a number with a unit such as 4GiB, 512MiB or 8GB"
        )
    if size < 1 << 20:
        raise UsageProblem(f"{label}: {text!r} is below 1 MiB; no command works in that")
    return size


def available() -> int:
    """Bytes of memory available now (what the kernel could give without swapping); psutil is
    not a core dependency, so Linux's MemAvailable, else the free pages."""
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # macOS has no SC_AVPHYS_PAGES
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def budget(text: str | None, label: str = "--memory") -> int:
    """The budget in bytes: ``text`` parsed, or DEFAULT_SHARE of the memory available now."""
    if text is None:
        return int(available() * DEFAULT_SHARE)
    return parse_size(text, label)


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
