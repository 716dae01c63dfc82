"""Run a data contract (a GX suite from schemas/) over records and say what failed, and where."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from ..contracts import Suite, build_gx_suite, columns_named, contract_view, load_suite, run_gx
from ..errors import DataError

MAX_IDS = 5  # offending ids listed per failed expectation (the --report JSON keeps more)
REPORT_IDS = 100


@dataclass
class Outcome:
    """One expectation's verdict, with the records that broke it."""

    index: int
    type: str
    kwargs: dict[str, Any]
    description: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    offending_ids: list[str] = field(default_factory=list)
    offending_rows: list[int] = field(default_factory=list)
    error: str | None = None

    def headline(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.type}({args})"


@dataclass
class ValidationReport:
    suite: str
    suite_path: str
    rows: int
    outcomes: list[Outcome]

    @property
    def ok(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_path": self.suite_path,
            "rows": self.rows,
            "success": self.ok,
            "expectations": len(self.outcomes),
            "failed": len(self.failed),
            "results": [asdict(o) for o in self.outcomes],
        }


def validate(
    df: pl.DataFrame, suite: str | Suite = "records", source: str | None = None
) -> ValidationReport:
    """Check records against a suite ('records', 'tokenized', a JSON path, or a loaded Suite).

    The suite's expectations run on :func:`sftdata.contracts.contract_view` of ``df``.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    gx_suite = build_gx_suite(suite)  # fails before any data work when the suite is broken
    _check_tokenized(df, suite, source)
    view = contract_view(df)
    results = run_gx(view, gx_suite)
    ids = view["id"].to_list()
    outcomes = [
        _outcome(i, exp, res, ids, view.columns)
        for i, (exp, res) in enumerate(zip(suite.expectations, results, strict=True))
    ]
    return ValidationReport(suite.name, suite.path, df.height, outcomes)


def _check_tokenized(df: pl.DataFrame, suite: Suite, source: str | None) -> None:
    """A suite about tokenize's output on records that were never tokenized is one problem,
    not one 'not in the contract view' error per expectation (L16)."""
    from ..contracts import VIEW_COLUMNS

    after_tokenize = {c for c, meaning in VIEW_COLUMNS.items() if meaning.startswith("after tokenize")}
    wanted = {c for exp in suite.expectations for c in columns_named(dict(exp.get("kwargs") or {}))}
    if wanted & after_tokenize and not {"input_ids", "labels"} <= set(df.columns):
        raise DataError(
            f"the input is not tokenized (no input_ids and labels columns), and suite {suite.name} "
            f"checks tokenize's output ({', '.join(sorted(wanted & after_tokenize))})",
            file=source,
            fix="validate the output of `sftdata tokenize`, or use --suite records for records",
        )


def _outcome(index: int, exp: dict, res: Any, ids: list, view_columns: list[str]) -> Outcome:
    kwargs = dict(exp.get("kwargs") or {})
    meta = exp.get("meta") or {}
    result = res.result or {}
    out = Outcome(
        index=index,
        type=exp["type"],
        kwargs=kwargs,
        description=str(meta.get("description", "")),
        success=bool(res.success),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=_round(result.get("unexpected_percent")),
        observed_value=_plain(result.get("observed_value")),
    )
    missing = [c for c in columns_named(kwargs) if c not in view_columns]
    if missing:
        out.success = False
        names = ", ".join(repr(c) for c in missing)
        subject = f"column {names} is" if len(missing) == 1 else f"columns {names} are"
        out.error = f"{subject} not in the contract view (it has: {', '.join(view_columns)})"
        return out
    info = res.exception_info or {}
    if info.get("raised_exception") or _nested_exception(info):
        out.success = False
        out.error = _nested_exception(info) or info.get("exception_message")
    rows = [entry["row"] for entry in result.get("unexpected_index_list") or [] if "row" in entry]
    rows = sorted({int(r) for r in rows})[:REPORT_IDS]
    out.offending_rows = rows
    out.offending_ids = [ids[r] if ids[r] is not None else f"<row {r + 1}>" for r in rows]
    return out


def _nested_exception(info: dict) -> str | None:
    # For metric failures GX nests {metric_id: {exception_message: ...}} instead of a flat dict
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"])
    return None


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def _plain(value: Any) -> Any:
    """GX hands back numpy scalars; make them JSON-friendly."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
