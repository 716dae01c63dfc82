"""dedup on the Ray engine: the same answer as ops/dedup.py, with no node holding every
signature or every candidate pair (docs/engines.md has the stages and their memory).

Rows are named by uid = unit index << 32 | row in unit, so uid order is input order and
"earliest row" means "smallest uid" on every node without a global numbering pass.
  1 features   map per unit: exact key, empty flag, keep score, id, MinHash signature and (for
               the exact check) the shingle-hash set; materialized in the object store
  2 exact      shuffle by exact key; each group keeps its best row (ops.dedup's keep rule)
  3 bands      alive rows (not empty, not an exact copy) exploded to (band, band key); shuffle
               by it; rows whose band values are really equal give candidate pairs
  4 pairs      candidate pairs made unique by a shuffle on the smaller uid
  5 verify     pairs joined (shuffle) with both rows' shingle sets, exact Jaccard >= threshold
               (with approx: signatures and the estimated Jaccard)
  6 components large-star / small-star rounds (sftdata/engines/components.py), each a shuffle
               by node, until a round changes nothing
  7 keep       shuffle by component: its best row by the keep rule; similarity of every moved
               row to it by one more join
The driver then holds only what the output needs, one entry per dropped row (its kept row,
similarity and reason) and the ids of kept rows of clusters, and every unit writes its own kept
rows and dupes in input order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from .. import minhash
from ..datasets import Unit
from ..ops import dedup as local
from . import components as cc
from .ray_engine import RayEngine, collect, materialize

UID_SHIFT = 32


@dataclass
class RayDedupResult:
    """The counts of ops.dedup.DedupResult, and the output as per-unit frames."""

    rows_in: int = 0
    kept_rows: int = 0
    dropped_exact: int = 0
    dropped_near: int = 0
    clusters: int = 0
    not_compared: int = 0
    bands: int = 0
    rows_per_band: int = 0
    candidate_pairs: int = 0
    rejected_pairs: int = 0
    recall_at: float = 0.0
    candidate_probability: float = 0.0
    rounds: int = 0  # connected-components rounds
    parts: Iterator[tuple[pl.DataFrame, pl.DataFrame]] = field(default=iter(()), repr=False)

    @property
    def dropped(self) -> int:
        return self.dropped_exact + self.dropped_near


def _pa():
    import pyarrow as pa

    return pa


# --------------------------------------------------------------------------- 1 features


def features(frame: pl.DataFrame, unit: Unit, opts: dict[str, Any]) -> Any:
    pa = _pa()
    local._check_arguments(frame, opts["mode"], opts["on"], opts["threshold"], opts["num_perm"],
                           opts["ngram"], opts["unit"], opts["keep"])
    n = frame.height
    exact, near = opts["mode"] in ("exact", "both"), opts["near"]
    texts = local.view_texts(frame, opts["on"]) if n else pl.Series([], dtype=pl.String)
    key_bytes, empty, lengths, sigs, hashes, counts = local.chunk_features(
        texts, exact, near, opts["punctuation"], opts["num_perm"], opts["ngram"], opts["unit"],
        opts["seed"])
    keys = (np.frombuffer(key_bytes, dtype=np.uint64).reshape(-1, 2) if exact
            else np.zeros((n, 2), dtype=np.uint64))
    keep = opts["keep"]
    if keep == "first" or n == 0:
        score = np.zeros(n)
    elif keep == "longest":
        score = lengths.astype(np.float64)
    else:
        score = frame[keep].cast(pl.Float64).fill_nan(None).fill_null(-np.inf).to_numpy()
    cols = {
        "uid": pa.array((unit.index << UID_SHIFT) + np.arange(n, dtype=np.int64)),
        "k0": pa.array(keys[:, 0]), "k1": pa.array(keys[:, 1]),
        "empty": pa.array(np.asarray(empty, dtype=bool)), "score": pa.array(score, pa.float64()),
        "id": pa.array(frame["id"].cast(pl.String).to_list(), pa.string()),
    }
    if near:
        cols["sig"] = pa.array([s.tobytes() for s in sigs], pa.binary())
        if not opts["approx"]:  # the shingle sets the exact check compares
            sets = minhash.distinct_per_text(hashes, counts) if n else []
            cols["set"] = pa.array([s.tobytes() for s in sets], pa.binary())
    return pa.table(cols)


# --------------------------------------------------------------------------- helpers


def _table(**cols: Any) -> Any:
    pa = _pa()
    types = {"sim": pa.float64(), "sa": pa.float64(), "sb": pa.float64()}
    return pa.table({k: pa.array(v, types.get(k, pa.int64())) for k, v in cols.items()})


def _np(table: Any, name: str) -> np.ndarray:
    return table[name].to_numpy(zero_copy_only=False)


def _runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every run of equal keys in already sorted arrays."""
    n = keys[0].size
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    return starts, np.append(starts[1:], n)


def _best_per_group(group: np.ndarray, uids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each row, the best row of its group: highest score, then earliest (ops.dedup's
    _keep_rank)."""
    order = np.lexsort((uids, -scores, group))
    starts, ends = _runs(group[order])
    best = np.repeat(uids[order][starts], ends - starts)
    out = np.empty_like(uids)
    out[order] = best
    return out


# --------------------------------------------------------------------------- 2 exact


def _exact_part(t: Any) -> Any:
    k0, k1 = _np(t, "k0"), _np(t, "k1")
    order = np.lexsort((k1, k0))
    starts, ends = _runs(k0[order], k1[order])
    group = np.empty(k0.size, dtype=np.int64)
    group[order] = np.repeat(np.arange(starts.size), ends - starts)
    uids = _np(t, "uid")
    best = _best_per_group(group, uids, _np(t, "score"))
    moved = best != uids
    return _table(uid=uids[moved], rep=best[moved])


# --------------------------------------------------------------------------- 3 bands


def _band_rows(t: Any, bands: int, rows: int, num_perm: int, gone: Any) -> Any:
    import ray

    pa = _pa()
    uids = _np(t, "uid")
    alive = ~_np(t, "empty") & ~np.isin(uids, ray.get(gone))
    uids, scores = uids[alive], _np(t, "score")[alive]
    sig_col = t["sig"].filter(pa.array(alive)).to_pylist()
    sigs = np.frombuffer(b"".join(sig_col), dtype=np.uint32).reshape(-1, num_perm)
    parts = []
    for band in range(bands):
        values = np.ascontiguousarray(sigs[:, band * rows:(band + 1) * rows])
        keys = minhash._band_keys(values) ^ np.uint64(band)
        parts.append(pa.table({
            "band": pa.array(np.full(uids.size, band, dtype=np.int64)),
            "key": pa.array(keys.view(np.int64)), "uid": pa.array(uids),
            "score": pa.array(scores, pa.float64()),
            "val": pa.array([v.tobytes() for v in values], pa.binary()),
        }))
    return pa.concat_tables(parts)


def _bucket_pairs(t: Any, rows: int) -> Any:
    """Pairs of rows whose band values are really equal (a 64-bit key collision pairs none)."""
    if t.num_rows < 2:
        return _table(lo=[], hi=[], sa=[], sb=[])
    band, uids, scores = _np(t, "band"), _np(t, "uid"), _np(t, "score")
    vals = np.frombuffer(b"".join(t["val"].to_pylist()), dtype=np.uint32).reshape(-1, rows)
    order = np.lexsort((uids, *vals.T[::-1], band))
    starts, ends = _runs(band[order], *(vals[order].T))
    group = np.repeat(np.arange(starts.size), ends - starts)
    left, right = minhash._pairs_within_groups(order, group)
    lo, hi = np.minimum(uids[left], uids[right]), np.maximum(uids[left], uids[right])
    slo = np.where(uids[left] < uids[right], scores[left], scores[right])
    shi = np.where(uids[left] < uids[right], scores[right], scores[left])
    return _table(lo=lo, hi=hi, sa=slo, sb=shi)


# --------------------------------------------------------------------------- 4-5 verify


def _keyed(t: Any, key: str, payload: str | None) -> Any:
    """Rows of a pair table, or of the features (payload given), in one schema for a union."""
    pa = _pa()
    n = t.num_rows
    if payload is not None:  # feature rows: key = uid, the payload in `p`
        return pa.table({"k": t["uid"], "a": pa.nulls(n, pa.int64()),
                         "b": pa.nulls(n, pa.int64()), "sa": pa.nulls(n, pa.float64()),
                         "sb": pa.nulls(n, pa.float64()), "pa": pa.nulls(n, pa.binary()),
                         "p": t[payload].cast(pa.binary())})
    cols = {"k": t[key], "a": t["a"], "b": t["b"], "sa": t["sa"], "sb": t["sb"],
            "pa": t["pa"] if "pa" in t.column_names else pa.nulls(n, pa.binary()),
            "p": pa.nulls(n, pa.binary())}
    return pa.table(cols)


def _attach(pairs: Any, feats: Any, payload: str, on: str) -> Any:
    """Pairs (a, b, sa, sb[, pa]) with the payload of row ``on`` attached: one shuffle of the
    pairs and the features together, keyed by that row."""
    from .ray_engine import shuffle

    left = pairs.map_batches(_keyed, fn_args=(on, None), batch_format="pyarrow")
    right = feats.select_columns(["uid", payload]).map_batches(
        _keyed, fn_args=(None, payload), batch_format="pyarrow")
    return shuffle(left.union(right), "k", _attach_part, on)


def _attach_part(t: Any, on: str) -> Any:
    pa = _pa()
    is_feat = pa.compute.is_valid(t["p"])
    feats, pairs = t.filter(is_feat), t.filter(pa.compute.invert(is_feat))
    fk = _np(feats, "k")
    order = np.argsort(fk)
    pos = order[np.searchsorted(fk[order], _np(pairs, "k"))] if fk.size else np.zeros(0, int)
    got = feats["p"].take(pa.array(pos, pa.int64()))
    a, b = _np(pairs, "a"), _np(pairs, "b")
    out = pa.table({"a": pairs["a"], "b": pairs["b"], "sa": pairs["sa"], "sb": pairs["sb"]})
    if on == "a":
        keep = np.ones(a.size, dtype=bool)
        if a.size:  # every pair of this `a` is here: the pairs are made unique now
            ordr = np.lexsort((b, a))
            dup = np.zeros(a.size, dtype=bool)
            dup[ordr[1:]] = (a[ordr][1:] == a[ordr][:-1]) & (b[ordr][1:] == b[ordr][:-1])
            keep = ~dup
        return out.append_column("pa", got).filter(pa.array(keep))
    return out.append_column("pa", pairs["pa"]).append_column("pb", got)


def _similarity(t: Any, approx: bool) -> Any:
    pa_, pb_ = t["pa"].to_pylist(), t["pb"].to_pylist()
    if approx:
        sim = [float(np.mean(np.frombuffer(x, np.uint32) == np.frombuffer(y, np.uint32)))
               for x, y in zip(pa_, pb_, strict=True)]
    else:
        sim = [minhash.hashed_jaccard(np.frombuffer(x, np.uint64), np.frombuffer(y, np.uint64))
               for x, y in zip(pa_, pb_, strict=True)]
    return _table(a=_np(t, "a"), b=_np(t, "b"), sa=_np(t, "sa"), sb=_np(t, "sb"),
                  sim=np.array(sim, dtype=np.float64))


def _similarities(pairs: Any, feats: Any, payload: str, approx: bool) -> Any:
    with_a = _attach(pairs, feats, payload, "a")
    return _attach(with_a, feats, payload, "b").map_batches(
        _similarity, fn_args=(approx,), batch_format="pyarrow")


# --------------------------------------------------------------------------- 6 components


def _orient(t: Any, large: bool) -> Any:
    """(node, nbr, snode, snbr) rows for a star step (scores travel with their nodes)."""
    a, b, sa, sb = _np(t, "a"), _np(t, "b"), _np(t, "sa"), _np(t, "sb")
    keep = a != b
    a, b, sa, sb = a[keep], b[keep], sa[keep], sb[keep]
    if large:
        return _table(node=np.concatenate([a, b]), nbr=np.concatenate([b, a]),
                      sa=np.concatenate([sa, sb]), sb=np.concatenate([sb, sa]))
    flip = b > a
    return _table(node=np.where(flip, b, a), nbr=np.where(flip, a, b),
                  sa=np.where(flip, sb, sa), sb=np.where(flip, sa, sb))


def _star_part(t: Any, large: bool) -> Any:
    node, nbr, snode, snbr = _np(t, "node"), _np(t, "nbr"), _np(t, "sa"), _np(t, "sb")
    score = dict(zip(nbr.tolist(), snbr.tolist(), strict=True))
    score.update(zip(node.tolist(), snode.tolist(), strict=True))
    order = np.lexsort((nbr, node))
    node, nbr = node[order], nbr[order]
    starts, ends = _runs(node)
    step = cc.large_star if large else cc.small_star
    out_a, out_b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        a, b = step(int(node[s]), nbr[s:e])
        out_a.append(a)
        out_b.append(b)
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    return _table(a=a, b=b, sa=np.array([score[x] for x in a.tolist()], dtype=np.float64),
                  sb=np.array([score[x] for x in b.tolist()], dtype=np.float64))


def _fingerprint(t: Any) -> Any:
    count, total = cc.fingerprint(_np(t, "a"), _np(t, "b"))
    return _pa().table({"count": [count], "sum": [str(total)]})


def _edges_fingerprint(edges: Any) -> tuple[int, int]:
    table = collect(edges.map_batches(_fingerprint, batch_format="pyarrow", batch_size=None))
    if table is None:
        return 0, 0
    return (sum(table["count"].to_pylist()),
            sum(int(s) for s in table["sum"].to_pylist()) % (1 << 64))


def connected_components(edges: Any) -> tuple[Any, int]:
    """Edges (a, b, sa, sb) -> star edges (leaf a, centre b, their scores), the centre the
    smallest uid of its component; and the number of rounds it took."""
    from .ray_engine import shuffle

    last, rounds = None, 0
    while True:
        rounds += 1
        for large in (True, False):
            oriented = edges.map_batches(_orient, fn_args=(large,), batch_format="pyarrow")
            edges = shuffle(oriented, "node", _star_part, large)
        edges = materialize(edges)
        now = _edges_fingerprint(edges)
        if now == last:
            return edges, rounds
        last = now


# --------------------------------------------------------------------------- 7 keep


def _component_best(t: Any) -> Any:
    """Star edges of whole components -> (uid, best) for every member that is not the best."""
    a, b, sa, sb = _np(t, "a"), _np(t, "b"), _np(t, "sa"), _np(t, "sb")
    centres, first = np.unique(b, return_index=True)
    uids = np.concatenate([a, centres])
    group = np.concatenate([b, centres])
    scores = np.concatenate([sa, sb[first]])
    best = _best_per_group(group, uids, scores)
    moved = best != uids
    n = int(moved.sum())
    return _table(a=uids[moved], b=best[moved], sa=np.zeros(n), sb=np.zeros(n))


# --------------------------------------------------------------------------- the whole


def dedup(engine: RayEngine, units: list[Unit], *, mode: str = "both",
          on: str = "conversation", threshold: float = 0.8, num_perm: int = 128, ngram: int = 3,
          unit: str = "word", punctuation: bool = False, approx: bool = False,
          keep: str = "first", seed: int = 1) -> RayDedupResult:
    from .ray_engine import shuffle

    near = mode in ("near", "both")
    opts = dict(mode=mode, on=on, threshold=threshold, num_perm=num_perm, ngram=ngram, unit=unit,
                punctuation=punctuation, approx=approx, keep=keep, seed=seed, near=near)
    result = RayDedupResult()
    feats = materialize(engine.table_map(units, features, opts))
    counts = collect(feats.select_columns(["empty"]).map_batches(
        _counts, batch_format="pyarrow", batch_size=None))
    result.rows_in = sum(counts["n"].to_pylist()) if counts is not None else 0
    result.not_compared = sum(counts["e"].to_pylist()) if counts is not None else 0

    # exact / near: dropped uid -> its representative, as sorted arrays on the driver
    exact = _pairs_of(None)
    if mode in ("exact", "both"):
        live = feats.filter(expr="empty == False").select_columns(["uid", "k0", "k1", "score"])
        exact = _pairs_of(collect(shuffle(live, "k0", _exact_part)), "uid", "rep")
    near_best, near_sim = _pairs_of(None), np.zeros(0)
    if near:
        near_best, near_sim = _near(feats, exact[0], result, opts)
    _finish(engine, units, feats, exact, near_best, near_sim, result)
    return result


def _counts(t: Any) -> Any:
    return _pa().table({"n": [t.num_rows], "e": [int(np.sum(_np(t, "empty")))]})


def _pairs_of(table: Any, a: str = "uid", b: str = "rep") -> tuple[np.ndarray, np.ndarray]:
    if table is None or table.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, vals = _np(table, a), _np(table, b)
    order = np.argsort(keys)
    return keys[order], vals[order]


def _near(feats: Any, exact_dropped: np.ndarray, result: RayDedupResult,
          opts: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    import ray

    from .ray_engine import shuffle

    threshold, approx, num_perm = opts["threshold"], opts["approx"], opts["num_perm"]
    bands, rows = local.banding(result, threshold, num_perm, approx)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64)), np.zeros(0)
    gone = ray.put(exact_dropped)
    banded = feats.select_columns(["uid", "empty", "score", "sig"]).map_batches(
        _band_rows, fn_args=(bands, rows, num_perm, gone), batch_format="pyarrow")
    pairs = shuffle(banded, "key", _bucket_pairs, rows).rename_columns(
        {"lo": "a", "hi": "b"})
    payload = "sig" if approx else "set"
    checked = materialize(_similarities(pairs, feats, payload, approx))
    result.candidate_pairs = checked.count()
    if result.candidate_pairs == 0:
        return empty
    edges = materialize(checked.filter(expr=f"sim >= {threshold!r}"))
    verified = edges.count()
    result.rejected_pairs = result.candidate_pairs - verified
    if verified == 0:
        return empty
    stars, result.rounds = connected_components(edges.select_columns(["a", "b", "sa", "sb"]))
    moved = materialize(shuffle(stars, "b", _component_best))
    if moved.count() == 0:
        return empty
    sims = collect(_similarities(moved, feats, payload, approx))
    uid, best, sim = _np(sims, "a"), _np(sims, "b"), _np(sims, "sim")
    order = np.argsort(uid)
    return (uid[order], best[order]), sim[order]


def _lookup(keys: np.ndarray, vals: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """vals for the queries found in sorted keys (the query itself otherwise), and found."""
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, max(keys.size - 1, 0))
    found = keys.size > 0
    hit = (keys[pos] == query) if found else np.zeros(query.size, bool)
    out = query.copy()
    if found:
        out[hit] = vals[pos[hit]]
    return out, hit


def _finish(engine: RayEngine, units: list[Unit], feats: Any,
            exact: tuple[np.ndarray, np.ndarray], near_best: tuple[np.ndarray, np.ndarray],
            near_sim: np.ndarray, result: RayDedupResult) -> None:
    """ops.dedup._assemble over the dropped rows only, then each unit writes its own part."""
    exact_uid, exact_rep = exact
    near_uid, near_rep = near_best
    dropped = np.union1d(exact_uid, near_uid)
    rep, is_exact = _lookup(exact_uid, exact_rep, dropped)
    kept, _ = _lookup(near_uid, near_rep, rep)
    sim_of = dict(zip(near_uid.tolist(), near_sim.tolist(), strict=True))
    sim = np.array([sim_of.get(r, 1.0) for r in rep.tolist()], dtype=np.float64)
    cluster_rows = np.unique(kept)
    cluster_id = np.searchsorted(cluster_rows, kept)
    result.dropped_exact = int(is_exact.sum())
    result.dropped_near = int(dropped.size - is_exact.sum())
    result.clusters = int(cluster_rows.size)
    result.kept_rows = result.rows_in - int(dropped.size)
    ids = _ids_of(feats, cluster_rows)
    kept_id = [ids[k] for k in kept.tolist()]
    info = pl.DataFrame({
        "uid": dropped, "cluster_id": cluster_id.astype(np.int64), "kept_id": kept_id,
        "similarity": sim, "reason": np.where(is_exact, "exact", "near"),
    }, schema={"uid": pl.Int64, "cluster_id": pl.Int64, "kept_id": pl.String,
               "similarity": pl.Float64, "reason": pl.String})
    unit_of = pl.Series(dropped >> UID_SHIFT)
    per_unit = {int(u): info.filter(unit_of == u) for u in np.unique(dropped >> UID_SHIFT)}
    result.parts = engine.map(units, _split_unit, per_unit)


def _ids_of(feats: Any, uids: np.ndarray) -> dict[int, str]:
    import ray

    if uids.size == 0:
        return {}
    wanted = ray.put(uids)

    def pick(t: Any) -> Any:
        return t.filter(_pa().array(np.isin(_np(t, "uid"), ray.get(wanted))))

    table = collect(feats.select_columns(["uid", "id"]).map_batches(pick, batch_format="pyarrow"))
    return dict(zip(_np(table, "uid").tolist(), table["id"].to_pylist(), strict=True))


def _split_unit(frame: pl.DataFrame, unit: Unit,
                per_unit: dict[int, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    info = per_unit.get(unit.index)
    if info is None or info.height == 0:
        return frame, frame.head(0).with_columns(
            pl.lit(None, pl.Int64).alias("cluster_id"), pl.lit(None, pl.String).alias("kept_id"),
            pl.lit(None, pl.Float64).alias("similarity"), pl.lit(None, pl.String).alias("reason"))
    rows = info["uid"].to_numpy() & ((1 << UID_SHIFT) - 1)
    drop = np.zeros(frame.height, dtype=bool)
    drop[rows] = True
    dupes = frame[rows.tolist()].with_columns(
        info["cluster_id"], info["kept_id"], info["similarity"], info["reason"])
    return frame.filter(pl.Series(~drop)), dupes
