"""sftdata.ops.dedup on hand-made records: exact, near, keep policies, exact check vs approx, recall, clustering."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from conftest import chat

from sftdata.errors import UsageProblem
from sftdata.ops.dedup import DUPE_COLUMNS, clusters_from_pairs, dedup
from sftdata.schema import from_dicts

VOCAB = [f"w{i}" for i in range(400)]


def passage(seed: int, length: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(length)]


def edited(words: list[str], positions: tuple[int, ...], token: str = "changed") -> str:
    out = list(words)
    for p in positions:
        out[p] = token
    return " ".join(out)


def records(*rows: dict) -> pl.DataFrame:
    return from_dicts(list(rows))


def dupes_of(result) -> dict[str, tuple]:
    d = result.dupes
    return {
        row["id"]: (row["kept_id"], row["reason"], row["similarity"], row["cluster_id"])
        for row in d.select("id", "kept_id", "reason", "similarity", "cluster_id").iter_rows(named=True)
    }


def test_exact_ignores_case_whitespace_and_unicode_forms():
    df = records(
        chat("What is 2+2?", "Four.", id="a"),
        chat("what  is 2+2?", "FOUR.", id="b"),
        chat("What is ２+２?", "Four.\n", id="c"),  # full-width digits: NFKC folds them
        chat("What is 2+2?", "Five.", id="d"),
    )
    result = dedup(df, mode="exact")
    assert result.kept["id"].to_list() == ["a", "d"]
    assert dupes_of(result) == {"b": ("a", "exact", 1.0, 0), "c": ("a", "exact", 1.0, 0)}
    assert (result.dropped_exact, result.dropped_near, result.clusters) == (2, 0, 1)


def test_punctuation_only_counts_when_asked():
    df = records(chat("Hello, world!", "Hi.", id="a"), chat("hello world", "hi", id="b"))
    assert dedup(df, mode="exact").kept.height == 2
    assert dedup(df, mode="exact", punctuation=True).kept["id"].to_list() == ["a"]


def test_view_decides_what_is_compared():
    df = records(chat("Same question", "Answer one", id="a"), chat("Same question", "Answer two", id="b"))
    assert dedup(df, mode="exact").kept.height == 2
    assert dedup(df, mode="exact", on="prompt").kept["id"].to_list() == ["a"]
    assert dedup(df, mode="exact", on="response").kept.height == 2


def test_empty_views_are_kept_and_counted_not_compared():
    df = records(
        {"id": "a", "messages": [{"role": "assistant", "content": "text one"}]},
        {"id": "b", "messages": [{"role": "assistant", "content": "text two"}]},
    )
    result = dedup(df, on="prompt")
    assert result.kept.height == 2 and result.not_compared == 2 and result.dropped == 0


def test_near_duplicate_with_one_word_changed_is_dropped():
    base = passage(1)
    df = records(
        chat("q", " ".join(base), id="orig"),
        chat("q", edited(base, (60,)), id="copy"),
        chat("q", " ".join(passage(2)), id="other"),
    )
    assert dedup(df, mode="exact").dropped == 0
    result = dedup(df, mode="near")
    assert result.kept["id"].to_list() == ["orig", "other"]
    kept_id, reason, similarity, _ = dupes_of(result)["copy"]
    assert (kept_id, reason) == ("orig", "near")
    assert 0.85 < similarity < 1.0  # exact Jaccard of the shingle sets
    assert result.candidate_pairs == 1 and (result.bands, result.rows_per_band) == (15, 8)
    approx = dedup(df, mode="near", approx=True)  # datasketch's banding for 0.8
    assert approx.kept["id"].to_list() == ["orig", "other"]
    assert (approx.bands, approx.rows_per_band) == (9, 13)


def test_both_modes_resolve_exact_copies_to_the_final_kept_row():
    base = passage(3)
    df = records(
        chat("q", " ".join(base), id="a"),
        chat("q", edited(base, (5,)), id="b"),
        chat("Q", edited(base, (5,)).upper(), id="b-twin"),
    )
    result = dedup(df)
    assert result.kept["id"].to_list() == ["a"]
    dupes = dupes_of(result)
    assert dupes["b"][:2] == ("a", "near") and dupes["b-twin"][:2] == ("a", "exact")
    assert dupes["b"][2] == dupes["b-twin"][2] < 1.0  # same shingles, same similarity to "a"
    assert dupes["b"][3] == dupes["b-twin"][3]  # one cluster


def cluster_of_three() -> pl.DataFrame:
    base = passage(4, 200)
    return records(
        chat("q", " ".join(base), id="short"),
        chat("q", " ".join(base) + " extra words at the end", id="long"),
        chat("q", edited(base, (100,)), id="best"),
        chat("q", " ".join(passage(5)), id="alone"),
    ).with_columns(quality=pl.Series([0.5, None, 0.9, 1.0]))


@pytest.mark.parametrize(
    "keep,winner", [("first", "short"), ("longest", "long"), ("quality", "best")]
)
def test_keep_policies(keep, winner):
    df = cluster_of_three()
    result = dedup(df, mode="near", keep=keep)
    assert set(result.kept["id"]) == {winner, "alone"}
    assert result.kept["id"].to_list() == [i for i in df["id"] if i in {winner, "alone"}]  # input order
    assert {v[0] for v in dupes_of(result).values()} == {winner}


def test_keep_column_ties_go_to_the_earlier_row():
    base = passage(6)
    df = records(chat("q", " ".join(base), id="a"), chat("q", " ".join(base) + " x", id="b"))
    df = df.with_columns(score=pl.Series([2, 2]))
    assert dedup(df, keep="score").kept["id"].to_list() == ["a"]
    df = df.with_columns(score=pl.Series([1, 2]))
    assert dedup(df, keep="score").kept["id"].to_list() == ["b"]


def false_candidate_pair() -> pl.DataFrame:
    """Two texts of exact Jaccard 0.58 that share an LSH band with 8 permutations, seed 46."""
    rng = random.Random(5)
    base = [rng.choice(VOCAB[:200]) for _ in range(60)]
    return records(chat("q", " ".join(base), id="a"), chat("q", edited(base, (10, 30, 50)), id="b"))


def test_exact_check_drops_false_candidates():
    df = false_candidate_pair()
    loose = dedup(df, mode="near", num_perm=8, seed=46, on="response", ngram=5, approx=True)
    assert loose.dropped_near == 1 and loose.candidate_pairs == 1  # LSH alone merges them
    strict = dedup(df, mode="near", num_perm=8, seed=46, on="response", ngram=5)
    assert strict.dropped == 0 and strict.rejected_pairs == 1
    assert strict.kept["id"].to_list() == ["a", "b"]


def one_and_two_word_variants(n: int = 300) -> pl.DataFrame:
    """The M13 set: n texts of 40 words x 3 variants (0, 1 or 2 words changed). One changed word
    gives a true word 5-gram Jaccard of about 0.76, two about 0.6: below the default 0.8."""
    rng = random.Random(0)
    bases = [[f"w{rng.randrange(300)}" for _ in range(40)] for _ in range(n)]
    variants = []
    for b in bases:
        for k in range(3):
            changed = set(rng.sample(range(40), k))
            variants.append([f"w{rng.randrange(300)}" if j in changed else x for j, x in enumerate(b)])
    rng.shuffle(variants)
    return records(*(chat(" ".join(v), " ".join(v[:10]), id=str(i)) for i, v in enumerate(variants)))


def test_candidate_pairs_below_the_threshold_are_not_merged():
    """M13: sharing an LSH band makes a pair a candidate only; with approx its Jaccard
    estimated from the signatures must reach --threshold too (before: every candidate merged,
    105 near drops, 55 with a similarity below 0.8, the lowest 0.52). The counts are those of
    the bulk shingle hashes (xxhash64 words) at seed 1."""
    df = one_and_two_word_variants()
    result = dedup(df, ngram=5, approx=True)  # the M13 numbers are for word 5-grams
    assert result.candidate_pairs == 101 and result.rejected_pairs == 44
    near = result.dupes.filter(pl.col("reason") == "near")
    assert near.height == result.dropped_near == 57
    assert near["similarity"].min() >= 0.8  # every pair merged is a pair the estimate accepts
    strict = dedup(df, ngram=5)  # the exact Jaccard of every candidate is below 0.8
    assert (strict.candidate_pairs, strict.rejected_pairs, strict.dropped_near) == (380, 380, 0)


def test_union_find_is_transitive():
    labels = clusters_from_pairs(6, np.array([[0, 1], [1, 2], [3, 4]]))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4]
    assert len({labels[0], labels[3], labels[5]}) == 3


def test_chain_of_near_duplicates_is_one_cluster():
    base = passage(7, 200)
    a = " ".join(base)
    b = edited(base, (20, 40))  # a ~ b
    c = edited(base, (20, 40, 140, 160, 180))  # b ~ c, a and c further apart
    df = records(chat("q", a, id="a"), chat("q", b, id="b"), chat("q", c, id="c"))
    result = dedup(df, mode="near", threshold=0.85, ngram=5)
    assert result.kept["id"].to_list() == ["a"]
    dupes = dupes_of(result)
    assert dupes["b"][0] == dupes["c"][0] == "a"
    assert dupes["c"][2] < 0.85 < dupes["b"][2]  # c joined through b, not through a directly


def test_counts_add_up_and_dupes_have_the_documented_columns():
    df = cluster_of_three()
    result = dedup(df)
    assert result.kept.height + result.dupes.height == df.height == result.rows_in
    assert result.dropped == result.dupes.height
    assert result.kept.columns == df.columns
    for name, dtype in DUPE_COLUMNS.items():
        assert result.dupes.schema[name] == dtype
    assert set(result.dupes["reason"]) <= {"exact", "near"}


def test_empty_frame():
    result = dedup(from_dicts([]))
    assert result.kept.height == 0 and result.dupes.height == 0 and result.dropped == 0


def test_bad_arguments_are_reported_together():
    df = records(chat("q", "a", id="a")).with_columns(name=pl.lit("x"), score=pl.lit(1.0))
    with pytest.raises(UsageProblem) as err:
        dedup(df, mode="fuzzy", threshold=1.5, keep="name")
    assert str(err.value) == (
        "mode must be one of exact, near, both, got 'fuzzy'; threshold must be in (0, 1], got 1.5; "
        "--keep name: column is String, not numeric; use first, longest or a numeric column (score)"
    )
    with pytest.raises(UsageProblem, match=r"--keep nope: no such column; use first, longest or a numeric column \(score\)"):
        dedup(df, keep="nope")


def test_frame_without_record_columns_is_refused():
    with pytest.raises(UsageProblem, match=r"not a record table: missing column\(s\) id, messages"):
        dedup(pl.DataFrame({"text": ["a"]}))


def pairs_at_jaccard(n: int, shared: int, only_a: int, only_b: int) -> pl.DataFrame:
    """n unrelated pairs whose word 1-gram sets have exact Jaccard shared / (shared + a + b)."""
    rows = []
    for p in range(n):
        common = [f"p{p}s{k}" for k in range(shared)]
        a = common + [f"p{p}a{k}" for k in range(only_a)]
        b = common + [f"p{p}b{k}" for k in range(only_b)]
        rows += [chat("q", " ".join(a), id=f"{p}a"), chat("q", " ".join(b), id=f"{p}b")]
    return records(*rows)


def test_default_finds_pairs_just_above_the_threshold():
    """Pairs at exact Jaccard 0.85 (threshold + 0.05) are found with recall >= 0.99 by default;
    datasketch's banding with the estimated Jaccard (approx) finds about two thirds of them."""
    df = pairs_at_jaccard(600, 85, 8, 7)
    result = dedup(df, mode="near", on="response", ngram=1)
    assert (result.bands, result.rows_per_band) == (15, 8)
    assert result.candidate_probability >= 0.99 and result.recall_at == 0.85
    recall = result.dropped_near / 600
    assert recall >= 0.985
    assert set(result.dupes["similarity"].round(6)) == {0.85}  # exact, not estimated
    approx = dedup(df, mode="near", on="response", ngram=1, approx=True)
    assert approx.dropped_near / 600 < 0.8


@pytest.mark.parametrize("shared,only_a,only_b", [(79, 11, 10), (75, 13, 12), (60, 20, 20)])
def test_pairs_below_the_threshold_are_never_dropped(shared, only_a, only_b):
    df = pairs_at_jaccard(300, shared, only_a, only_b)
    result = dedup(df, mode="near", on="response", ngram=1)
    assert result.dropped == 0 and result.kept.height == 600
    assert result.rejected_pairs == result.candidate_pairs > 0


def test_pairs_at_the_threshold_are_dropped():
    df = pairs_at_jaccard(200, 80, 10, 10)  # exactly 0.8
    result = dedup(df, mode="near", on="response", ngram=1)
    assert result.dropped_near >= 0.9 * 200  # P(candidate) at 0.8 is 0.94 with 15 x 8
    assert set(result.dupes["similarity"].round(6)) == {0.8}


def test_exact_check_same_with_and_without_kept_shingles(monkeypatch):
    """Past KEEP_SHINGLES the exact check re-derives its rows' shingles: same answer."""
    import sftdata.ops.dedup as op

    df = one_and_two_word_variants(100)
    kept = dedup(df, ngram=3, threshold=0.7)
    monkeypatch.setattr(op, "KEEP_SHINGLES", 0)
    rederived = dedup(df, ngram=3, threshold=0.7)
    assert kept.dropped_near > 0
    assert kept.dupes.equals(rederived.dupes) and kept.kept.equals(rederived.kept)
    assert (kept.candidate_pairs, kept.rejected_pairs) == (rederived.candidate_pairs,
                                                           rederived.rejected_pairs)
