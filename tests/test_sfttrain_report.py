"""sfttrain report: every verdict on synthetic metric files (with its evidence steps), broken
metrics as data errors naming file and line, the CLI, real short runs of the tiny model driven
into each regime, and report_to (TensorBoard event files; no tracker imported unless asked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sfttrain_helpers import ROOT, task_records, train, write_shards

from sfttrain import report as R
from sfttrain.cli import cli
from sfttrain.report import diagnose

# ------------------------------------------------------------------------------ synthetic runs


def curve(steps=200, start=3.0, floor=1.5, tau=30.0, noise=0.03, supervised=4000, seed=0,
          val_every=20, val_gap=0.1, val_fn=None, lr=2e-4):
    """metrics.jsonl rows of a run whose train loss decays from `start` to `floor` with time
    constant `tau` and relative noise `noise`; validation `val_gap` above the noiseless curve
    (or val_fn(step, level)) every `val_every` steps and at step 0."""
    rng = np.random.default_rng(seed)
    rows = [{"step": 0, "val_loss": start + val_gap}] if val_every else []
    for t in range(1, steps + 1):
        level = floor + (start - floor) * math.exp(-t / tau)
        rows.append({"step": t, "loss": level * (1 + noise * rng.standard_normal()), "lr": lr,
                     "grad_norm": 1 + 0.1 * rng.standard_normal(), "tokens": 2 * supervised,
                     "supervised": supervised, "tokens_per_s": 1000.0})
        if val_every and (t % val_every == 0 or t == steps):
            rows.append({"step": t, "val_loss": val_fn(t, level) if val_fn else level + val_gap})
    return rows


def info(val_tokens=200_000, val_sequences=400, **config):
    return {"config": {"lr": 2e-4, "grad_accum": 1, "micro_batch": 4, "epochs": 1,
                       "max_steps": 0, "keep_best": True, "eval_batches": 0, **config},
            "splits": {"train": {"sequences": 4000, "supervised_tokens": 2_000_000},
                       "val": {"sequences": val_sequences, "supervised_tokens": val_tokens}}}


def kinds(report):
    return [f.kind for f in report.findings]


def test_healthy():
    report = diagnose(curve(), info())
    assert kinds(report) == ["healthy"]
    assert "1.5" in report.findings[0].sentence and report.findings[0].steps == [200]
    assert report.line().startswith("sfttrain: verdict: healthy")


def test_underfitting_loss_still_falling_with_validation():
    report = diagnose(curve(tau=300), info(epochs=1))
    assert kinds(report) == ["underfitting"]
    found = report.findings[0]
    assert found.steps == [151, 200]  # the last quarter of 200 logged steps
    assert found.evidence["tail_drop_rel"] > R.UNDERFIT_DROP
    assert "validation fell with it" in found.sentence and "epochs=2" in found.change


def test_converged_run_is_not_underfitting():
    # the same slow decay, but over 2000 steps: the last quarter is flat
    assert "underfitting" not in kinds(diagnose(curve(steps=2000, tau=300, val_every=200),
                                                info()))


def _overfit(t, level):
    return 2.0 + (80 - t) * 0.01 if t <= 80 else 2.0 + 0.004 * (t - 80)


def test_overfitting_names_the_turn_and_the_best_checkpoint():
    report = diagnose(curve(val_fn=_overfit), info())
    assert kinds(report) == ["overfitting"]
    found = report.findings[0]
    assert found.steps == [80, 100, 200]  # best, first evaluation after it, last
    assert found.evidence["best_step"] == 80 and found.evidence["evaluations_after_best"] == 6
    assert "step 80" in found.change and "adapter/ already holds it" in found.change
    assert f"early_stopping_patience={R.OVERFIT_EVALS}" in found.change


def test_validation_rising_for_fewer_evaluations_is_not_yet_overfitting():
    # lowest at 160: only 2 evaluations (180, 200) after it
    rows = curve(val_fn=lambda t, level: 2.0 + 0.004 * abs(t - 160))
    assert "overfitting" not in kinds(diagnose(rows, info()))


# Train losses of a real 20-step SmolLM2 run (micro_batch 2, ~380 supervised tokens a step):
# steps 7-9 drew easy records at every lr tried, so the lowest rolling median is an extreme.
SMOLLM2_20_STEPS = [1.97, 2.5, 2.22, 1.58, 1.85, 1.67, 1.41, 1.14, 1.54, 1.58, 2.46, 1.71, 1.89,
                    2.0, 1.82, 1.59, 2.0, 2.39, 2.64, 1.73]


def test_an_easy_stretch_of_data_mid_run_is_not_divergence():
    """The end is +70% above the lowest rolling median but only 8% above the start, with no
    upward trend after it: noise, not a too-high lr (six such runs were all flagged before)."""
    rows = [{"step": i + 1, "loss": v, "lr": 1e-3, "grad_norm": 1.0, "supervised": 380}
            for i, v in enumerate(SMOLLM2_20_STEPS)]
    report = diagnose(rows, info(lr=1e-3))
    assert "lr_too_high" not in kinds(report)
    assert kinds(report)[0] == "noisy_loss"


def test_a_loss_that_rose_is_not_flat():
    """A run whose loss ended 3x above its start is never 'learning rate too low'."""
    rows = curve(steps=60, val_every=0)
    for r in rows:
        r["loss"] = 3.0 * (1 + 2 * (r["step"] > 5)) * (1 + 0.02 * math.sin(r["step"]))
    assert "lr_too_low" not in kinds(diagnose(rows, info(lr=1.0)))


# The demo's run (`make demo`, 30 steps): a 4-label task learned by heart, loss 9.5 -> 0.003.
DEMO_LOSS_GRAD = [
    (9.473, 23.789), (4.9922, 9.893), (1.7041, 6.549), (0.8486, 6.957), (0.1197, 1.222),
    (0.309, 4.176), (0.4945, 2.467), (0.278, 2.353), (0.3274, 6.104), (0.3339, 3.638),
    (0.0382, 0.636), (0.0067, 0.091), (0.1839, 3.185), (0.0335, 1.026), (0.0062, 0.083),
    (0.0073, 0.136), (0.0039, 0.06), (0.0948, 2.347), (0.0028, 0.047), (0.0036, 0.085),
    (0.0357, 1.098), (0.0257, 0.855), (0.0229, 0.634), (0.0048, 0.123), (0.0011, 0.01),
    (0.0014, 0.014), (0.0109, 0.357), (0.0012, 0.012), (0.0012, 0.01), (0.0026, 0.054)]


def test_a_task_learned_by_heart_is_healthy():
    """Near zero loss, jumps of 30x 'the steps before' are 1% of where the run began, and the
    gradients of a converged run shrink 100x: no spikes, explosions, noise or eval-set findings
    (the demo's run was called 'learning rate too high (3 spikes/explosions)' before)."""
    rows = [{"step": 0, "val_loss": 8.9328}]
    for i, (loss, grad) in enumerate(DEMO_LOSS_GRAD, start=1):
        rows.append({"step": i, "loss": loss, "lr": 5e-4, "grad_norm": grad, "supervised": 22})
        if i % 10 == 0:
            rows.append({"step": i, "val_loss": {10: 0.0357, 20: 0.0224, 30: 0.006}[i]})
    report = diagnose(rows, info(val_tokens=172, val_sequences=8))
    assert kinds(report) == ["healthy"], report.render()


def test_divergence_is_lr_too_high():
    rows = curve(val_every=0)
    for r in rows:
        if r["step"] > 100:
            r["loss"] *= 1 + (r["step"] - 100) / 50
    report = diagnose(rows, info(lr=3e-4))
    assert kinds(report) == ["lr_too_high"]
    found = report.findings[0]
    assert 95 <= found.evidence["lowest_step"] <= 105
    assert 110 <= found.evidence["diverged_step"] <= 125
    assert found.steps == [found.evidence["lowest_step"], found.evidence["diverged_step"]]
    assert "lower the lr 3-10x" in found.change
    assert any("no validation loss" in n for n in report.notes)


@pytest.mark.parametrize("spiked,expected", [((50, 120), ["lr_too_high"]), ((50,), ["healthy"])])
def test_spikes_and_gradient_explosions(spiked, expected):
    rows = curve()
    for r in rows:
        if r["step"] in spiked and "loss" in r:
            r["loss"] *= 3
            r["grad_norm"] *= 20
    report = diagnose(rows, info())
    assert kinds(report) == expected  # one spike can be a bad batch; two are a pattern
    assert report.stats["spikes"] == list(spiked)
    assert report.stats["grad_explosions"] == list(spiked)
    if expected == ["lr_too_high"]:
        assert report.findings[0].steps == [50, 120]
        assert "50, 120" in report.findings[0].sentence


def test_nan_is_lr_too_high_from_its_first_step():
    rows = curve()
    for r in rows:
        if r["step"] >= 90 and "loss" in r:
            r["loss"] = math.nan
    report = diagnose(rows, info())
    assert kinds(report)[0] == "lr_too_high"
    assert report.findings[0].steps == [90] and "step 90" in report.findings[0].sentence


def test_nan_gradient_norm_alone_is_found():
    rows = curve()
    rows[50]["grad_norm"] = math.inf
    report = diagnose(rows, info())
    assert kinds(report)[0] == "lr_too_high"
    assert report.findings[0].steps == [rows[50]["step"]]


def test_flat_loss_is_lr_too_low():
    report = diagnose(curve(floor=2.99, noise=0.01, lr=1e-7), info(lr=1e-7))
    assert kinds(report) == ["lr_too_low"]
    found = report.findings[0]
    assert found.steps == [1, 200]
    assert "1e-07" in found.sentence and "raise the lr about 10x" in found.change


def test_noisy_loss_asks_for_more_supervised_tokens_per_step():
    report = diagnose(curve(noise=0.25, supervised=300), info(grad_accum=2))
    assert kinds(report) == ["noisy_loss"]
    found = report.findings[0]
    factor = found.evidence["factor"]
    assert factor == math.ceil((found.evidence["noise_rel"] / R.NOISE_REL) ** 2) >= 4
    assert f"grad_accum from 2 to {2 * factor}" in found.change
    assert f">= {300 * factor:,} supervised tokens" in found.change
    assert "300 supervised tokens per step" in found.sentence


def test_small_eval_set():
    report = diagnose(curve(noise=0.05), info(val_tokens=400, val_sequences=2))
    assert kinds(report) == ["eval_too_small"]
    found = report.findings[0]
    assert found.evidence["val_tokens"] == 400
    assert found.evidence["val_se_rel"] == pytest.approx(0.05 * math.sqrt(4000 / 400), rel=0.3)
    # the same run with the whole of a large val split: fine
    assert kinds(diagnose(curve(noise=0.05), info())) == ["healthy"]


def test_eval_batches_limits_the_val_tokens():
    assert R._val_tokens(info(val_tokens=200_000, val_sequences=400, eval_batches=10,
                              micro_batch=4)) == pytest.approx(200_000 * 40 / 400)


def test_too_short_to_judge():
    report = diagnose(curve(steps=5), info())
    assert kinds(report) == ["too_short"]


def test_findings_are_ordered_worst_first():
    rows = curve(noise=0.25, supervised=300, val_fn=_overfit)
    assert kinds(diagnose(rows, info()))[:2] == ["overfitting", "noisy_loss"]


# ------------------------------------------------------------------------------ files and CLI


def write_run(path: Path, rows, run_info=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if run_info is not None:
        (path / "run.json").write_text(json.dumps(run_info))
    return path


def test_help_has_summary_and_pipe_example():
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0
    example = result.output.split("Example:")[1].strip().splitlines()[0]
    assert example.startswith("sfttrain ") and "&&" in example


def test_cli_prints_the_report_and_writes_the_png(tmp_path):
    run = write_run(tmp_path / "run", curve(val_fn=_overfit), info())
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "verdict: overfitting" in result.output and "try: use the best checkpoint" in result.output
    assert (run / "report.png").read_bytes()[:4] == b"\x89PNG"
    out = CliRunner().invoke(cli, ["report", str(run), "--json", "--plot", str(tmp_path / "r.png")])
    data = json.loads(out.stdout)
    assert data["verdict"] == "overfitting" and data["findings"][0]["steps"] == [80, 100, 200]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_report_without_run_json(tmp_path):
    run = write_run(tmp_path / "run", curve())
    result = CliRunner().invoke(cli, ["report", str(run), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["verdict"] == "healthy"


@pytest.mark.parametrize("line,message", [
    ('{"step": 3, "loss": 1.0\n', "line 3: broken JSON"),
    ('[1, 2]\n', "line 3: expected a JSON object per line"),
    ('{"step": "x", "loss": 1.0}\n', "line 3: field 'step'"),
    ('{"step": 3, "loss": "high"}\n', "line 3: field 'loss': expected a number"),
])
def test_malformed_metrics_is_a_data_error_naming_file_and_line(tmp_path, line, message):
    run = tmp_path / "run"
    write_run(run, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(line)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {run / 'metrics.jsonl'}, {message}")
    assert not (run / "report.png").exists()


def test_missing_metrics_and_bad_run_json_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "metrics.jsonl: no metrics.jsonl" in result.output
    run = write_run(tmp_path / "run", curve())
    (run / "run.json").write_text("{oops")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1 and f"{run / 'run.json'}: broken JSON" in result.output
    run = write_run(tmp_path / "eval-only", [{"step": 0, "val_loss": 3.0}])
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1 and "no training steps logged" in result.output


def test_plot_must_be_a_png(tmp_path):
    run = write_run(tmp_path / "run", curve())
    result = CliRunner().invoke(cli, ["report", str(run), "--plot", str(tmp_path / "r.jpg")])
    assert result.exit_code == 2 and "ending in .png" in result.output


# ------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(96, seed=1)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:80], "val": records[80:]}, seq_len=96)


def _random_answers(n: int, seed: int, prefix: str) -> list[dict]:
    """Answers unrelated to their questions: memorising the train set cannot help validation."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "one",
             "two", "three", "four", "five", "six"]
    return [{"id": f"{prefix}{i}", "messages": [
        {"role": "user", "content": " ".join(rng.choice(words, 3))},
        {"role": "assistant", "content": " ".join(rng.choice(words, 6))}]} for i in range(n)]


def test_real_run_with_a_huge_lr_is_lr_too_high(tiny, shards, tmp_path):
    # full fine-tuning: with LoRA the tiny random model's frozen head keeps the loss near
    # ln(vocab) whatever the adapter does, so nothing can diverge
    said = []
    train(shards, tiny, tmp_path / "huge", "max_steps=30", "micro_batch=4", "eval_every=10",
          "lr=1.0", "quant=none", "full=true", "save_every=1000", say=said.append)
    report = R.report_run(tmp_path / "huge")
    assert report.verdict == "lr_too_high", report.render()
    assert report.findings[0].steps  # the steps where it went wrong
    assert said[-1].startswith("sfttrain: verdict: learning rate too high")


def test_real_run_with_a_tiny_lr_is_lr_too_low(tiny, shards, tmp_path):
    said = []
    train(shards, tiny, tmp_path / "tiny-lr", "max_steps=30", "micro_batch=4", "eval_every=10",
          "lr=1e-7", "quant=none", "save_every=1000", say=said.append)
    report = R.report_run(tmp_path / "tiny-lr")
    assert report.verdict == "lr_too_low", report.render()
    assert said[-1].startswith("sfttrain: verdict: learning rate too low (loss flat at lr 1e-07)")


def test_real_run_of_many_epochs_on_few_records_overfits(tiny, tmp_path):
    data = write_shards(tmp_path / "shards", {"train": _random_answers(6, 1, "t"),
                                              "val": _random_answers(16, 2, "v")}, seq_len=32)
    out = tmp_path / "over"
    train(data, tiny, out, "epochs=40", "micro_batch=2", "eval_every=6", "lr=0.003",
          "quant=none", "full=true", "scheduler=constant", "save_every=1000")
    report = R.report_run(out)
    assert report.verdict == "overfitting", report.render()
    found = report.findings[0]
    vals = [(r["step"], r["val_loss"]) for r in map(json.loads, open(out / "metrics.jsonl"))
            if "val_loss" in r]
    best_step = min(vals, key=lambda sv: sv[1])[0]
    assert found.evidence["best_step"] == best_step and 0 < best_step < vals[-1][0]
    assert found.steps[0] == best_step and found.steps[-1] == vals[-1][0]
    assert "full fine-tune saves only the last weights" in found.change


# ------------------------------------------------------------------------------ report_to


def test_tensorboard_event_files_hold_every_metric_once_across_a_resume(tiny, shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    common = ("max_steps=8", "micro_batch=4", "eval_every=4", "quant=none", "save_every=3",
              "report_to=tensorboard")
    train(shards, tiny, out, *common, "stop_at_step=5")
    train(shards, tiny, out, *common, resume=True)  # steps 4-8 again from the checkpoint at 3
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in loss] == list(range(1, 9))
    assert [v for _, v in loss] == pytest.approx([r["loss"] for r in rows if "loss" in r], rel=1e-6)
    assert [e.step for e in events.Scalars("val/loss")] == [0, 4, 8]
    assert {"train/lr", "train/grad_norm", "train/supervised", "val/ppl"} <= set(
        events.Tags()["scalars"])


@pytest.mark.slow  # a fresh process importing torch, transformers and peft: 20-35 s here
def test_no_tracker_is_imported_unless_asked_for(tiny, shards, tmp_path):
    # one fresh process: a run without report_to, then (the check can fail) one with it
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from sfttrain_helpers import train
def trackers():
    return sorted({{m.split('.')[0] for m in sys.modules}} & {{'tensorboard', 'wandb', 'mlflow'}})
train({str(shards)!r}, {str(tiny)!r}, {str(tmp_path / 'a')!r}, "max_steps=2", "eval_every=0",
      "quant=none")
print(trackers())
train({str(shards)!r}, {str(tiny)!r}, {str(tmp_path / 'b')!r}, "max_steps=2", "eval_every=0",
      "quant=none", "report_to=tensorboard")
print(trackers())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-2:] == ["[]", "['tensorboard']"]


def test_report_to_names_the_package_to_install(tiny, shards):
    import importlib.util

    missing = [n for n in ("wandb", "mlflow") if importlib.util.find_spec(n) is None]
    if not missing:
        pytest.skip("wandb and mlflow are both installed here")
    name = missing[0]
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny),
                                      f"report_to=tensorboard,{name}"])
    assert result.exit_code == 2
    assert (f"report_to: {name} needs the '{name}' package, which is not installed; "
            f"pip install {name}") in result.output
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny),
                                      "report_to=comet"])
    assert result.exit_code == 2
    assert "report_to: 'comet' is not one of none, tensorboard, wandb, mlflow" in result.output


def test_parse_report_to():
    from sfttrain.loggers import parse_report_to

    assert parse_report_to("none") == ([], [])
    assert parse_report_to(" TensorBoard, wandb,tensorboard ") == (["tensorboard", "wandb"], [])
    assert parse_report_to("tensorboard,comet") == (["tensorboard"], ["comet"])
