"""Continued pretraining through sfttrain on the tiny random Llama: the loss of wrapped chunks
through sfttrain's data path equals the loss of the same chunks computed directly with the model
(per document piece by default, per chunk with --cross-doc-attention); every token is trained;
then SFT starts from the merged CPT model (docs/cpt.md)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES
from sfttrain_helpers import task_records, train, write_shards

from sftdata.cli import cli
from sftdata.ops.render_template import render_template
from sftdata.ops.tokenize import tokenize
from sftdata.schema import from_dicts
from sftdata.shards import LABEL_PAD, ShardReader
from sftdata.tokenizers import load_tokenizer
from sfttrain.data import PackedBatches, eval_batches

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]


def corpus(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 40))]
        docs.append({"id": f"doc{i}", "task": "text",
                     "messages": [{"role": "assistant", "content": " ".join(words)}]})
    return docs


def wrap_shards(tmp_path, seq_len: int, *flags: str, n: int = 12, template: str = "chatml"):
    rendered = render_template(from_dicts(corpus(n)), template).records
    tok = tokenize(rendered, load_tokenizer(str(FIXTURES / "tokenizers/tiny-chatml"))).records
    tok = tok.with_columns(split=tok["id"].map_elements(
        lambda i: "val" if i in ("doc3", "doc7") else "train", return_dtype=str))
    src = tmp_path / "tok.parquet"
    tok.write_parquet(src)
    out = tmp_path / ("shards" + "".join(flags))
    result = CliRunner().invoke(cli, ["pack", str(src), "--strategy", "wrap", "--seq-len",
                                      str(seq_len), *flags, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32,
                                                attn_implementation="sdpa").eval()


def direct_loss(model, ids) -> tuple[float, int]:
    """Summed next-token loss of one piece of text on its own, as plain transformers gives it."""
    if len(ids) < 2:
        return 0.0, 0
    x = torch.as_tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        mean = model(input_ids=x, labels=x).loss
    return float(mean) * (len(ids) - 1), len(ids) - 1


def data_path_loss(model, batches) -> tuple[float, int]:
    from sfttrain.model import PackedLoss

    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            s, c = PackedLoss(model, "sdpa")(batch)
            total, count = total + float(s), count + int(c)
    return total, count


@pytest.mark.parametrize("cross_doc", [False, True])
def test_wrapped_loss_equals_the_chunks_computed_directly(model, tmp_path, cross_doc):
    flags = ("--cross-doc-attention",) if cross_doc else ()
    shards = wrap_shards(tmp_path, 24, *flags)
    reader = ShardReader(shards, "train")
    expected, count = 0.0, 0
    for row in reader:
        pieces = [row["input_ids"]] if cross_doc else []
        if not cross_doc:
            start = 0
            for n in row["doc_lens"]:
                pieces.append(row["input_ids"][start : start + n])
                start += n
        for piece in pieces:
            s, c = direct_loss(model, piece.tolist())
            expected, count = expected + s, count + c
    train_batches = PackedBatches(shards, "train", micro_batch=3, pad_id=1, shuffle=False)
    assert train_batches.cross_doc is cross_doc
    got = data_path_loss(model, (train_batches.batch(0, i)
                                 for i in range(train_batches.batches_per_epoch)))
    rest = len(reader) - train_batches.batches_per_epoch * 3  # sequences a last batch left out
    if rest:
        from sfttrain.data import collate

        tail = [reader[i] for i in range(len(reader) - rest, len(reader))]
        s, c = data_path_loss(model, [collate(tail, 1, cross_doc)])
        got = (got[0] + s, got[1] + c)
    assert got[1] == count  # every next token inside a piece (a chunk) is a target
    assert got[0] / got[1] == pytest.approx(expected / count, rel=1e-5)
    # eval_batches (the validation path) reads the same manifest flag
    val = ShardReader(shards, "val")
    val_expected = [direct_loss(model, r["input_ids"].tolist()) for r in val] if cross_doc else None
    val_got = data_path_loss(model, eval_batches(shards, "val", 2, 1, 0, 1))
    if cross_doc:
        assert val_got[1] == sum(c for _, c in val_expected)
        assert val_got[0] == pytest.approx(sum(s for s, _ in val_expected), rel=1e-5)


def test_wrap_trains_every_token_but_no_target_crosses_a_boundary(tmp_path):
    shards = wrap_shards(tmp_path, 16)
    reader = ShardReader(shards, "train")
    batches = PackedBatches(shards, "train", micro_batch=1, pad_id=1, shuffle=False)
    for i in range(len(reader)):
        row, batch = reader[i], batches.batch(0, i)
        assert (row["labels"] != LABEL_PAD).all()  # every token is a label
        # targets: all but the last token of each piece (its next token is in another piece)
        assert batch.supervised == len(row["input_ids"]) - len(row["doc_lens"])
    crossed = PackedBatches(wrap_shards(tmp_path, 16, "--cross-doc-attention"), "train", 1, 1,
                            shuffle=False)
    assert all(crossed.batch(0, i).supervised == len(crossed.reader[i]["input_ids"]) - 1
               for i in range(len(crossed.reader)))


def test_cpt_then_sft_from_the_merged_cpt_model(tiny, tmp_path):
    from sfttrain.merge import merge_run

    # rendered with the model's own template, so the merged model keeps it (merge writes the
    # template a run trained with into the merged tokenizer)
    cpt_shards = wrap_shards(tmp_path, 32, n=40, template=str(tiny))
    cpt = train(cpt_shards, tiny, tmp_path / "cpt", "max_steps=12", "micro_batch=4",
                "eval_every=6", "save_every=100", "lr=0.02")
    assert cpt.val[-1][1] < cpt.val[0][1]  # held-out text loss falls
    merged = merge_run(tmp_path / "cpt", tmp_path / "cpt-merged", "fp32")
    # the merged model carries the tokenizer (and so its chat template) of the base
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    base_tok = AutoTokenizer.from_pretrained(tiny)
    assert tok.get_vocab() == base_tok.get_vocab() and tok.eos_token == base_tok.eos_token
    assert tok.chat_template == base_tok.chat_template
    records = task_records(48, seed=2)
    sft_shards = write_shards(tmp_path / "sft", {"train": records[:40], "val": records[40:]},
                              seq_len=96)
    sft = train(sft_shards, merged, tmp_path / "sft-run", "max_steps=8", "micro_batch=4",
                "eval_every=8", "save_every=100")
    assert sft.steps == 8
    run_info = json.loads((tmp_path / "sft-run" / "run.json").read_text())
    assert str(merged) in json.dumps(run_info["model"])
