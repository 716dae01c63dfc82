"""Connected components by large-star / small-star (Kiveris et al., "Connected Components in
MapReduce and Beyond", SoCC 2014), the algorithm text-dedup's Spark version uses.

Each step is a pure function of one node's neighbour list, so an engine runs it as a shuffle
keyed by node (no node ever sees more than its own neighbours): large-star links every larger
neighbour to the smallest node of the neighbourhood; small-star links a node and its smaller
neighbours to the smallest of them. Alternating the two turns every component into a star
around its smallest node in O(log n) rounds; a round that changes nothing ends the loop.
Nodes are int64 (dedup uses row uids: the smallest is the earliest row).
"""

from __future__ import annotations

import numpy as np

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


def large_star(node: int, nbrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (v, m) for every neighbour v > node, m the smallest of node and its neighbours."""
    nbrs = np.unique(nbrs)
    m = min(int(nbrs[0]), node) if nbrs.size else node
    big = nbrs[nbrs > node]
    return big, np.full(big.size, m, dtype=np.int64)


def small_star(node: int, nbrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (v, m) for v in node and its smaller neighbours (``nbrs``), v != m, m their
    smallest."""
    members = np.unique(np.append(nbrs, node))
    m = int(members[0])
    rest = members[members != m]
    return rest, np.full(rest.size, m, dtype=np.int64)


def orient_large(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Large-star's map: every edge in both directions, as (node, neighbour)."""
    keep = a != b
    a, b = a[keep], b[keep]
    return np.concatenate([a, b]), np.concatenate([b, a])


def orient_small(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Small-star's map: each edge under its larger end, as (node, smaller neighbour)."""
    keep = a != b
    a, b = a[keep], b[keep]
    return np.maximum(a, b), np.minimum(a, b)


def fingerprint(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(edge count, wrapping sum of a 64-bit mix of each edge): equal on both sides of a round
    only when the round left the edge multiset as it was, i.e. the stars are final."""
    with np.errstate(over="ignore"):
        h = a.astype(np.uint64) * _MIX[0] ^ b.astype(np.uint64) * _MIX[1]
        h ^= h >> np.uint64(31)
        return int(a.size), int(h.sum(dtype=np.uint64))


def _grouped(nodes: np.ndarray, nbrs: np.ndarray, step) -> tuple[np.ndarray, np.ndarray]:
    if nodes.size == 0:
        return nodes, nbrs
    order = np.lexsort((nbrs, nodes))
    nodes, nbrs = nodes[order], nbrs[order]
    starts = np.flatnonzero(np.r_[True, nodes[1:] != nodes[:-1]])
    ends = np.r_[starts[1:], nodes.size]
    out_a, out_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        a, b = step(int(nodes[s]), nbrs[s:e])
        out_a.append(a)
        out_b.append(b)
    return np.concatenate(out_a), np.concatenate(out_b)


def components(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """In one process (the reference the distributed loop is tested against): node -> the
    smallest node of its component, for every node of an edge."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    last = None
    while True:
        a, b = _grouped(*orient_large(a, b), large_star)
        a, b = _grouped(*orient_small(a, b), small_star)
        now = fingerprint(a, b)
        if now == last:
            break
        last = now
    return labels(a, b)


def labels(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Star edges (leaf, centre) -> {node: centre}, centres pointing at themselves."""
    out = {int(c): int(c) for c in np.unique(b)}
    out.update({int(x): int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)})
    return out
