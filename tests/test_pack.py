"""Library tests of sftdata.ops.pack: bin packing, truncation policy, splits, identities.

The builders here (tiny_tokenizer, template_json, tokenized) are also used by the other pack and
shard test modules.
"""

from __future__ import annotations

import bisect
import collections
import json
from functools import cache

import numpy as np
import polars as pl
import pytest
from conftest import FIXTURES, ROOT

from sftdata.errors import DataError, UsageProblem
from sftdata.ops.pack import pack, pack_lengths
from sftdata.shards import LABEL_PAD, text_hash, tokenizer_fingerprint

TINY = FIXTURES / "tokenizers" / "tiny-chatml"
CHATML = "{% for message in messages %}...{% endfor %}"  # stands in for a template text


@cache
def tiny_tokenizer() -> dict:
    """The tokenizer identity `sftdata tokenize` writes, computed from the tiny fixture."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    vocab = tok.get_vocab(with_added_tokens=True)
    return {
        "backend": "hf",
        "name": "tiny-chatml",
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "vocab_hash": tokenizer_fingerprint(vocab),
        "eos_id": vocab["<|im_end|>"],
        "pad_id": vocab["<|pad|>"],
    }


def template_json(spec: str = "no-such-template", text: str = CHATML) -> str:
    return json.dumps({"spec": spec, "name": "chatml", "hash": text_hash(text)})


def tokenized(
    lengths: list[int],
    prompt_lens: list[int] | None = None,
    split: list[str | None] | None = None,
    seed: int = 0,
    tokenizer: dict | None = None,
) -> pl.DataFrame:
    """Tokenized records: random ids, labels -100 on a prompt prefix, trained after it."""
    rng = np.random.default_rng(seed)
    tok = tokenizer or tiny_tokenizer()
    prompt_lens = prompt_lens if prompt_lens is not None else [n // 2 for n in lengths]
    ids, labels = [], []
    for n, p in zip(lengths, prompt_lens, strict=True):
        row = rng.integers(0, tok["vocab_size"], n).astype(np.int32)
        lab = row.copy()
        lab[:p] = LABEL_PAD
        ids.append(row.tolist())
        labels.append(lab.tolist())
    frame = pl.DataFrame(
        {
            "id": [f"r{i:05d}" for i in range(len(lengths))],
            "input_ids": ids,
            "labels": labels,
            "n_tokens": lengths,
            "n_supervised": [sum(v != LABEL_PAD for v in lab) for lab in labels],
            "tokenizer": [json.dumps(tok)] * len(lengths),
            "template": [template_json()] * len(lengths),
        },
        schema_overrides={"input_ids": pl.List(pl.Int32), "labels": pl.List(pl.Int32)},
    )
    if split is not None:
        frame = frame.with_columns(pl.Series("split", split, dtype=pl.String))
    return frame


def unpack(result, split: str = "train") -> dict[str, tuple[list[int], list[int]]]:
    """record id -> (input_ids, labels) as found in the packed sequences."""
    packed = result.splits[split]
    out = {}
    for batch in packed.batches(3):
        bounds = np.concatenate([[0], np.cumsum(batch["doc_lens"])])
        for d, rid in enumerate(batch["record_ids"].to_pylist()):
            assert rid not in out, f"{rid} packed twice"
            sl = slice(bounds[d], bounds[d + 1])
            out[rid] = (batch["input_ids"][sl].tolist(), batch["labels"][sl].tolist())
    return out


# --------------------------------------------------------------------------- bin packing


def reference_bfd(lengths, seq_len):
    """Best fit decreasing one document at a time (TRL's algorithm, FIFO among equal rooms)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    waiting, rooms, bins, n = {}, [], np.empty(len(lengths), dtype=np.int64), 0
    for i in order:
        length = int(lengths[i])
        j = bisect.bisect_left(rooms, length)
        if j == len(rooms):
            b, room, n = n, seq_len, n + 1
        else:
            room = rooms[j]
            b = waiting[room].popleft()
            if not waiting[room]:
                del rooms[j]
        bins[i], room = b, room - length
        if room:
            queue = waiting.setdefault(room, collections.deque())
            if not queue:
                bisect.insort(rooms, room)
            queue.append(b)
    return bins


def reference_ffd(lengths, seq_len):
    order = np.argsort(-np.asarray(lengths), kind="stable")
    rooms, bins = [], np.empty(len(lengths), dtype=np.int64)
    for i in order:
        for b, room in enumerate(rooms):
            if room >= lengths[i]:
                rooms[b] -= lengths[i]
                bins[i] = b
                break
        else:
            rooms.append(seq_len - lengths[i])
            bins[i] = len(rooms) - 1
    return bins


@pytest.mark.parametrize("seed", range(6))
def test_bulk_placement_equals_one_document_at_a_time(seed):
    rng = np.random.default_rng(seed)
    seq_len = int(rng.integers(8, 200))
    top = seq_len if seed % 2 else max(2, seq_len // 4)  # long and short documents
    lengths = rng.integers(1, top + 1, 400)
    assert np.array_equal(pack_lengths(lengths, seq_len, "bfd"), reference_bfd(lengths, seq_len))
    assert np.array_equal(pack_lengths(lengths, seq_len, "ffd"), reference_ffd(lengths, seq_len))


def test_alpaca_like_lengths_pack_at_least_99_percent():
    lengths = np.clip(np.random.default_rng(1).lognormal(5.3, 0.8, 20_000).astype(int), 1, 2048)
    for strategy in ("bfd", "ffd"):
        bins = pack_lengths(lengths, 2048, strategy)
        efficiency = lengths.sum() / ((bins.max() + 1) * 2048)
        assert efficiency >= 0.99, (strategy, efficiency)
    nf = pack_lengths(lengths, 2048, "next-fit")
    assert bins.max() < nf.max()


def test_none_is_one_document_per_sequence_and_lengths_are_checked():
    assert pack_lengths([5, 3, 9], 10, "none").tolist() == [0, 1, 2]
    assert pack_lengths([], 10).size == 0
    with pytest.raises(ValueError, match="1..10"):
        pack_lengths([11], 10)
    with pytest.raises(ValueError, match="1..10"):
        pack_lengths([0], 10)


# --------------------------------------------------------------------------- the op


def test_pack_keeps_every_token_and_label_and_reports():
    frame = tokenized([30, 12, 50, 7, 64, 1, 20], prompt_lens=[10, 2, 25, 3, 0, 0, 19])
    result = pack(frame, seq_len=64)
    found = unpack(result)
    assert sorted(found) == frame["id"].to_list()
    for row in frame.iter_rows(named=True):
        assert found[row["id"]] == (row["input_ids"], row["labels"])
    packed = result.splits["train"]
    assert packed.tokens == sum(frame["n_tokens"])
    assert packed.supervised_tokens == sum(frame["n_supervised"])
    assert packed.sequences == 3  # 184 tokens in bins of 64
    assert result.report.rows_in == result.report.rows_packed == 7
    assert result.dropped.height == 0


def test_sequences_hold_documents_in_input_order():
    result = pack(tokenized([10, 40, 20, 30]), seq_len=50)
    ids = [b["record_ids"].to_pylist() for b in result.splits["train"].batches(1)]
    # decreasing: 40 opens a sequence, 30 opens one, 20 best-fits beside 30, 10 beside 40
    assert ids == [["r00000", "r00001"], ["r00002", "r00003"]]


def test_no_pack_writes_one_document_per_sequence():
    result = pack(tokenized([10, 40, 20]), seq_len=50, strategy="none")
    packed = result.splits["train"]
    assert packed.sequences == 3
    assert packed.efficiency == pytest.approx(70 / 150)


@pytest.mark.parametrize(
    "policy, kept",
    [("right", slice(0, 16)), ("left", slice(4, 20))],
)
def test_truncation_right_and_left_keep_a_window_and_count_lost_supervision(policy, kept):
    frame = tokenized([20, 8], prompt_lens=[6, 2])
    result = pack(frame, seq_len=16, truncation=policy)
    found = unpack(result)
    row = frame.row(0, named=True)
    assert found["r00000"] == (row["input_ids"][kept], row["labels"][kept])
    r = result.report
    assert (r.rows_truncated, r.rows_packed, r.rows_dropped) == (1, 2, 0)
    lost = sum(lab != LABEL_PAD for lab in row["labels"]) - sum(
        lab != LABEL_PAD for lab in row["labels"][kept]
    )
    assert r.supervised_tokens_lost == lost == (4 if policy == "right" else 0)


def test_right_truncation_that_leaves_no_supervised_token_drops_the_row_with_a_reason():
    frame = tokenized([30, 8], prompt_lens=[20, 2])
    result = pack(frame, seq_len=16, truncation="right")
    assert result.report.dropped == {"no_supervised_after_truncation": 1}
    assert result.dropped["id"].to_list() == ["r00000"]
    assert result.dropped["reason"].to_list() == [
        "no supervised token left after --truncation right to 16 tokens (10 lost)"
    ]
    assert list(unpack(result)) == ["r00001"]


def test_drop_policy_and_rows_without_supervision():
    frame = tokenized([30, 8, 5], prompt_lens=[2, 2, 5])
    result = pack(frame, seq_len=16, truncation="drop")
    assert result.report.dropped == {"too_long": 1, "no_supervised": 1}
    assert dict(zip(result.dropped["id"], result.dropped["reason"], strict=True)) == {
        "r00000": "30 tokens, longer than --seq-len 16 (--truncation drop)",
        "r00002": "no supervised token (every label is -100)",
    }
    assert result.report.rows_in == result.report.rows_packed + result.report.rows_dropped


def test_empty_records_are_dropped_with_a_reason():
    frame = tokenized([0, 5, 0], prompt_lens=[0, 1, 0])
    result = pack(frame, seq_len=16)
    assert result.report.dropped == {"empty": 2}
    assert result.dropped["reason"].to_list() == ["no tokens", "no tokens"]
    assert list(unpack(result)) == ["r00001"]


def test_fail_policy_names_the_row_and_the_fix():
    with pytest.raises(DataError) as err:
        pack(tokenized([8, 30]), seq_len=16, truncation="fail", source="t.jsonl")
    assert str(err.value) == (
        "t.jsonl, row 2: field 'input_ids': record 'r00001' has 30 tokens, longer than "
        "--seq-len 16 (1 rows are). Fix: raise --seq-len, tokenize with --max-len, or pick "
        "--truncation right|left|drop"
    )


def test_one_shard_set_per_split_in_canonical_order():
    frame = tokenized([5, 6, 7, 8, 9], split=["val", "train", "zeta", "train", "val"])
    result = pack(frame, seq_len=32)
    assert list(result.splits) == ["train", "val", "zeta"]
    assert sorted(unpack(result, "val")) == ["r00000", "r00004"]
    all_null = tokenized([5, 6], split=[None, None])
    assert list(pack(all_null, seq_len=32).splits) == ["train"]
    with pytest.raises(DataError, match="row 2: field 'split': split is null"):
        pack(tokenized([5, 6], split=["val", None]), seq_len=32)
    with pytest.raises(DataError, match="row 2: field 'split': split '../x' cannot name a shard"):
        pack(tokenized([5, 6], split=["val", "../x"]), seq_len=32)


def test_rows_that_disagree_on_the_tokenizer_are_refused():
    frame = tokenized([5, 6, 7])
    other = {**tiny_tokenizer(), "vocab_hash": "f" * 64}
    frame = frame.with_columns(
        pl.when(pl.col("id") == "r00002").then(pl.lit(json.dumps(other)))
        .otherwise(pl.col("tokenizer")).alias("tokenizer")
    )
    with pytest.raises(DataError) as err:
        pack(frame, seq_len=32)
    assert "row 3: field 'tokenizer': rows disagree on the tokenizer" in str(err.value)
    assert "do not mix tokenizers" in str(err.value)


def test_same_identity_with_other_key_order_is_accepted():
    frame = tokenized([5, 6])
    reordered = json.dumps(dict(reversed(list(tiny_tokenizer().items()))))
    frame = frame.with_columns(
        pl.when(pl.col("id") == "r00001").then(pl.lit(reordered))
        .otherwise(pl.col("tokenizer")).alias("tokenizer")
    )
    assert pack(frame, seq_len=32).report.rows_packed == 2


def test_shifted_or_foreign_labels_and_bad_columns_are_refused():
    frame = tokenized([6, 6], prompt_lens=[0, 0])
    shifted = frame.with_columns(pl.col("input_ids").list.shift(-1).list.eval(
        pl.element().fill_null(LABEL_PAD)).alias("labels"))
    with pytest.raises(DataError, match="row 1: field 'labels': label .* is neither -100"):
        pack(shifted, seq_len=32)
    short = frame.with_columns(pl.col("labels").list.head(5))
    with pytest.raises(DataError, match="row 1: field 'labels': labels has 5 values for 6 tokens"):
        pack(short, seq_len=32)
    negative = frame.with_columns(pl.col("input_ids").list.eval(pl.element() - 1000))
    with pytest.raises(DataError, match="row 1: field 'input_ids': token id -.* is negative"):
        pack(negative, seq_len=32)
    with pytest.raises(DataError, match="missing column.s. labels"):
        pack(frame.drop("labels"), seq_len=32)
    with pytest.raises(DataError, match="no records to pack"):
        pack(frame.head(0), seq_len=32)
    with pytest.raises(UsageProblem, match="--seq-len must be at least 1"):
        pack(frame, seq_len=0)


def test_manifest_fields_and_template_warning():
    result = pack(tokenized([5, 6]), seq_len=32)
    manifest = result.manifest()
    tok = tiny_tokenizer()
    assert manifest["tokenizer"] == {k: tok[k] for k in ("backend", "name", "vocab_size", "vocab_hash")}
    assert (manifest["pad_id"], manifest["eos_id"], manifest["seq_len"]) == (
        tok["pad_id"], tok["eos_id"], 32
    )
    assert manifest["template"]["hash"] == text_hash(CHATML)
    assert manifest["template"]["text"] is None  # spec does not resolve: name + hash only
    assert any("could not be resolved" in w for w in result.warnings)
    assert manifest["packing"]["rows_in"] == 2


def test_template_text_comes_back_from_a_built_in_spec_when_the_hash_matches():
    text = (ROOT / "sftdata/templates/chatml.jinja").read_text()
    frame = tokenized([5]).with_columns(pl.lit(template_json("chatml", text)).alias("template"))
    result = pack(frame, seq_len=32)
    assert result.template["text"] == text and not result.warnings
    changed = tokenized([5]).with_columns(pl.lit(template_json("chatml", "other")).alias("template"))
    result = pack(changed, seq_len=32)
    assert result.template["text"] is None
    assert any("does not match the hash" in w for w in result.warnings)


def test_missing_pad_falls_back_to_eos_with_a_warning():
    tok = {**tiny_tokenizer(), "pad_id": None}
    result = pack(tokenized([5], tokenizer=tok), seq_len=32)
    assert result.pad_id == tok["eos_id"]
    assert any("no pad token" in w for w in result.warnings)


def test_same_input_gives_the_same_plan_and_fingerprint():
    a = pack(tokenized(list(range(1, 60)), seed=3), seq_len=64)
    b = pack(tokenized(list(range(1, 60)), seed=3), seq_len=64)
    c = pack(tokenized(list(range(1, 60)), seed=4), seq_len=64)
    assert a.input_fingerprint == b.input_fingerprint != c.input_fingerprint
    assert np.array_equal(a.splits["train"].doc_starts, b.splits["train"].doc_starts)


def test_real_alpaca_lengths_pack_densely(realdata):
    from tokenizers import Tokenizer

    rows = json.loads((realdata / "datasets/alpaca_format/llamafactory_alpaca_en_demo.json").read_text())
    tok = Tokenizer.from_file(str(realdata / "tokenizers/gpt2/tokenizer.json"))
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    lengths = np.array([len(e.ids) + 8 for e in tok.encode_batch(texts)])  # + template markers
    lengths = np.minimum(lengths, 2048)
    bfd = pack_lengths(lengths, 2048, "bfd").max() + 1
    nf = pack_lengths(lengths, 2048, "next-fit").max() + 1
    lower_bound = -(-lengths.sum() // 2048)
    assert bfd <= lower_bound + 1  # within one sequence of the optimum
    assert bfd < nf
