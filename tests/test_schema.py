"""The canonical record: schema, ids, conform."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sftdata import schema
from sftdata.schema import RECORD_SCHEMA, conform, content_id, from_dicts


def test_from_dicts_fills_every_column_and_message_field():
    df = from_dicts([{"messages": [{"role": "user", "content": "hi"}]}])
    assert df.schema == pl.Schema(RECORD_SCHEMA)
    msg = df["messages"][0][0]
    assert msg == {"role": "user", "content": "hi", "train": None, "weight": None,
                   "name": None, "tool_calls": None, "tool_call_id": None}


def test_content_id_depends_on_roles_and_contents_only():
    a = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    b = [{"role": "user", "content": "hi", "weight": 0.5}, {"role": "assistant", "content": "yo"}]
    c = [{"role": "system", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert content_id(a) == content_id(b)
    assert content_id(a) != content_id(c)
    assert len(content_id(a)) == 16


def test_vectorized_content_ids_match_python_function():
    from sftdata.formats._fast import content_ids

    rows = [{"messages": [{"role": "user", "content": f"q{i} ünï \"x\"\n"}, {"role": "assistant", "content": "a"}]}
            for i in range(5)]
    df = from_dicts(rows)
    got = content_ids(df["messages"]).to_list()
    assert got == [content_id(r["messages"]) for r in rows]


@pytest.mark.parametrize("backend", ["_plugin_sha_ids", "_hashlib_sha_ids"])
def test_both_sha_backends_give_content_id_digests(backend):
    import hashlib

    from sftdata.formats import _fast

    texts = ["", "ascii", "ünïcödé \"q\"\n", "😀" * 300, "x" * 100_000]
    got = getattr(_fast, backend)(pl.Series(texts)).to_list()
    assert got == [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts]


def test_conform_orders_columns_keeps_extras_and_adds_missing_message_fields():
    df = pl.DataFrame({
        "extra": [1],
        "messages": [[{"role": "user", "content": "x"}]],
        "id": ["r1"],
    })
    out = conform(df)
    assert out.columns == [*RECORD_SCHEMA, "extra"]
    assert out["messages"].dtype == RECORD_SCHEMA["messages"]
    assert out["source"].to_list() == [None]


def test_conform_rejects_non_struct_messages():
    with pytest.raises(TypeError, match="list of structs"):
        conform(pl.DataFrame({"id": ["a"], "messages": ["not a list"]}))


def test_json_schema_file_is_current():
    path = Path(__file__).resolve().parents[1] / "schemas" / "record.schema.json"
    if not path.exists():
        pytest.skip("schemas/record.schema.json not written yet")
    assert json.loads(path.read_text()) == schema.json_schema()


def test_every_public_function_resolves():
    import sftdata

    for name in sftdata.__all__:
        assert getattr(sftdata, name) is not None, name
