"""merge: merged logits equal adapter logits; generate: predictions JSONL for `sftdata gold score`."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sfttrain_helpers import make_tiny_model, task_records, train, write_shards

from sfttrain.generate import Decoding, cut, generate_file, read_records


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mg")
    tiny = make_tiny_model(root / "tiny")
    records = task_records(40, seed=4)
    shards = write_shards(root / "shards", {"train": records[:32], "val": records[32:]})
    out = root / "run"
    # enough steps that the adapter is far from its zero init (B starts at 0)
    train(shards, tiny, out, "max_steps=6", "micro_batch=2", "lr=0.05", "eval_every=100")
    return out


def test_merged_logits_match_adapter_logits(trained_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from sfttrain.merge import load_adapted, merge_run

    merged_dir = merge_run(trained_run, tmp_path / "merged", dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert not hasattr(merged.config, "quantization_config")
    adapted, _ = load_adapted(trained_run, for_merge=False)
    adapted.eval()
    ids = torch.tensor([[2, 88, 99, 120, 3, 2, 45, 46, 47]])
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        base = adapted.get_base_model()
        with adapted.disable_adapter():
            without = base(input_ids=ids).logits
    assert (want - without).abs().max() > 1e-3  # the adapter really changes the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    gen = json.loads((merged_dir / "generation_config.json").read_text())
    assert 3 in (gen["eos_token_id"] if isinstance(gen["eos_token_id"], list)
                 else [gen["eos_token_id"]])


def _gold(tmp_path, n=5, parquet=False):
    records = task_records(n, seed=9, prefix="g")
    if parquet:
        path = tmp_path / "gold.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path = tmp_path / "gold.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, records


@pytest.mark.parametrize("parquet", [False, True])
def test_generate_writes_one_prediction_per_record(trained_run, tmp_path, parquet):
    path, records = _gold(tmp_path, parquet=parquet)
    assert read_records(path) == records
    out = tmp_path / "preds.jsonl"
    count = generate_file(trained_run, path, str(out), Decoding(max_new_tokens=6), batch_size=2,
                          device="cpu")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == 5 and [r["id"] for r in rows] == [r["id"] for r in records]
    assert all(set(r) == {"id", "prediction"} and isinstance(r["prediction"], str) for r in rows)
    # greedy decoding is deterministic, sampling with a seed too
    again = tmp_path / "again.jsonl"
    generate_file(trained_run, path, str(again), Decoding(max_new_tokens=6), 3, device="cpu")
    assert again.read_text() == out.read_text()


def test_sampling_is_seeded(trained_run, tmp_path):
    path, _ = _gold(tmp_path, n=3)
    outs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"s{len(outs)}.jsonl"
        generate_file(trained_run, path, str(out), Decoding(8, temperature=1.5, top_k=50,
                      top_p=0.95, repetition_penalty=1.1, seed=seed), 3, device="cpu")
        outs.append(out.read_text())
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_cut_at_stop_strings():
    assert cut("a cat. Then more", [". ", "zzz"]) == "a cat"
    assert cut("  nothing to cut ", ["zzz"]) == "nothing to cut"
    assert cut("x\nUser: y", ["\nUser:", "x"]) == ""
