"""Data contracts: a flattened contract view of records plus Great Expectations suites.

Great Expectations 1.x has no Polars support and misjudges nested list<struct> columns (a
uniqueness expectation on ``messages`` passes with duplicates present). So Polars computes a
flat *contract view*, one scalar per column, and GX checks that view through pandas.

Suites are JSON files (``schemas/<name>.json``)::

    {"name": "records",
     "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"},
         "meta": {"description": "ids are unique"}}, ...]}

GX logs and *drops* an expectation it cannot build; :func:`build_gx_suite` makes that an error
naming the suite file and the expectation instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .errors import DataError, UsageProblem, json_problem
from .schema import ROLES

# A wheel carries the suites inside the package (setup.py copies them); a checkout or an
# editable install reads the repository's schemas/.
_PACKAGED = Path(__file__).resolve().parent / "schemas"
SCHEMAS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "schemas"
BUILTIN_SUITES = ("records", "tokenized")
LABEL_PAD = -100

# Every column of the contract view and what it means (docs/contracts.md repeats this table).
VIEW_COLUMNS: dict[str, str] = {
    "row": "0-based row number in the input",
    "id": "record id",
    "source": "record source",
    "task": "record task",
    "label": "record label",
    "n_messages": "number of messages",
    "roles": "role sequence joined by commas, e.g. 'system,user,assistant'",
    "first_role": "role of the first non-system message",
    "last_role": "role of the last message",
    "n_assistant": "number of assistant turns",
    "min_content_chars": "shortest content among user and assistant turns (tool-call turns excluded)",
    "max_content_chars": "longest content among all turns",
    "n_empty_assistant": "assistant turns with blank content and no tool calls",
    "content_hash": "hash of the conversation (roles + contents, lower-cased, whitespace "
    "collapsed); for uniqueness within one run, not a stable id",
    "n_tokens": "after tokenize: number of tokens",
    "n_supervised": "after tokenize: number of trained tokens (labels != -100)",
    "lengths_consistent": "after tokenize: len(input_ids) == len(labels) == n_tokens",
    "n_trained_turns": "after tokenize: runs of consecutive trained tokens",
    "eot_trained": "after tokenize: every trained run ends on the tokenizer's eos_id (the "
    "end-of-turn token is itself trained); null when no tokenizer column names eos_id",
}


# --------------------------------------------------------------------------- the view


def contract_view(df: pl.DataFrame) -> pl.DataFrame:
    """The flat per-record view that suites check (see :data:`VIEW_COLUMNS`)."""
    m = pl.element().struct
    role, content = m.field("role"), m.field("content").fill_null("")
    has_tool_calls = m.field("tool_calls").is_not_null() & (m.field("tool_calls") != "")
    msgs = pl.col("messages")
    text_turn = role.is_in(["user", "assistant"]) & ~has_tool_calls
    blank_assistant = (role == "assistant") & (content.str.strip_chars() == "") & ~has_tool_calls
    conversation = msgs.list.eval(pl.concat_str([role.fill_null("?"), pl.lit(": "), content]))
    normalized = (
        conversation.list.join("\n")
        .str.to_lowercase()
        # = replace_all(r"\s+", " "), several times faster: plain single spaces are left alone
        .str.replace_all(r"\s{2,}|[^\S ]", " ")
        .str.strip_chars()
    )
    cols = [
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        *[_column_or_null(df, name) for name in ("id", "source", "task", "label")],
        msgs.list.len().fill_null(0).cast(pl.Int64).alias("n_messages"),
        msgs.list.eval(role.fill_null("<null>")).list.join(",").fill_null("").alias("roles"),
        msgs.list.eval(role.filter(role != "system")).list.first().alias("first_role"),
        msgs.list.eval(role).list.last().alias("last_role"),
        msgs.list.eval((role == "assistant").cast(pl.Int64)).list.sum().alias("n_assistant"),
        msgs.list.eval(content.str.len_chars().filter(text_turn)).list.min().alias("min_content_chars"),
        msgs.list.eval(content.str.len_chars()).list.max().alias("max_content_chars"),
        msgs.list.eval(blank_assistant.cast(pl.Int64)).list.sum().alias("n_empty_assistant"),
        normalized.hash(seed=0).cast(pl.String).alias("content_hash"),
    ]
    view = df.select(cols)
    if {"input_ids", "labels"} <= set(df.columns):
        view = pl.concat([view, _token_view(df)], how="horizontal")
    return view


def _column_or_null(df: pl.DataFrame, name: str) -> pl.Expr:
    if name in df.columns:
        return pl.col(name).cast(pl.String)
    return pl.lit(None, dtype=pl.String).alias(name)


def _run_end() -> pl.Expr:
    """Inside list.eval over labels: a trained token followed by an untrained one (or the end)."""
    el = pl.element()
    return (el != LABEL_PAD) & (el.shift(-1).fill_null(LABEL_PAD) == LABEL_PAD)


def _token_view(df: pl.DataFrame) -> pl.DataFrame:
    labels = pl.col("labels")
    trained = pl.element() != LABEL_PAD
    n_tokens = pl.col("n_tokens") if "n_tokens" in df.columns else pl.col("input_ids").list.len()
    n_supervised = (
        pl.col("n_supervised")
        if "n_supervised" in df.columns
        else labels.list.eval(trained.cast(pl.Int64)).list.sum()
    )
    view = df.select(
        n_tokens.cast(pl.Int64).alias("n_tokens"),
        n_supervised.cast(pl.Int64).alias("n_supervised"),
        (
            (pl.col("input_ids").list.len() == labels.list.len())
            & (labels.list.len() == n_tokens)
        ).alias("lengths_consistent"),
        labels.list.eval(_run_end().cast(pl.Int64)).list.sum().alias("n_trained_turns"),
    )
    return view.with_columns(_eot_trained(df))


def _eot_trained(df: pl.DataFrame) -> pl.Series:
    """Per row: does every trained run end on eos_id? Labels hold the token id where trained."""
    eos = _eos_ids(df)
    out = pl.Series("eot_trained", [None] * df.height, dtype=pl.Boolean)
    if eos is None:
        return out
    frame = df.select(pl.col("labels"), eos.alias("_eos")).with_row_index("_i")
    # eos is one value per file in practice: evaluate once per distinct eos_id
    for (eos_id,), group in frame.group_by("_eos", maintain_order=True):
        if eos_id is None:
            continue
        not_eos = (_run_end() & (pl.element() != eos_id)).cast(pl.Int64)
        bad = group["labels"].list.eval(not_eos).list.sum()
        out = out.scatter(group["_i"], bad == 0)
    return out


def _eos_ids(df: pl.DataFrame) -> pl.Series | None:
    if "tokenizer" not in df.columns or df.schema["tokenizer"] != pl.String:
        return None
    return df["tokenizer"].str.json_path_match("$.eos_id").cast(pl.Int64, strict=False)


# --------------------------------------------------------------------------- suites


@dataclass
class Suite:
    """A suite as loaded from JSON: its name, file and raw expectation configurations."""

    name: str
    path: str
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def describe(self, index: int) -> str:
        exp = self.expectations[index]
        return f"expectation #{index + 1} ({exp.get('type')})"


def suite_path(spec: str) -> Path:
    """'records' / 'tokenized' name a built-in suite; anything else is a path to a JSON file."""
    if spec in BUILTIN_SUITES:
        return SCHEMAS_DIR / f"{spec}.json"
    path = Path(spec)
    if not path.exists():
        raise UsageProblem(
            f"--suite {spec}: no such suite; use {' or '.join(BUILTIN_SUITES)} or a path to a JSON suite"
        )
    return path


def load_suite(spec: str) -> Suite:
    """Read and shape-check a suite file (GX is not needed for this step)."""
    path = suite_path(spec)
    name = os.fspath(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            json_problem(exc), file=name, line=exc.lineno,
            fix="a suite is a JSON object with an 'expectations' list",
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("expectations"), list):
        raise DataError(
            "not a suite: expected an object with an 'expectations' list", file=name,
            fix="see docs/contracts.md for the suite format",
        )
    suite = Suite(str(doc.get("name") or path.stem), name, doc["expectations"])
    for i, exp in enumerate(suite.expectations):
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
            raise DataError(
                f"expectation #{i + 1} has no 'type'", file=name,
                fix='each expectation needs {"type": "expect_...", "kwargs": {...}}',
            )
        if not isinstance(exp.get("kwargs", {}), dict):
            raise DataError(
                f"{suite.describe(i)}: 'kwargs' must be an object", file=name,
                fix='write kwargs as {"column": "...", ...}',
            )
        if "meta" in exp and not isinstance(exp["meta"], dict):
            raise DataError(f"{suite.describe(i)}: 'meta' must be an object", file=name)
    return suite


def build_gx_suite(suite: Suite) -> Any:
    """The GX ExpectationSuite; every expectation must build, or a DataError names it."""
    gx_context()  # GX settings (analytics off) before GX modules load
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    built = []
    for i, exp in enumerate(suite.expectations):
        meta = {**(exp.get("meta") or {}), "sftdata_index": i}
        try:
            config = ExpectationConfiguration(
                type=exp["type"], kwargs=dict(exp.get("kwargs") or {}), meta=meta
            )
            built.append(config.to_domain_obj())
        except Exception as exc:  # GX raises several unrelated types (not found, pydantic)
            raise DataError(
                f"{suite.describe(i)}: {_why_not_built(exc)}", file=suite.path,
                fix="use an expectation type GX 1.x knows with its documented kwargs "
                "(see docs/contracts.md)",
            ) from None
    gx_suite = ExpectationSuite(name=suite.name, expectations=built)
    if len(gx_suite.expectations) != len(suite.expectations):  # GX drops what it cannot add
        raise DataError(
            f"GX loaded {len(gx_suite.expectations)} of {len(suite.expectations)} expectations",
            file=suite.path, fix="check the suite's expectation types and kwargs",
        )
    return gx_suite


def _why_not_built(exc: Exception) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if name == "ExpectationNotFoundError" or "not found" in text:
        return "unknown expectation type"
    return f"bad kwargs ({text})"


# --------------------------------------------------------------------------- running GX

_CONTEXT: dict[str, Any] = {}


def gx_context() -> Any:
    """One ephemeral GX context per process: no project directory, no analytics, no network."""
    if "context" in _CONTEXT:
        return _CONTEXT["context"]
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs (and drops) bad expectations itself; we report those ourselves, once.
    logging.getLogger("great_expectations").setLevel(logging.CRITICAL)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("sftdata").add_dataframe_asset("contract_view")
    _CONTEXT["context"] = context
    _CONTEXT["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
    return context


def run_gx(view: pl.DataFrame, gx_suite: Any) -> list[Any]:
    """GX results for the suite on the view, ordered like the suite's expectations."""
    gx_context()
    batch = _CONTEXT["batch_definition"].get_batch(batch_parameters={"dataframe": view.to_pandas()})
    result = batch.validate(
        gx_suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]},
    )
    return sorted(result.results, key=lambda r: r.expectation_config.meta["sftdata_index"])


def columns_named(kwargs: dict[str, Any]) -> list[str]:
    """Columns an expectation's kwargs refer to (column, column_A/B, column_list, ...)."""
    names = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), list):
            names.extend(c for c in kwargs[key] if isinstance(c, str))
    return names


def valid_roles_regex() -> str:
    """The regex the records suite uses for `roles` (kept here so tests can compare)."""
    alt = "|".join(ROLES)
    return f"^(?:{alt})(?:,(?:{alt}))*$"
