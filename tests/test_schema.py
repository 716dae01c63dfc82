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

    rows = [{"messages": [{"role": "user", "content": f"q{i} ünï \"x\"\n\0"},
                          {"role": "assistant", "content": "a" if i else None}]}
            for i in range(5)] + [{"messages": []}]
    df = from_dicts(rows)
    got = content_ids(df["messages"]).to_list()
    assert got == [content_id(r["messages"]) for r in rows]


def test_content_id_form_is_unambiguous():
    # Without the length prefix these two would hash the same bytes.
    one = [{"role": "user", "content": "a\x001\x00b"}]
    two = [{"role": "user", "content": "a"}, {"role": "", "content": "b"}]
    assert content_id(one) != content_id(two)
    assert content_id([{"role": "user", "content": None}]) != content_id(
        [{"role": "user", "content": ""}])
    assert content_id([{"role": "user", "content": "-"}]) != content_id(
        [{"role": "user", "content": None}])


def test_content_id_is_xxh3_of_the_documented_form():
    import xxhash

    messages = [{"role": "user", "content": "hé"}, {"role": "assistant", "content": None}]
    assert schema.canonical_bytes(messages) == b"user\x003\x00h\xc3\xa9assistant\x00-\x00"
    assert content_id(messages) == xxhash.xxh3_64_hexdigest(schema.canonical_bytes(messages))
    assert content_id([{"role": "user", "content": "hi"}]) == "511876c2367c47f5"  # pinned: ids must not drift


@pytest.mark.parametrize("backend", ["_plugin_hash_ids", "_python_hash_ids"])
def test_both_hash_backends_give_content_id_digests(backend):
    import xxhash

    from sftdata.formats import _fast

    texts = ["", "ascii", "ünïcödé \"q\"\n\0", "😀" * 300, "x" * 100_000]
    got = getattr(_fast, backend)(pl.Series(texts)).to_list()
    assert got == [xxhash.xxh3_64_hexdigest(t.encode()) for t in texts]


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
