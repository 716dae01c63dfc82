"""quant=auto and the quantization damage check, on the tiny random Llama (CPU)."""

from __future__ import annotations

import json

import pytest
from sfttrain_helpers import task_records, train, write_shards

from sfttrain.config import build_config
from sfttrain.merge import read_run
from sfttrain.quant import QuantCheck, damage_warning
from sfttrain.train import read_metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(60, seed=4)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:48], "val": records[48:]}, seq_len=96)


def _val_sequences(shards) -> int:
    return json.loads((shards / "manifest.json").read_text())["splits"]["val"]["sequences"]


def test_check_measures_both_losses_on_the_val_sample(tiny, shards, tmp_path):
    said: list[str] = []
    n = _val_sequences(shards)
    nf4 = train(shards, tiny, tmp_path / "nf4", "max_steps=1", "eval_every=1",
                f"quant_check_sequences={n}", say=said.append)
    check = nf4.summary["quant_check"]
    assert check["sequences"] == n and check["split"] == "val" and check["skipped"] is None
    # with the whole val split as the sample, the quantized loss is the step-0 validation loss
    assert check["loss_nf4"] == pytest.approx(nf4.val[0][1], rel=1e-5)
    # and the unquantized loss is what an unquantized run sees at step 0
    none = train(shards, tiny, tmp_path / "none", "max_steps=1", "eval_every=1", "quant=none")
    assert "quant_check" not in none.summary  # nothing quantized, nothing to check
    assert check["loss_unquantized"] == pytest.approx(none.val[0][1], rel=1e-5)
    assert check["rise"] == pytest.approx(check["loss_nf4"] / check["loss_unquantized"] - 1,
                                          abs=1e-5)
    line = next(s for s in said if s.startswith("sfttrain: quantization check"))
    assert f"on {n} val sequence(s)" in line and "after NF4" in line and "%)" in line


def test_check_warns_with_the_fix_beyond_the_threshold():
    check = QuantCheck(8, 1000, 3.0, 6.4, "float32")
    config = build_config(None, ["quant_damage_warn=0.1"])
    message = damage_warning(check, config, 2**30)
    assert "raises the base model's loss by 113% (3.000 -> 6.400)" in message
    assert "quant=none" in message and "(plan: 1.00 GiB unquantized)" in message
    assert damage_warning(QuantCheck(8, 1000, 3.0, 3.2, "float32"), config, None) is None
    unmeasured = QuantCheck(8, 1000, None, 6.4, "float32", skipped="too big")
    assert damage_warning(unmeasured, config, None) is None
    assert "unquantized not measured: too big" in unmeasured.line()


def test_check_off_and_on_resume(tiny, shards, tmp_path):
    off = train(shards, tiny, tmp_path / "off", "max_steps=1", "eval_every=1", "quant_check=false")
    assert "quant_check" not in off.summary
    out = tmp_path / "resumed"
    train(shards, tiny, out, "max_steps=2", "eval_every=1", "save_every=1", "stop_at_step=1")
    said: list[str] = []
    resumed = train(shards, tiny, out, "max_steps=2", "eval_every=1", "save_every=1",
                    resume=True, say=said.append)
    assert "quant_check" not in resumed.summary  # measured when the run started, not again
    assert not any(s.startswith("sfttrain: quantization check") for s in said)


def test_auto_picks_by_memory_budget_and_records_the_choice(tiny, shards, tmp_path):
    said: list[str] = []
    roomy = train(shards, tiny, tmp_path / "roomy", "quant=auto", "max_steps=1", "eval_every=1",
                  say=said.append)
    assert read_run(roomy.out_dir)["config"]["quant"] == "none"
    assert any("quant=auto: the unquantized base fits" in s for s in said)
    said.clear()
    tight = train(shards, tiny, tmp_path / "tight", "quant=auto", "mem_budget=1MiB",
                  "max_steps=1", "eval_every=1", say=said.append)
    assert read_run(tight.out_dir)["config"]["quant"] == "nf4"
    assert any("does not fit" in s and "mem_budget=1MiB" in s for s in said)
    assert "quant_check" in tight.summary


def test_auto_resume_keeps_the_quantization_the_run_started_with(tiny, shards, tmp_path):
    out = tmp_path / "r"
    train(shards, tiny, out, "quant=auto", "mem_budget=1MiB", "max_steps=2", "save_every=1",
          "eval_every=1", "stop_at_step=1")
    said: list[str] = []
    train(shards, tiny, out, "quant=auto", "max_steps=2", "save_every=1", "eval_every=1",
          resume=True, say=said.append)
    assert read_run(out)["config"]["quant"] == "nf4"
    assert "sfttrain: quant=nf4, as the run being resumed" in said
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2]


def test_bad_mem_budget_is_a_config_problem():
    from sfttrain.config import ConfigError

    with pytest.raises(ConfigError, match="mem_budget: 'lots' is not a size such as 24GiB"):
        build_config(None, ["mem_budget=lots"])
