"""The render_template op: columns, per-row refusals, stale downstream columns."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import chat

from sftdata.errors import DataError
from sftdata.ops.render_template import SPANS_TYPE, render_template
from sftdata.schema import from_dicts


def records():
    tool_first = {"messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "It is 42."}]}
    return from_dicts([chat("hi", "hello"), tool_first, chat("a", "b", "c", "d", task="chat")])


def test_adds_text_spans_and_template_and_keeps_other_columns():
    df = records().with_columns(pl.lit("x").alias("extra"))
    out = render_template(df, "chatml").records
    assert out.columns == [*df.columns, "text", "spans", "template"]
    assert out.schema["spans"] == SPANS_TYPE
    assert out.height == 3 and out["extra"].to_list() == ["x"] * 3
    info = json.loads(out["template"][0])
    assert info["spec"] == "chatml" and info["name"] == "chatml" and len(info["hash"]) == 64
    assert [s["turn"] for s in out["spans"][2]] == [1, 3]


def test_refused_row_raises_with_its_row_or_goes_to_rejects():
    with pytest.raises(DataError, match=r"in.jsonl, row 2: field 'messages': template 'sixtoken' refused"):
        render_template(records(), "sixtoken", source="in.jsonl")
    result = render_template(records(), "sixtoken", keep_going=True)
    assert result.records.height + result.rejects.height == 3
    assert result.rejects["id"].to_list() == [records()["id"][1]]
    assert "has no tool role" in result.rejects["reason"][0]


def test_rerendering_drops_stale_token_columns():
    df = render_template(records(), "chatml").records.with_columns(pl.lit(1).alias("n_tokens"))
    result = render_template(df, "llama3")
    assert result.dropped_columns == ["n_tokens"]
    assert "n_tokens" not in result.records.columns
    assert result.records["text"][0].startswith("<|begin_of_text|>")


def test_variables_reach_the_template():
    out = render_template(from_dicts([chat("q", "a")]), "alpaca", variables={"eos_token": "<|endoftext|>"})
    span = out.records["spans"][0][0]
    assert out.records["text"][0][span["eot_start"] : span["end"]] == "<|endoftext|>"


def test_same_input_gives_identical_output():
    first = render_template(records(), "chatml").records
    assert first.equals(render_template(records(), "chatml").records)
