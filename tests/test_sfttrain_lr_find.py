"""sfttrain lr-find and lr=auto: the curve's arithmetic (schedule, bias-corrected smoothing,
divergence stop, the suggestion rule), the probe every step is scored on (which sequences; data
noise in the steps' own losses does not reach the curve or the suggestion), the range test on
the tiny random Llama, the command, and lr=auto in `run` (the same run as the suggested lr given
by hand; kept on resume)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sfttrain_helpers import task_records, train, write_shards

from sfttrain import model as M
from sfttrain.cli import cli
from sfttrain.config import ConfigError, build_config
from sfttrain.data import PackedBatches
from sfttrain.lr_find import (
    RULE,
    Tracker,
    choose_probe,
    find,
    make_probe,
    planned_steps,
    range_test,
    schedule,
    smooth,
    snapshot,
)
from sfttrain.train import _null_context

FAST = ["device=cpu", "quant=none", "lora_r=8", "lora_alpha=16", "micro_batch=4",
        "lr_find_steps=30", "lr_find_min=1e-5", "lr_find_max=10"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(160, seed=3)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:140], "val": records[140:]}, seq_len=96)


def test_schedule_is_geometric_from_min_to_max():
    lrs = schedule(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in zip(lrs, lrs[1:], strict=False))


def test_smoothing_is_bias_corrected():
    # a constant loss stays that constant from the first step (no pull towards the zero start)
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)
    # and follows a change with the EMA's lag
    values = smooth([1.0] * 10 + [3.0] * 10, beta=0.9)
    assert values[9] == pytest.approx(1.0) and 1.0 < values[10] < values[-1] < 3.0


def test_tracker_stops_on_divergence_and_suggests_a_decade_below_the_minimum():
    lrs = schedule(1e-5, 1.0, 50)
    # a valley: falls until lr 1e-2, then blows up
    losses = [3.0 - math.log10(lr / 1e-5) * 0.5 if lr <= 1e-2 else 1.5 * (lr / 1e-2) ** 2
              for lr in lrs]
    tracker = Tracker(len(lrs))
    stop = next(i for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True))
                if tracker.add(lr, loss))
    result = tracker.finish()
    assert stop < len(lrs) - 1 and "diverged" in result.stopped
    assert result.smoothed[-1] > 4 * min(result.smoothed)
    assert result.suggestion == pytest.approx(result.min_lr / 10) and result.rule == RULE
    # the raw minimum is the grid point below 1e-2; the smoothed one is not a decade off
    assert 5e-3 <= result.min_lr < 1e-1
    assert result.steepest_lr <= result.min_lr


def test_tracker_without_a_fall_suggests_nothing_and_says_why():
    tracker = Tracker(10)
    for lr in schedule(1e-5, 1e-1, 10):
        tracker.add(lr, 2.0 + lr)  # only rises
    result = tracker.finish()
    assert result.suggestion is None
    assert any("never fell" in note for note in result.notes)


def test_tracker_stops_on_nan():
    tracker = Tracker(10)
    assert not tracker.add(1e-4, 2.0)
    assert tracker.add(1e-3, float("nan"))
    assert "nan" in tracker.finish().stopped


def _valley(lr: float) -> float:
    """A clean range-test curve: flat, falling by 0.1 (SmolLM2's probe fell by 0.09, see
    docs/sfttrain.md) from 1e-4 to its lowest at 1e-2, then blowing up."""
    x = math.log10(lr)
    return 2.0 - 0.05 * min(max(x + 4, 0), 2) + (3.0 * (x + 2) ** 2 if x > -2 else 0.0)


def test_noise_in_the_steps_own_loss_does_not_move_the_suggestion():
    # Each step's own training loss = the curve + +-0.5 from the records it drew (as SmolLM2's
    # at an effective batch of 2); the probe, the same sequences every step, sees only the curve.
    lrs = schedule(1e-6, 1.0, 60)
    suggestions, by_train_loss = set(), set()
    for seed in range(5):
        noise = np.random.default_rng(seed).uniform(-0.5, 0.5, len(lrs))
        scored, old = Tracker(len(lrs)), Tracker(len(lrs), beta=0.9)
        for lr, e in zip(lrs, noise, strict=True):
            stop = scored.add(lr, _valley(lr), train_loss=_valley(lr) + e)
            old.add(lr, _valley(lr) + e)  # the old scoring: the step's own loss
            if stop:
                break
        result = scored.finish()
        assert result.train_losses != result.losses  # the noise is there, beside the curve
        suggestions.add(result.suggestion)
        by_train_loss.add(old.finish().suggestion)
    assert len(suggestions) == 1  # the same lr whatever the records did
    (suggestion,) = suggestions
    assert 5e-4 <= suggestion <= 2e-3  # a decade below the curve's lowest point, 1e-2
    # the steps' own losses scored instead (with the longer EMA they needed): the suggestion
    # wanders with the records, from none at all to three decades below the curve's
    assert len(by_train_loss) > 2 and min(x or 1 for x in by_train_loss) < suggestion / 100


def test_the_probe_is_val_first_else_the_train_sequences_the_test_reaches_last():
    order = [5, 2, 7, 0, 1, 6, 3, 4]
    assert choose_probe(12, order, trained=8, size=4) == ("val", [0, 1, 2, 3], None)
    assert choose_probe(3, order, trained=8, size=4) == ("val", [0, 1, 2], None)
    # no val: the end of the data order, untouched by a test of 4 sequences
    assert choose_probe(0, order, trained=4, size=4) == ("train", [1, 6, 3, 4], None)
    split, picked, note = choose_probe(0, order, trained=6, size=4)
    assert picked == [1, 6, 3, 4] and "trains on 2 of them" in note
    with pytest.raises(ConfigError, match="lr_find_probe"):
        build_config(None, ["lr_find_probe=0"])


def test_the_curve_is_the_probes_loss_not_the_steps_own(tiny, shards):
    # lrs so small that the weights do not move: the steps' own losses still vary with their
    # records (and with the data order), the probe's loss is one number, whatever the order
    config = build_config(None, [*FAST, "micro_batch=1", "lr_find_min=1e-12",
                                 "lr_find_max=1e-11", "lr_find_steps=20"])
    model = M.prepare_for_training(M.load_base(M.resolve_model_dir(tiny), "none", torch.float32,
                                               torch.device("cpu"), "sdpa"), config)
    loss_fn = M.PackedLoss(model, "sdpa", config.loss_chunk)
    curves = []
    for seed in (0, 1):
        order = PackedBatches(shards, "train", 1, 1, seed)  # another data order each time
        probe = make_probe(shards, order, config, 1)
        assert probe.description.startswith("the first 8 val sequence(s)")
        with snapshot(model):
            curves.append(range_test(model, loss_fn, order, probe, config, torch.device("cpu"),
                                     _null_context()))
    for result in curves:
        assert max(result.train_losses) - min(result.train_losses) > 0.01
        assert max(result.losses) - min(result.losses) < 1e-4
    assert curves[0].train_losses != curves[1].train_losses
    assert curves[0].losses == pytest.approx(curves[1].losses, abs=1e-5)


def test_planned_steps_shrink_to_an_epoch_but_not_below_the_minimum():
    config = build_config(None, ["lr_find_steps=100"])
    assert planned_steps(config, 500) == (100, None)
    assert planned_steps(config, 60) == (60, None)
    steps, note = planned_steps(config, 5)
    assert steps == 20 and "more than once" in note


def test_range_test_on_the_tiny_model_is_the_same_every_time(tiny, shards):
    # (the random tiny model's loss stays near uniform at any lr: it never diverges by 4x;
    # divergence is tested on a synthetic curve above and shown on SmolLM2 in docs/sfttrain.md)
    config = build_config(None, FAST)
    first = find(shards, tiny, config, say=lambda *_: None)
    assert len(first.losses) == first.planned == 20  # one epoch is shorter: MIN_STEPS
    assert any("more than once" in note for note in first.notes)
    assert first.lrs[0] == pytest.approx(1e-5) and first.lrs[-1] == pytest.approx(10)
    assert min(first.smoothed) < first.smoothed[0] - 0.05  # the loss fell somewhere
    assert first.suggestion == pytest.approx(first.min_lr / 10)
    # a fresh adapter each time (nothing of the first test is kept): the same curve again
    second = find(shards, tiny, config, say=lambda *_: None)
    assert second.losses == first.losses and second.suggestion == first.suggestion


def test_command_prints_the_lr_writes_the_plot_and_nothing_else(tiny, shards, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in shards.rglob("*"))
    runner = CliRunner()
    args = ["lr-find", str(shards), "--model", str(tiny), *FAST]
    result = runner.invoke(cli, [*args, "--plot", "lr.png"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("lr=") and float(result.stdout.strip()[3:]) > 0
    assert "suggested lr" in result.stderr and RULE in result.stderr
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"]
    assert sorted(p.name for p in shards.rglob("*")) == before
    as_json = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert as_json["suggestion"] == pytest.approx(float(result.stdout.strip()[3:]), rel=1e-2)
    assert len(as_json["lrs"]) == len(as_json["losses"]) == len(as_json["smoothed"]) == len(
        as_json["train_losses"])
    assert as_json["probe"].startswith("the first 8 val sequence(s)")
    bad = runner.invoke(cli, [*args, "--plot", "lr.jpg"])
    assert bad.exit_code == 2 and "PNG" in bad.output


def test_lr_auto_runs_as_the_suggested_lr_given_by_hand_and_keeps_it_on_resume(tiny, shards,
                                                                               tmp_path):
    common = [*FAST, "max_steps=6", "eval_every=0", "save_every=3", "lora_dropout=0.1"]
    lines: list[str] = []
    auto = train(shards, tiny, tmp_path / "auto", *common, "lr=auto", say=lines.append)
    info = json.loads((tmp_path / "auto" / "run.json").read_text())
    lr = info["config"]["lr"]
    assert info["lr_find"]["suggestion"] == lr and info["lr_find"]["rule"] == RULE
    assert "val sequence(s)" in info["lr_find"]["probe"]
    assert any(f"suggested lr {lr:.3g}" in line for line in lines)
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["lr"] == lr
    # the range test left no trace: the same adapter init, data and dropout draws as lr=<lr>
    by_hand = train(shards, tiny, tmp_path / "hand", *common, f"lr={lr!r}")
    assert auto.losses == pytest.approx(by_hand.losses, rel=1e-6)
    # resumed with lr=auto: the recorded lr, no second range test
    train(shards, tiny, tmp_path / "resume", *common, "lr=auto", "stop_at_step=3")
    lines.clear()
    resumed = train(shards, tiny, tmp_path / "resume", *common, "lr=auto", resume=True,
                    say=lines.append)
    assert any("as the run being resumed found it" in line for line in lines)
    assert not any("lr-find" in line for line in lines)
    assert resumed.losses == pytest.approx(auto.losses[3:], rel=1e-6)
