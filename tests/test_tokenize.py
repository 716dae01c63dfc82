"""The tokenize op and back ends: labels from spans, policies, truncation, tiktoken offsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, chat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.errors import DataError
from sftdata.ops.render_template import render_template
from sftdata.ops.tokenize import tokenize, trained_spans
from sftdata.schema import from_dicts
from sftdata.shards import tokenizer_fingerprint
from sftdata.tokenizers import TokenizerError, load_tokenizer, parse_specials

TINY_HF = str(FIXTURES / "tokenizers/tiny-chatml")
TINY_TIKTOKEN = str(FIXTURES / "tokenizers/tiny.tiktoken")
TIKTOKEN_SPECIALS = {"<|im_start|>": 2000, "<|im_end|>": 2001, "<|endoftext|>": 2002, "<SOA>": 2003,
                     "<EOA>": 2004, "<SOU>": 2005, "<EOU>": 2006}


@pytest.fixture(scope="module")
def hf():
    return load_tokenizer(TINY_HF)


@pytest.fixture(scope="module")
def tk():
    return load_tokenizer(TINY_TIKTOKEN, specials=TIKTOKEN_SPECIALS)


def rendered(*records, template="chatml"):
    return render_template(from_dicts(list(records)), template).records


def trained_text(tok, row):
    return tok.decode([i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100])


def test_hf_labels_are_the_answers_and_their_end_of_turn(hf):
    out = tokenize(rendered(chat("hi", "hello", "more?", "sure")), hf)
    row = out.records.row(0, named=True)
    assert trained_text(hf, row) == "hello<|im_end|>sure<|im_end|>"
    assert row["n_tokens"] == len(row["input_ids"])
    assert row["n_supervised"] == sum(lab != -100 for lab in row["labels"]) > 2
    info = json.loads(row["tokenizer"])
    assert info == {"backend": "hf", "name": "tiny-chatml", "vocab_size": 512,
                    "vocab_hash": tokenizer_fingerprint(hf.tok.get_vocab()), "eos_id": 3, "pad_id": 1}
    assert out.records.schema["input_ids"].inner.is_integer()


def test_special_tokens_in_the_template_are_single_special_ids(hf, tk):
    row = tokenize(rendered(chat("hi", "hello")), hf).records.row(0, named=True)
    assert row["input_ids"][0] == hf.token_id("<|im_start|>")
    assert row["input_ids"].count(hf.token_id("<|im_end|>")) == 2
    row = tokenize(rendered(chat("hi", "hello")), tk).records.row(0, named=True)
    assert row["input_ids"].count(2001) == 2


def test_tiktoken_labels_follow_byte_offsets_through_non_ascii_text(tk):
    out = tokenize(rendered(chat("héllo wörld ✓", "naïve café ✓ done"), template="sixtoken"), tk)
    assert trained_text(tk, out.records.row(0, named=True)) == "naïve café ✓ done<EOA>"


@pytest.mark.parametrize(("policy", "expected"), [
    ("all", "A1<|im_end|>A3<|im_end|>"),
    ("last", "A3<|im_end|>"),
    ("flag", "A1<|im_end|>"),
])
def test_train_on_policies(hf, policy, expected):
    record = chat("Q0", "A1", "Q2", "A3")
    record["messages"][1]["train"] = True
    out = tokenize(rendered(record), hf, train_on=policy)
    assert trained_text(hf, out.records.row(0, named=True)) == expected


def test_explicit_false_flag_and_zero_weight_are_never_trained():
    spans = [{"turn": 1, "train": False, "weight": None}, {"turn": 3, "train": None, "weight": 0.0},
             {"turn": 5, "train": None, "weight": 1.0}]
    assert [s["turn"] for s in trained_spans(spans, "all")] == [5]
    assert [s["turn"] for s in trained_spans(spans, "last")] == [5]
    assert trained_spans(spans, "flag") == []


def test_no_train_eot_and_train_prompt(hf):
    df = rendered(chat("hi", "hello"))
    row = tokenize(df, hf, train_eot=False).records.row(0, named=True)
    assert trained_text(hf, row) == "hello"
    row = tokenize(df, hf, train_prompt=True).records.row(0, named=True)
    assert row["labels"] == row["input_ids"]


def test_truncation_right_left_drop_fail_with_accounting(hf):
    long_answer = "word " * 40
    df = rendered(chat("q", long_answer), chat("a long question " * 20, "ok"), chat("hi", "yo"))
    full = tokenize(df, hf).records
    n = full["n_tokens"].to_list()
    # cut the long-question row right where its answer starts: nothing trained is left
    max_len = next(i for i, lab in enumerate(full["labels"][1]) if lab != -100)
    assert n[2] < max_len < min(n[0], n[1])
    right = tokenize(df, hf, max_len=max_len, truncation="right")
    assert right.report["rows_truncated"] == 2 and right.report["rows_no_supervised"] == 1
    assert right.rejects["reason"].to_list() == [f"no supervised token left after right truncation to {max_len}"]
    assert right.records.height + right.rejects.height == 3
    assert right.report["supervised_tokens_lost"] > 0
    assert max(right.records["n_tokens"]) == max_len
    left = tokenize(df, hf, max_len=max_len, truncation="left")
    assert left.report["rows_no_supervised"] == 0 and left.records.height == 3
    assert trained_text(hf, left.records.row(1, named=True)) == "ok<|im_end|>"
    drop = tokenize(df, hf, max_len=max_len, truncation="drop")
    assert drop.report["rows_too_long_dropped"] == 2 and drop.records.height == 1
    with pytest.raises(DataError, match=rf"row 1: field 'text': {n[0]} tokens, longer than --max-len {max_len}"):
        tokenize(df, hf, max_len=max_len, truncation="fail")
    assert right.report["length_before_truncation"]["max"] == max(n)


def test_rows_without_any_trained_turn_are_set_aside(hf):
    out = tokenize(rendered(chat("hi", "yo"), chat("a", "b")), hf, train_on="flag")
    assert out.records.height == 0 and out.report["rows_no_supervised"] == 2
    assert out.rejects["reason"].to_list() == ["no supervised token (train-on flag)"] * 2


def test_missing_text_column_is_explained(hf):
    with pytest.raises(DataError, match="no 'text' or 'spans' column. Fix: run the records through `sftdata render-template` first"):
        tokenize(from_dicts([chat("a", "b")]), hf)


def test_loading_errors_are_explained(tmp_path):
    with pytest.raises(TokenizerError, match="not on this machine"):
        load_tokenizer("o200k_base")
    with pytest.raises(TokenizerError, match="--special expects TOKEN=ID pairs"):
        parse_specials("<x>")
    with pytest.raises(TokenizerError, match="already an ordinary token"):
        load_tokenizer(TINY_TIKTOKEN, specials={"<x>": 5})
    with pytest.raises(TokenizerError, match="--eos '<nope>' is not in the vocabulary"):
        load_tokenizer(TINY_HF, eos="<nope>")


def test_output_is_deterministic(hf):
    df = rendered(chat("hi", "hello"), chat("a", "b", "c", "d"))
    assert tokenize(df, hf).records.equals(tokenize(df, hf).records)


words = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=25)
words = words.filter(lambda t: t.strip() == t and t != "")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(words, words), min_size=1, max_size=3), st.integers(4, 60),
       st.sampled_from(["right", "left"]))
def test_labels_are_ids_or_ignored_and_counts_add_up(hf, tk, pairs, max_len, truncation):
    record = {"messages": [m for q, a in pairs for m in ({"role": "user", "content": q},
                                                         {"role": "assistant", "content": a})]}
    df = rendered(record)
    for tok in (hf, tk):
        full = tokenize(df, tok).records.row(0, named=True)
        # the answers come back from the trained tokens (tiktoken ranks are byte-exact)
        if tok is tk:
            assert trained_text(tok, full) == "".join(a + "<|im_end|>" for _, a in pairs)
        out = tokenize(df, tok, max_len=max_len, truncation=truncation)
        assert out.records.height + out.rejects.height == 1
        for row in out.records.iter_rows(named=True):
            ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
            assert ids.size == labels.size == row["n_tokens"] <= max_len
            assert np.all((labels == -100) | (labels == ids)) and row["n_supervised"] > 0
            window = full["input_ids"][:max_len] if truncation == "right" else full["input_ids"][-max_len:]
            assert row["input_ids"] == window


def test_chunked_encoding_gives_the_same_rows(hf, tk, monkeypatch):
    import sftdata.ops.tokenize as op

    df = rendered(chat("hi", "hello"), chat("héllo", "wörld", "again", "yes"), chat("a", "b"))
    for tok in (hf, tk):
        whole = tokenize(df, tok, max_len=12, truncation="left").records
        monkeypatch.setattr(op, "CHUNK_ROWS", 1)
        assert tokenize(df, tok, max_len=12, truncation="left").records.equals(whole)
        monkeypatch.setattr(op, "CHUNK_ROWS", 8192)


@pytest.mark.parametrize("policy", ["all", "last", "flag"])
def test_vectorized_span_choice_equals_the_reference(policy):
    from sftdata.ops.tokenize import chosen_char_spans

    records = [chat("q", "a", "q", "b", "q", "c"), chat("q", "a"), {"messages": [{"role": "user", "content": "x"}]}]
    records[0]["messages"][1]["train"] = True
    records[0]["messages"][3]["weight"] = 0.0
    records[0]["messages"][5]["train"] = False
    records[1]["messages"][1]["train"] = False
    spans = rendered(*records)["spans"]
    reference = [[(s["start"], s["eot_start"]) for s in trained_spans(row, policy)] for row in spans.to_list()]
    assert chosen_char_spans(spans, policy, train_eot=False) == reference
