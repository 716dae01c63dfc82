"""Text views of a record and their normalization, shared by dedup, leakcheck and gold.

A *view* picks which part of a conversation is compared:
  prompt        every non-assistant turn (system, user, tool), joined
  response      every assistant turn, joined
  conversation  every turn with its role: "user: ...\\nassistant: ..." (roles included)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

VIEWS = ("prompt", "response", "conversation")
_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str, *, strip_punctuation: bool = False) -> str:
    """NFKC, case folding and collapsed whitespace (optionally punctuation removed)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if strip_punctuation:
        text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# Python's \s also matches the ASCII separators \x1c-\x1f; Rust's regex does not.
_RUST_SPACE = r"[\s\x1c-\x1f]+"
_RUST_TOKEN = r"[^\s\x1c-\x1f]+"


def normalize_series(texts: pl.Series, *, strip_punctuation: bool = False) -> pl.Series:
    """:func:`normalize` of every text, equal to it string for string, in bulk.

    ASCII texts are normalized in Rust as whole strings (for ASCII, NFKC is the identity and
    casefold is lowercasing). In the other texts, every distinct whitespace-separated token
    holding a non-ASCII character goes through :func:`normalize` once and is put back by an
    Aho-Corasick replace (longest token first, so a token is never matched inside a longer
    one), ASCII letters are lowercased, and whitespace is collapsed. That is exact because
    whitespace separates: NFKC never composes across a space and casefold has no context, and
    the final collapse absorbs any space NFKC puts into a token. Nulls become empty strings.
    """
    texts = texts.cast(pl.String).fill_null("")
    name = texts.name
    if strip_punctuation:  # punctuation is Python's \w/\s in context: ASCII texts only in Rust
        return _normalize_ascii_fast(texts, strip_punctuation=True).alias(name)
    fast = texts.str.to_lowercase().str.replace_all(_RUST_SPACE, " ").str.strip_chars(" ")
    rows = (~texts.str.contains(r"^[\x00-\x7f]*$")).arg_true()
    if rows.len() == 0:
        return fast.alias(name)
    others = texts.gather(rows)
    odd = others.str.extract_all(_NON_ASCII_TOKEN).explode().drop_nulls().unique()
    odd = odd.gather(odd.str.len_bytes().arg_sort(descending=True))
    slow = (
        pl.DataFrame({"t": others})
        .select(
            pl.col("t")
            .str.replace_many(pl.lit(odd).implode(),
                              pl.lit(pl.Series([normalize(t) for t in odd.to_list()],
                                               dtype=pl.String)).implode(),
                              leftmost=True)
            .str.replace_many(pl.lit(pl.Series(_UPPER)).implode(),
                              pl.lit(pl.Series(_LOWER)).implode())
            .str.replace_all(_RUST_SPACE, " ")
            .str.strip_chars(" ")
        )
        .to_series()
    )
    return fast.scatter(rows, slow).alias(name)


_NON_ASCII_TOKEN = r"[^\s\x1c-\x1f]*[^\x00-\x7f\s][^\s\x1c-\x1f]*"
_UPPER = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
_LOWER = [c.lower() for c in _UPPER]


def _normalize_ascii_fast(texts: pl.Series, *, strip_punctuation: bool) -> pl.Series:
    """ASCII texts normalized in Rust, the others by :func:`normalize`."""
    fast = texts.str.to_lowercase()
    if strip_punctuation:
        fast = fast.str.replace_all(r"[^\w\s\x1c-\x1f]", " ")
    fast = fast.str.replace_all(_RUST_SPACE, " ").str.strip_chars(" ")
    is_ascii = texts.str.contains(r"^[\x00-\x7f]*$")
    if bool(is_ascii.all()):
        return fast
    rows = (~is_ascii).arg_true()
    slow = pl.Series([normalize(t, strip_punctuation=strip_punctuation)
                      for t in texts.gather(rows).to_list()], dtype=pl.String)
    return fast.scatter(rows, slow)


def words(text: str) -> list[str]:
    """Word tokens of already-normalized text (letters/digits runs; punctuation ignored)."""
    return _WORD.findall(text)


def view_text(messages: Iterable[Mapping[str, Any]], on: str = "conversation") -> str:
    if on not in VIEWS:
        raise ValueError(f"unknown view {on!r}; choose one of {', '.join(VIEWS)}")
    parts = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if on == "prompt" and role != "assistant":
            parts.append(content)
        elif on == "response" and role == "assistant":
            parts.append(content)
        elif on == "conversation":
            parts.append(f"{role}: {content}")
    return "\n".join(parts)


def view_expr(on: str = "conversation") -> pl.Expr:
    """The same view as :func:`view_text`, computed by Polars (fast on large frames)."""
    if on not in VIEWS:
        raise ValueError(f"unknown view {on!r}; choose one of {', '.join(VIEWS)}")
    m = pl.element().struct
    if on == "conversation":
        body = pl.col("messages").list.eval(pl.concat_str([m.field("role"), pl.lit(": "), m.field("content").fill_null("")]))
    else:
        wanted = m.field("role") == "assistant"
        if on == "prompt":
            wanted = ~wanted
        body = pl.col("messages").list.eval(m.field("content").fill_null("").filter(wanted))
    return body.list.join("\n")
