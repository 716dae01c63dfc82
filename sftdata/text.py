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


def normalize_series(texts: pl.Series, *, strip_punctuation: bool = False) -> pl.Series:
    """:func:`normalize` of every text, equal to it string for string, in bulk.

    ASCII texts (nearly all of them in most corpora) are normalized by Polars in Rust, on all
    cores: for ASCII, NFKC is the identity and casefold is lowercasing. The rest go through
    :func:`normalize` itself, so casefold's special cases (German sharp s, final sigma) and NFKC
    stay exactly Python's. Nulls become empty strings.
    """
    texts = texts.cast(pl.String).fill_null("")
    fast = texts.str.to_lowercase()
    if strip_punctuation:
        fast = fast.str.replace_all(r"[^\w\s\x1c-\x1f]", " ")
    fast = fast.str.replace_all(_RUST_SPACE, " ").str.strip_chars(" ")
    is_ascii = texts.str.contains(r"^[\x00-\x7f]*$")
    if bool(is_ascii.all()):
        return fast.alias(texts.name)
    rows = (~is_ascii).arg_true()
    slow = pl.Series([normalize(t, strip_punctuation=strip_punctuation)
                      for t in texts.gather(rows).to_list()], dtype=pl.String)
    return fast.scatter(rows, slow).alias(texts.name)


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
