"""Properties of dedup on generated records: idempotent, deterministic, nothing lost."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.ops.dedup import dedup
from sftdata.schema import from_dicts

# A small vocabulary makes exact copies and shared shingles (near duplicates) common.
word = st.sampled_from(["alpha", "beta", "Gamma", "delta", "eps", "zeta", "eta", "theta"])
sentence = st.lists(word, min_size=0, max_size=30).map(" ".join)
spacing = st.sampled_from(["", " ", "  ", "\n"])


@st.composite
def record_sets(draw):
    bases = draw(st.lists(st.tuples(sentence, sentence), min_size=1, max_size=12))
    rows = []
    for i in range(draw(st.integers(1, 25))):
        prompt, answer = bases[draw(st.integers(0, len(bases) - 1))]
        if draw(st.booleans()):  # a copy with changed case or whitespace
            answer = draw(spacing) + answer.upper() + draw(spacing)
        rows.append({"id": f"r{i}", "messages": [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": answer},
        ]})
    return from_dicts(rows)


options = st.fixed_dictionaries({
    "mode": st.sampled_from(["exact", "near", "both"]),
    "on": st.sampled_from(["prompt", "response", "conversation"]),
    "threshold": st.sampled_from([0.5, 0.8, 1.0]),
    "ngram": st.integers(1, 5),
    "num_perm": st.sampled_from([16, 64]),
    "approx": st.booleans(),
    "keep": st.sampled_from(["first", "longest"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_sets(), options)
def test_dedup_properties(df, opts):
    result = dedup(df, workers=1, **opts)
    kept, dupes = result.kept, result.dupes
    # nothing is lost: every input row is either kept or dropped, exactly once
    assert kept.height + dupes.height == df.height
    assert sorted(kept["id"].to_list() + dupes["id"].to_list()) == sorted(df["id"].to_list())
    assert kept["id"].n_unique() == kept.height
    # kept rows keep their input order; each dropped row names a kept row
    positions = {rid: i for i, rid in enumerate(df["id"])}
    assert [positions[i] for i in kept["id"]] == sorted(positions[i] for i in kept["id"])
    assert set(dupes["kept_id"]) <= set(kept["id"])
    assert result.dropped_exact + result.dropped_near == dupes.height
    # idempotent and deterministic
    assert dedup(kept, workers=1, **opts).dropped == 0
    again = dedup(df, workers=1, **opts)
    assert again.kept.equals(kept) and again.dupes.equals(dupes)
