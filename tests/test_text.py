"""Views and normalization shared by dedup, leakcheck and gold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftdata.schema import from_dicts
from sftdata.text import normalize, view_expr, view_text, words

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi  there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye."},
]


def test_normalize_nfkc_casefold_whitespace():
    assert normalize("  Ｈｅｌｌｏ\tWORLD\n ") == "hello world"
    assert normalize("Straße") == "strasse"
    assert normalize("Hi, there!", strip_punctuation=True) == "hi there"


def test_words_ignores_punctuation():
    assert words("it's 3 o'clock, ok") == ["it", "s", "3", "o", "clock", "ok"]


@pytest.mark.parametrize(
    "on, expected",
    [
        ("prompt", "Be brief.\nHi  there\nBye"),
        ("response", "Hello!\nBye."),
        ("conversation", "system: Be brief.\nuser: Hi  there\nassistant: Hello!\nuser: Bye\nassistant: Bye."),
    ],
)
def test_views(on, expected):
    assert view_text(MESSAGES, on) == expected
    df = from_dicts([{"messages": MESSAGES}])
    assert df.select(view_expr(on)).item() == expected


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="unknown view"):
        view_text(MESSAGES, "everything")


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
