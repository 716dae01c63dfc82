"""Large-star / small-star connected components equal union-find's, on random graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sftdata.engines.components import components, large_star, small_star
from sftdata.ops.dedup import clusters_from_pairs


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=80))
def test_same_components_as_union_find(edges):
    pairs = np.array(edges, dtype=np.int64)
    labels = components(pairs[:, 0], pairs[:, 1])
    uf = clusters_from_pairs(41, pairs)
    nodes = np.unique(pairs[pairs[:, 0] != pairs[:, 1]])
    smallest: dict[int, int] = {}
    for node in sorted(nodes.tolist()):
        smallest.setdefault(int(uf[node]), node)
    assert labels == {node: smallest[int(uf[node])] for node in nodes.tolist()}


def test_star_steps():
    assert [a.tolist() for a in large_star(5, np.array([9, 2, 7, 7]))] == [[7, 9], [2, 2]]
    assert [a.tolist() for a in small_star(5, np.array([3, 1]))] == [[3, 5], [1, 1]]
