"""Continued pretraining data: tokenize keeps raw text whole, `pack --strategy wrap` cuts the
document stream into seq_len chunks (every token once and in order, boundaries kept), the
manifest and `sftdata inspect` say so."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, chat
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pack import tiny_tokenizer, tokenized

from sftdata.cli import cli
from sftdata.errors import UsageProblem
from sftdata.ops.pack import pack
from sftdata.ops.render_template import render_template
from sftdata.ops.tokenize import tokenize
from sftdata.schema import from_dicts
from sftdata.shards import LABEL_PAD, ShardReader
from sftdata.tokenizers import load_tokenizer

TINY_HF = str(FIXTURES / "tokenizers/tiny-chatml")
EOS = tiny_tokenizer()["eos_id"]


def text_record(content: str, id: str) -> dict:
    return {"id": id, "task": "text", "messages": [{"role": "assistant", "content": content}]}


def stream_of(result, name="train"):
    """Every chunk of a split as (ids, labels, doc_lens, record_ids), in order."""
    out = []
    for batch in result.splits[name].batches(3):
        seq = batch["seq_offsets"]
        docs = batch["doc_offsets"]
        rids = batch["record_ids"].to_pylist()
        for i in range(seq.size - 1):
            out.append((batch["input_ids"][seq[i] - seq[0]: seq[i + 1] - seq[0]],
                        batch["labels"][seq[i] - seq[0]: seq[i + 1] - seq[0]],
                        batch["doc_lens"][docs[i]:docs[i + 1]].tolist(),
                        rids[docs[i]:docs[i + 1]]))
    return out


# ------------------------------------------------------------------------- tokenize


@pytest.fixture(scope="module")
def hf():
    return load_tokenizer(TINY_HF)


def test_tokenize_never_cuts_text_rows_but_caps_chat_rows(hf):
    long = " ".join(f"word{i}" for i in range(200))
    frame = render_template(from_dicts([text_record(long, "t"), chat("hi", long)]), "chatml").records
    out = tokenize(frame, hf, max_len=32)
    by_id = {r["id"]: r for r in out.records.iter_rows(named=True)}
    text_row = by_id["t"]
    assert text_row["n_tokens"] > 32 * 4  # whole
    assert text_row["labels"] == text_row["input_ids"]  # every token trained
    assert hf.decode(text_row["input_ids"]) == long + "<|endoftext|>"
    assert [r["n_tokens"] for r in by_id.values() if r["id"] != "t"] == [32]  # chat: capped
    assert out.report["text_rows_kept_whole"] == 1 and out.report["rows_truncated"] == 1


def test_tokenize_appends_eos_when_the_template_has_no_end_of_text(hf, tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    frame = render_template(from_dicts([text_record("some text", "t")]), str(template)).records
    assert frame["text"][0] == "some text"  # no marker from this template
    out = tokenize(frame, hf)
    row = out.records.row(0, named=True)
    assert row["input_ids"][-1] == EOS and row["labels"][-1] == EOS
    assert row["n_tokens"] == len(row["input_ids"]) == row["n_supervised"]
    assert out.report["text_rows_eos_added"] == 1


# ------------------------------------------------------------------------- pack wrap


def text_frame(lengths, seed=0, eos_end=None, task="text", split=None):
    frame = tokenized(lengths, [0] * len(lengths), seed=seed, split=split)
    if eos_end is not None:  # make chosen documents end with EOS
        ids = [list(r) for r in frame["input_ids"].to_list()]
        for i, end in enumerate(eos_end):
            ids[i][-1] = EOS if end else (ids[i][-1] if ids[i][-1] != EOS else EOS + 1)
        frame = frame.with_columns(pl.Series("input_ids", ids, dtype=pl.List(pl.Int32)),
                                   pl.Series("labels", ids, dtype=pl.List(pl.Int32)))
    return frame.with_columns(pl.lit(task).alias("task"))


def test_wrap_cuts_the_stream_keeping_the_last_partial_chunk():
    frame = text_frame([5, 12, 3])
    result = pack(frame, seq_len=8, strategy="wrap")
    chunks = stream_of(result)
    assert [c[0].size for c in chunks] == [8, 8, 4]  # 20 tokens: two full chunks and a partial
    assert [c[2] for c in chunks] == [[5, 3], [8], [1, 3]]
    assert [c[3] for c in chunks] == [["r00000", "r00001"], ["r00001"], ["r00001", "r00002"]]
    expected = np.concatenate([np.array(r, dtype=np.int32) for r in frame["input_ids"].to_list()])
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), expected)
    wrap = result.splits["train"].wrap
    assert wrap == {"documents": 3, "documents_split": 1, "eos_added": 0, "tokens": 20,
                    "last_chunk_tokens": 4}
    packing = result.manifest()["packing"]
    assert packing["strategy"] == "wrap" and packing["truncation"] is None
    assert packing["cross_doc_attention"] is False and packing["wrap"]["train"] == wrap


def test_wrap_adds_eos_to_non_text_records_that_lack_it():
    frame = text_frame([4, 4], eos_end=[False, True], task="chat")
    chunks = stream_of(pack(frame, seq_len=100, strategy="wrap"))
    (ids, labels, lens, _), = chunks
    assert lens == [5, 4] and ids[4] == EOS and labels[4] == EOS  # added after the first only
    frame = text_frame([4, 4], eos_end=[False, True], task="text")  # text: ended by its template
    assert stream_of(pack(frame, seq_len=100, strategy="wrap"))[0][2] == [4, 4]


def test_wrap_refuses_truncation_and_cross_doc_goes_with_wrap_only():
    frame = text_frame([3])
    with pytest.raises(UsageProblem, match="--cross-doc-attention applies to --strategy wrap"):
        pack(frame, seq_len=8, strategy="bfd", cross_doc_attention=True)
    assert pack(frame, seq_len=8, strategy="wrap", cross_doc_attention=True).manifest()[
        "packing"]["cross_doc_attention"] is True


@st.composite
def corpora(draw):
    seq_len = draw(st.integers(1, 40))
    n = draw(st.integers(1, 20))
    lengths = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    eos_end = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    task = draw(st.sampled_from(["text", "chat"]))
    splits = draw(st.one_of(st.none(),
                            st.lists(st.sampled_from(["train", "val"]), min_size=n, max_size=n)))
    return seq_len, lengths, eos_end, task, splits


@settings(max_examples=80, deadline=None)
@given(corpora(), st.integers(0, 3))
def test_wrap_every_token_exactly_once_and_in_order(case, seed):
    seq_len, lengths, eos_end, task, splits = case
    frame = text_frame(lengths, seed=seed, eos_end=eos_end, task=task, split=splits)
    result = pack(frame, seq_len=seq_len, strategy="wrap")
    assert result.report.rows_packed == len(lengths) and result.dropped.height == 0
    for name, packed in result.splits.items():
        rows = [r for r in frame.iter_rows(named=True) if (r.get("split") or "train") == name]
        expected, expected_ids = [], []
        for r in rows:
            doc = list(r["input_ids"])
            if task != "text" and doc[-1] != EOS:
                doc.append(EOS)
            expected += doc
            expected_ids += [r["id"]] * len(doc)
        chunks = stream_of(result, name)
        got = np.concatenate([c[0] for c in chunks]).tolist()
        assert got == expected  # every token once, in order (EOS only where it was missing)
        labels = np.concatenate([c[1] for c in chunks])
        assert (labels == np.array(expected)).all()  # all trained, each on its own token
        assert all(c[0].size == seq_len for c in chunks[:-1]) and 0 < chunks[-1][0].size <= seq_len
        # each piece carries the id of the document its tokens came from
        piece_ids = [rid for c in chunks for rid, n in zip(c[3], c[2], strict=True)
                     for _ in range(n)]
        assert piece_ids == expected_ids
        assert all(sum(c[2]) == c[0].size and min(c[2]) >= 1 for c in chunks)
        wrap = packed.wrap
        assert wrap["tokens"] == len(expected) and wrap["documents"] == len(rows)
        assert packed.supervised_tokens == len(expected)
        spans = {}
        for c in chunks:
            for rid in dict.fromkeys(c[3]):
                spans[rid] = spans.get(rid, 0) + 1
        assert wrap["documents_split"] == sum(v > 1 for v in spans.values())


# ------------------------------------------------------------------------- CLI and inspect


def run(*args, input=None):
    return CliRunner().invoke(cli, [*map(str, args)], input=input)


@pytest.fixture
def tokens(tmp_path):
    docs = [text_record(" ".join(f"w{i}" for i in range(n)), f"d{n}") for n in (30, 5, 60)]
    rendered = render_template(from_dicts(docs), "chatml").records
    path = tmp_path / "tok.parquet"
    tokenize(rendered, load_tokenizer(TINY_HF)).records.write_parquet(path)
    return path


def test_cli_wrap_writes_chunks_and_reports_them(tokens, tmp_path):
    out = tmp_path / "shards"
    result = run("pack", tokens, "--strategy", "wrap", "--seq-len", "16", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    wrap = manifest["packing"]["wrap"]["train"]
    assert manifest["packing"]["strategy"] == "wrap"
    entry = manifest["splits"]["train"]
    assert entry["tokens"] == wrap["tokens"] == entry["supervised_tokens"]
    assert entry["sequences"] == -(-wrap["tokens"] // 16)
    assert entry["padded_tokens"] == 16 - wrap["last_chunk_tokens"]
    assert (f"  train: 3 documents -> {entry['sequences']} chunks of 16 (last "
            f"{wrap['last_chunk_tokens']} tokens), {wrap['documents_split']} documents split "
            "across chunks, 0 EOS added") in result.stderr
    reader = ShardReader(out)
    assert all(len(reader[i]["input_ids"]) == 16 for i in range(len(reader) - 1))
    shown = run("inspect", out)
    assert shown.exit_code == 0, shown.output
    assert (f"packing    wrap (attention within documents): 3 rows in, 3 packed, dropped: none; "
            f"train: {wrap['documents_split']} documents split across chunks, 0 EOS added, last chunk "
            f"{wrap['last_chunk_tokens']} tokens") in shown.stdout


def test_cli_cross_doc_attention_is_recorded_and_shown(tokens, tmp_path):
    out = tmp_path / "shards"
    result = run("pack", tokens, "--strategy", "wrap", "--seq-len", "16", "--cross-doc-attention",
                 "-o", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["packing"]["cross_doc_attention"]
    assert "attention across documents" in result.stderr
    assert "wrap (attention across documents)" in run("inspect", out).stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--strategy", "wrap", "--truncation", "left"),
     "Error: --truncation does not apply to --strategy wrap: it cuts nothing.\n"),
    (("--cross-doc-attention",), "Error: --cross-doc-attention applies to --strategy wrap only.\n"),
])
def test_cli_flag_combinations_are_usage_errors(tokens, tmp_path, args, message):
    result = run("pack", tokens, *args, "-o", tmp_path / "s")
    assert result.exit_code == 2
    assert result.stderr.endswith(message)


def test_labels_stay_trained_through_wrap(tokens, tmp_path):
    out = tmp_path / "shards"
    assert run("pack", tokens, "--strategy", "wrap", "--seq-len", "7", "-o", out).exit_code == 0
    reader = ShardReader(out)
    assert all((reader[i]["labels"] != LABEL_PAD).all() for i in range(len(reader)))
