"""Several models on one gold set: each metric with a bootstrap interval, the paired difference
against the first model (the base) with its interval and a paired test, and the max-drop gate.

Used by `sftdata gold score GOLD PRED_BASE PRED_A ...` (and by anyone comparing fine-tunes,
merges or a replay mix with the model they started from). The statistics are in
sftdata/stats.py; the per-example columns of every metric in sftdata/ops/gold_stats.py.

The max-drop gate (``--max-drop accuracy=0.02``) fails a model when it lost more than the allowed
amount *beyond noise*: when the lower end of the confidence interval of its drop (base minus
model, for a metric where higher is better) is above the allowed drop, i.e. the data rule out,
at the chosen confidence, that the model lost only the allowed amount or less. A point drop above
the allowance whose interval still reaches below it is reported as inconclusive, not as a
failure: a small gold set cannot tell such a drop from noise, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..errors import UsageProblem
from ..stats import bootstrap, interval, mcnemar_exact, permutation_test
from .gold import Scorer, ScoreResult, score

# metrics where a smaller value is better; a "drop" of these is an increase
LOWER_IS_BETTER = {"invalid_label_rate", "unparsed_rate", "empty_rate"}
# length statistics of chat answers: no better or worse, so no max-drop gate on them
NO_DIRECTION = {"mean_chars", "median_chars", "p90_chars", "max_chars", "mean_words",
                "length_ratio"}
CI_METHOD = "percentile bootstrap over gold examples (paired: one resample for every model)"


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 neither."""
    if metric in NO_DIRECTION:
        return 0
    return -1 if metric in LOWER_IS_BETTER else 1


@dataclass
class Comparison:
    names: list[str]
    results: list[ScoreResult]
    report: dict[str, Any]
    gates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [g for g in self.gates if not g["passed"]]


def compare(
    gold: pl.DataFrame,
    predictions: Sequence[tuple[str, str, pl.DataFrame]],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    task: str | None = None,
    scorer: Scorer | None = None,
    answer: str = "auto",
    allow_missing: bool = False,
    gold_name: str = "gold",
    max_drop: Mapping[str, float] | None = None,
    minimum: Mapping[str, float] | None = None,
) -> Comparison:
    """Score every (name, file, predictions) on ``gold``; the first is the base.

    ``max_drop`` and ``minimum`` map a metric ('accuracy', or 'group.metric' for one group) to
    the allowed drop against the base / the floor; both apply to every model but the base."""
    if not predictions:
        raise UsageProblem("give at least one predictions file")
    if resamples < 1:
        raise UsageProblem(f"--bootstrap must be at least 1 (got {resamples})")
    if not 0 < confidence < 1:
        raise UsageProblem(f"--confidence must be between 0 and 1 (got {confidence})")
    names = [name for name, _, _ in predictions]
    results = [
        score(gold, frame, task=task, scorer=scorer, allow_missing=allow_missing,
              gold_name=gold_name, predictions_name=path, answer=answer)
        for _, path, frame in predictions
    ]
    groups: dict[str, Any] = {}
    for key, entry in results[0].report["tasks"].items():
        metrics = {}
        for metric in entry["metrics"]:
            metrics[metric] = _metric(key, metric, names, results, resamples, confidence, seed)
        groups[key] = {
            **{k: entry[k] for k in ("task", "scorer") if k in entry},
            "records": entry["records"],
            "baselines": entry["baselines"],
            "metrics": metrics,
        }
    report = {
        "gold": gold_name,
        "records": gold.height,
        "models": [{"name": n, "predictions": r.report["predictions"], "missing": r.report["missing"],
                    "unknown": r.report["unknown"]} for n, r in zip(names, results, strict=True)],
        "base": names[0],
        "bootstrap": resamples,
        "confidence": confidence,
        "seed": seed,
        "ci_method": CI_METHOD,
        "groups": groups,
    }
    comparison = Comparison(names, results, report)
    comparison.gates = _gates(groups, names, max_drop or {}, minimum or {})
    report["gates"] = comparison.gates
    return comparison


def _metric(key, metric, names, results, resamples, confidence, seed) -> dict[str, Any]:
    values = [r.report["tasks"][key]["metrics"][metric] for r in results]
    stats = [r.statistics.get(key, {}).get(metric) for r in results]
    rows = [{"name": n, "value": v} for n, v in zip(names, values, strict=True)]
    out: dict[str, Any] = {"direction": direction(metric), "models": rows, "test": None}
    if any(s is None for s in stats):
        return out  # a quantile (median, p90, max): no interval
    replicates = bootstrap(stats, resamples, seed)
    for row, rep in zip(rows, replicates, strict=True):
        row["ci"] = _pair(interval(rep, confidence))
    binary = [s.binary() for s in stats]
    out["test"] = "mcnemar-exact" if all(b is not None for b in binary) else "permutation"
    for k in range(1, len(stats)):
        row = rows[k]
        row["diff"] = values[k] - values[0] if None not in (values[k], values[0]) else None
        row["diff_ci"] = _pair(interval(replicates[k] - replicates[0], confidence))
        if out["test"] == "mcnemar-exact":
            p, only_base, only_model = mcnemar_exact(binary[0], binary[k])
            row["p_value"] = p
            row["only_base_right"], row["only_model_right"] = only_base, only_model
        else:
            row["p_value"] = permutation_test(stats[0], stats[k], resamples, seed)
    return out


def _pair(pair):
    return list(pair) if pair is not None else None


def _targets(groups: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """(group, metric) pairs a gate name refers to: 'group.metric' one, 'metric' every group
    that has it."""
    group, _, metric = name.rpartition(".")
    if group:
        return [(group, metric)] if metric in groups.get(group, {}).get("metrics", {}) else []
    return [(g, metric) for g, entry in groups.items() if metric in entry["metrics"]]


def _gates(groups, names, max_drop, minimum) -> list[dict[str, Any]]:
    available = [f"{g}.{m}" for g, e in groups.items() for m in e["metrics"]]
    unknown = [n for n in [*max_drop, *minimum] if not _targets(groups, n)]
    if unknown:
        raise UsageProblem(
            f"no metric {', '.join(repr(n) for n in unknown)}; available: {', '.join(available)}"
        )
    undirected = sorted({f"{g}.{m}" for n in max_drop for g, m in _targets(groups, n)
                         if direction(m) == 0})
    if undirected:
        raise UsageProblem(
            f"--max-drop: {', '.join(undirected)} has no better or worse direction (a length "
            "statistic); gate a quality metric such as accuracy, f1 or rougeL"
        )
    if len(names) < 2 and max_drop:
        raise UsageProblem("--max-drop compares with the base: give at least two predictions files "
                           "(the base first)")
    gates = []
    for name, allowed in max_drop.items():
        for group, metric in _targets(groups, name):
            entry = groups[group]["metrics"][metric]
            sign = entry["direction"]
            for row in entry["models"][1:]:
                diff, ci = row.get("diff"), row.get("diff_ci")
                drop = None if diff is None else -sign * diff + 0.0  # no "-0.0"
                drop_ci = None if ci is None else sorted(-sign * x for x in ci)
                # beyond noise: even the low end of the drop's interval is above the allowance
                if drop_ci is not None:
                    passed = drop_ci[0] <= allowed
                else:
                    passed = drop is None or drop <= allowed
                inconclusive = passed and drop is not None and drop > allowed
                gates.append({
                    "gate": "max_drop", "metric": f"{group}.{metric}", "model": row["name"],
                    "allowed": allowed, "drop": drop, "drop_ci": drop_ci, "passed": passed,
                    "inconclusive": inconclusive,
                })
    for name, floor in minimum.items():
        for group, metric in _targets(groups, name):
            for row in groups[group]["metrics"][metric]["models"][1 if len(names) > 1 else 0:]:
                value = row["value"]
                gates.append({
                    "gate": "min", "metric": f"{group}.{metric}", "model": row["name"],
                    "min": floor, "value": value, "passed": value is not None and value >= floor,
                })
    return gates


def model_names(paths: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """--names when given, else each file's stem (the whole path where stems collide)."""
    if names:
        if len(names) != len(paths):
            raise UsageProblem(f"--names gives {len(names)} name(s) for {len(paths)} predictions "
                               "file(s); give one per file, the base first")
        if len(set(names)) != len(names):
            raise UsageProblem("--names must be distinct")
        return list(names)
    from pathlib import Path

    stems = [Path(p).stem if p != "-" else "stdin" for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]

