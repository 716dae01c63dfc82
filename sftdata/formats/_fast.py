"""Vectorized (Polars) building blocks for the adapters' fast paths.

A fast path must give byte-identical records to the row path; it declines (returns None) on
any shape it does not handle exactly, and on any row the row path would reject, so errors are
always reported by the row path with their line numbers.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import MESSAGE_FIELDS, MESSAGE_TYPE, RECORD_SCHEMA
from ._base import Options


def plain_strings(frame: pl.DataFrame, required: list[str], nullable: list[str] = ()) -> bool:
    for name in required:
        if frame.schema.get(name) != pl.String or frame[name].null_count():
            return False
    for name in nullable:
        if name in frame.columns and frame.schema[name] not in (pl.String, pl.Null):
            return False
    return True


def extras_ok(frame: pl.DataFrame, used: tuple[str, ...]) -> bool:
    """Extra columns go to meta; only string columns without nulls are encoded here."""
    return all(
        frame.schema[c] == pl.String and not frame[c].null_count()
        for c in frame.columns
        if c not in used
    )


def fixed_messages(frame: pl.DataFrame, turns: list[tuple[str, pl.Expr]]) -> pl.Series:
    """A messages column where every row has the same roles in the same order.

    Interleaving the contents and reshaping is far faster than concat_list of structs.
    """
    n, k = frame.height, len(turns)
    contents = frame.select(
        pl.concat_list([expr.alias(f"c{i}") for i, (_, expr) in enumerate(turns)]).alias("c")
    ).to_series().explode()
    roles = pl.Series("role", [role for role, _ in turns] * n, dtype=pl.String)
    flat = pl.DataFrame({"role": roles, "content": contents}).select(pl.struct(
        [pl.col(name) if name in ("role", "content") else pl.lit(None, dtype=dtype).alias(name)
         for name, dtype in MESSAGE_FIELDS.items()]
    )).to_series()
    return flat.reshape((n, k)).cast(pl.List(MESSAGE_TYPE)).alias("messages")


def json_string(expr: pl.Expr) -> pl.Expr:
    """The JSON spelling of a string, as json.dumps(ensure_ascii=False) writes it."""
    return pl.struct(expr.alias("a")).struct.json_encode().str.slice(5).str.strip_suffix("}")


def fixed_content_ids(frame: pl.DataFrame, turns: list[tuple[str, pl.Expr]]) -> pl.Series:
    """schema.content_id of fixed-shape messages, without building the messages first."""
    parts: list[pl.Expr] = [pl.lit("[")]
    for i, (role, expr) in enumerate(turns):
        parts += [pl.lit(("," if i else "") + f'["{role}",'), json_string(expr), pl.lit("]")]
    parts.append(pl.lit("]"))
    return sha_ids(frame.select(pl.concat_str(parts)).to_series())


def content_ids(messages: pl.Series) -> pl.Series:
    """schema.content_id for a whole column: Polars builds the canonical JSON, hashlib hashes."""
    arr = messages.rechunk().to_arrow()
    values = pl.from_arrow(arr.flatten())
    pairs = pl.select(pl.concat_str([
        pl.lit("["), json_string(pl.lit(values).struct.field("role")).fill_null("null"), pl.lit(","),
        json_string(pl.lit(values).struct.field("content")).fill_null("null"), pl.lit("]"),
    ])).to_series()
    offsets = arr.offsets.cast(pa.int64())
    offsets = pc.subtract(offsets, offsets[0])  # a sliced array's offsets do not start at 0
    lists = pa.LargeListArray.from_arrays(offsets, pairs.to_arrow())
    texts = pl.select(
        pl.concat_str([pl.lit("["), pl.lit(pl.from_arrow(lists)).list.join(","), pl.lit("]")])
    ).to_series()
    return sha_ids(texts)


def sha_ids(texts: pl.Series) -> pl.Series:
    """The first 16 hex digits of each text's SHA-256, as schema.content_id spells them.

    The polars-hash plugin hashes in Rust, in parallel, without a Python call per row (a quarter
    of convert's CPU time before it). hashlib gives the same digests where the plugin cannot load
    (a Polars version it was not built for).
    """
    try:
        return _plugin_sha_ids(texts)
    except Exception:  # noqa: BLE001 - an unloadable plugin raises anything from ImportError on
        return _hashlib_sha_ids(texts)


def _plugin_sha_ids(texts: pl.Series) -> pl.Series:
    import polars_hash

    frame = texts.alias("t").to_frame()
    return frame.select(polars_hash.col("t").chash.sha2_256().str.slice(0, 16).alias("id"))["id"]


def _hashlib_sha_ids(texts: pl.Series) -> pl.Series:
    sha = hashlib.sha256
    hashed = [sha(t.encode()).hexdigest()[:16] for t in texts.to_list()]
    return pl.Series("id", hashed, dtype=pl.String)


def meta_expr(frame: pl.DataFrame, used: tuple[str, ...]) -> pl.Expr:
    extras = sorted(c for c in frame.columns if c not in used)  # as _base.meta_json orders them
    if not extras:
        return pl.lit(None, dtype=pl.String)
    return pl.struct(extras).struct.json_encode()


def finish(
    frame: pl.DataFrame,
    messages: pl.Series,
    ids: pl.Series,
    opts: Options,
    used: tuple[str, ...],
    *,
    task: str | None = None,
    label: pl.Expr | None = None,
) -> pl.DataFrame:
    """The record frame from a batch's messages and content ids (source ids win)."""
    if "id" in frame.columns:
        ids = frame["id"].cast(pl.String).fill_null(ids)
    return frame.select(
        pl.lit(ids.alias("id")),
        pl.lit(messages.alias("messages")),
        pl.lit(opts.source, dtype=pl.String).alias("source"),
        pl.lit(opts.task or task, dtype=pl.String).alias("task"),
        (label if label is not None else pl.lit(None, dtype=pl.String)).cast(pl.String).alias("label"),
        pl.lit(None, dtype=pl.String).alias("group"),
        pl.lit(None, dtype=pl.String).alias("split"),
        meta_expr(frame, used).alias("meta"),
    ).cast(RECORD_SCHEMA)
