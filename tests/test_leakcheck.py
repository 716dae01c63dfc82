"""Library tests of sftdata.ops.leakcheck and its n-gram index (sftdata.ngrams)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import AG_TEMPLATE, chat, made_up_stories
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.errors import UsageProblem
from sftdata.ngrams import Corpus
from sftdata.ops.leakcheck import MATCH_SCHEMA, decontaminate, leakcheck
from sftdata.schema import from_dicts
from sftdata.text import normalize, words

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?"
)  # 31 words
KNUCKLES = "What happens if you crack your knuckles a lot over many years?"  # 12 words


def records(*rows: dict) -> pl.DataFrame:
    return from_dicts(list(rows))


def refs(**named: list[dict]) -> dict[str, pl.DataFrame]:
    return {name: from_dicts(rows) for name, rows in named.items()}


def bench() -> dict[str, pl.DataFrame]:
    return refs(bench=[
        chat(NATALIA, "72", id="g1"),
        chat("Who are you?", "I am an artificial intelligence", id="t1"),
        chat(KNUCKLES, "Nothing in particular", id="t2"),
    ])


def by_train(result) -> dict[str, dict]:
    return {row["train_id"]: row for row in result.matches.iter_rows(named=True)}


# --------------------------------------------------------------------------- n-gram index


def test_corpus_words_are_normalized_and_windows_hash_equal_ngrams_equally():
    corpus = Corpus.from_texts(["The CAT sat, on the mat!", "", "the cat  sat on the mat"])
    assert corpus.lengths.tolist() == [6, 0, 6]
    assert corpus.text(0) == "the cat sat on the mat"
    whole = corpus.whole()
    assert whole[0] == whole[2] and whole[0] != whole[1]
    windows = corpus.windows(3)
    assert windows.height == 8  # 4 windows in each 6-word text, none in the empty one
    assert windows.filter(pl.col("row") == 0)["hash"].to_list() == windows.filter(
        pl.col("row") == 2
    )["hash"].to_list()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("ab cd ef"), max_size=9).map(" ".join), max_size=6),
    st.integers(1, 4),
)
def test_window_hashes_collide_exactly_when_the_ngrams_are_equal(texts, n):
    corpus = Corpus.from_texts(texts)
    windows = corpus.windows(n)
    grams = [tuple(words(normalize(texts[r]))[s : s + n]) for r, s in windows.select("row", "start").iter_rows()]
    hashes = windows["hash"].to_list()
    for i in range(len(grams)):
        for j in range(len(grams)):
            assert (hashes[i] == hashes[j]) == (grams[i] == grams[j])


# --------------------------------------------------------------------------- evidence kinds


def test_exact_match_ignores_case_whitespace_and_punctuation():
    train = records(chat(NATALIA.upper().replace(" ", "   ").replace(",", ""), "x", id="a"))
    result = leakcheck(train, bench())
    row = by_train(result)["a"]
    assert (row["ref_set"], row["ref_id"], row["kind"], row["confidence"], row["overlap"]) == (
        "bench", "g1", "exact", "high", 1.0,
    )
    assert result.contaminated_ids == ["a"]
    assert result.matches.schema == pl.Schema(MATCH_SCHEMA)


def test_ngram_overlap_survives_a_light_edit_and_quotes_the_matching_ngrams():
    edited = "Please solve: " + NATALIA.replace("half", "a third") + " Think step by step."
    result = leakcheck(records(chat(edited, "x", id="a")), bench())
    row = by_train(result)["a"]
    assert (row["kind"], row["confidence"]) == ("ngram", "high")
    evidence = json.loads(row["evidence"])
    assert evidence["ngram"]["n"] == 13
    item = " ".join(words(normalize(NATALIA)))
    for gram in evidence["ngram"]["matching"]:
        assert len(gram.split()) == 13 and gram in item and gram in " ".join(words(normalize(edited)))
    # 'half' is word 15: windows touching it are lost, the rest of the item is covered
    assert 0.4 <= row["overlap"] < 1.0 and evidence["ratio"] == row["overlap"]


def test_a_single_shared_ngram_is_low_confidence():
    item = NATALIA + " Show your work and explain each step clearly for a young student."  # 43
    partial = "My story: " + " ".join(NATALIA.split()[:13]) + " and then something else happened."
    result = leakcheck(records(chat(partial, "x", id="a")), refs(bench=[chat(item, "72")]))
    row = by_train(result)["a"]
    assert (row["kind"], row["confidence"]) == ("ngram", "low")
    assert row["overlap"] < 0.4
    assert result.contaminated_ids == [] and result.low_confidence_ids == ["a"]


def test_generic_short_prompt_is_reported_apart_as_low_confidence():
    train = records(chat("who are you", "I'm a helpful assistant.", id="opener"))
    result = leakcheck(train, bench())
    row = by_train(result)["opener"]
    assert (row["ref_id"], row["kind"], row["confidence"]) == ("t1", "exact", "low")
    assert result.contaminated_ids == [] and result.low_confidence_ids == ["opener"]
    assert result.summary["low_confidence_records"] == 1


def test_short_item_found_whole_inside_a_longer_prompt_is_high_confidence():
    train = records(chat(f"Tell me: {KNUCKLES.lower()} Thanks in advance", "x", id="a"))
    row = by_train(leakcheck(train, bench()))["a"]
    assert (row["ref_id"], row["kind"], row["confidence"]) == ("t2", "short", "high")
    assert json.loads(row["evidence"])["short"]["item"] == " ".join(words(normalize(KNUCKLES)))


def test_short_item_in_many_distinct_training_texts_is_low_confidence():
    rows = [chat(f"Topic {i}: {KNUCKLES}", "x", id=f"r{i:02d}") for i in range(12)]
    result = leakcheck(records(*rows), bench(), frequent_cutoff=10)
    assert set(result.matches["confidence"]) == {"low"}
    assert result.low_confidence_ids == [f"r{i:02d}" for i in range(12)]
    assert json.loads(result.matches["evidence"][0])["train_texts_with_item"] == 12


def test_frequent_ngrams_are_ignored_but_copies_of_one_item_are_not():
    boiler = "you are a helpful assistant that always answers in clear and simple english please"
    ref = refs(bench=[chat(f"{boiler}. {NATALIA}", "72", id="g1")])
    noisy = [chat(f"{boiler}. Question {i} about something else.", "x", id=f"n{i:02d}")
             for i in range(12)]
    copies = [chat(f"{boiler}. {NATALIA}", "72", id=f"c{i:02d}") for i in range(15)]
    result = leakcheck(records(*noisy, *copies), ref, frequent_cutoff=10, near=False)
    assert result.contaminated_ids == [f"c{i:02d}" for i in range(15)]
    assert not any(i.startswith("n") for i in result.low_confidence_ids)
    assert result.summary["frequent_ngrams_ignored"] > 0


def test_near_duplicate_found_by_minhash_when_no_ngram_fits():
    text = " ".join(f"w{i}" for i in range(40))
    edited = text.rsplit(" ", 1)[0] + " changed"
    ref = refs(bench=[chat(text, "x", id="long")])
    result = leakcheck(records(chat(edited, "x", id="a")), ref, ngram=50)
    row = by_train(result)["a"]
    assert (row["kind"], row["confidence"]) == ("near", "high")
    assert json.loads(row["evidence"])["near"]["jaccard"] == pytest.approx(35 / 37, abs=1e-4)
    assert leakcheck(records(chat(edited, "x", id="a")), ref, ngram=50, near=False).matches.height == 0


def test_views_prompt_response_whole():
    ref = refs(bench=[chat("unrelated question here", NATALIA, id="g1")])
    train = records(chat("another question", NATALIA, id="a"))
    assert leakcheck(train, ref, on="prompt").contaminated_ids == []
    assert leakcheck(train, ref, on="response").contaminated_ids == ["a"]
    assert leakcheck(train, ref, on="whole").contaminated_ids == ["a"]


def test_several_reference_sets_are_reported_by_name():
    ref = {**bench(), "other": from_dicts([chat(NATALIA, "72", id="o1")])}
    result = leakcheck(records(chat(NATALIA, "x", id="a")), ref)
    assert result.matches.select("ref_set", "ref_id").rows() == [("bench", "g1"), ("other", "o1")]
    assert set(result.summary["references"]) == {"bench", "other"}
    assert result.summary["references"]["other"]["contaminated_records"] == 1


def test_empty_inputs_and_empty_texts():
    empty = from_dicts([])
    assert leakcheck(empty, bench()).matches.height == 0
    no_answer = records({"id": "a", "messages": [{"role": "user", "content": NATALIA}]})
    assert leakcheck(no_answer, bench(), on="response").matches.height == 0
    result = leakcheck(records(chat(NATALIA, "x", id="a")), {"none": empty})
    assert result.contaminated_ids == [] and result.summary["references"] == {}


def test_bad_parameters_are_reported_together():
    with pytest.raises(UsageProblem) as err:
        leakcheck(from_dicts([]), bench(), on="title", min_ngram=0, min_overlap=0)
    assert str(err.value) == (
        "--on must be one of prompt, response, whole, got 'title'; "
        "--min-ngram must be at least 1, got 0; "
        "--min-overlap must be in (0, 1], got 0"
    )


def test_min_ngram_is_capped_at_ngram():
    train = records(chat("Please: who are you now", "x", id="a"))
    ref = refs(bench=[chat("who are you now", "x", id="r")])  # 4 words, < min_ngram 8
    assert leakcheck(train, ref).low_confidence_ids == ["a"]
    assert leakcheck(train, ref, ngram=4).contaminated_ids == ["a"]


# --------------------------------------------------------------------------- whole-run properties


def planted_train() -> pl.DataFrame:
    return records(
        chat("Describe a process of making crepes.", "Mix flour and eggs.", id="clean1"),
        chat(NATALIA.lower(), "x", id="leak1"),
        chat("who are you?", "An assistant.", id="opener"),
        chat(f"Quiz: {KNUCKLES}", "x", id="leak2"),
        chat("Write a haiku about the sea in autumn light.", "Waves...", id="clean2"),
    )


def test_same_input_gives_identical_results_whatever_the_row_order_or_chunking(monkeypatch):
    train = planted_train()
    first = leakcheck(train, bench())
    monkeypatch.setattr("sftdata.ops.leakcheck.CHUNK_BYTES", 60)  # chunks of one or two texts
    shuffled = leakcheck(train.sample(fraction=1.0, shuffle=True, seed=3), bench(), chunk_rows=2)
    assert first.matches.equals(shuffled.matches)
    assert first.contaminated_ids == shuffled.contaminated_ids == ["leak1", "leak2"]
    assert first.summary == shuffled.summary


def test_decontaminate_keeps_counts_and_gives_reasons():
    train = planted_train()
    result = leakcheck(train, bench())
    kept, dropped = decontaminate(train, result)
    assert kept.height + dropped.height == train.height
    assert kept["id"].to_list() == ["clean1", "opener", "clean2"]
    assert dropped.select("id", "reason").rows() == [
        ("leak1", "leak: high exact match with bench item g1 (overlap 1.0)"),
        ("leak2", "leak: high short match with bench item t2 (overlap 1.0)"),
    ]
    kept, dropped = decontaminate(train, result, include_low=True)
    assert dropped["id"].to_list() == ["leak1", "opener", "leak2"]


# --------------------------------------------------------------------------- against brute force

VOCAB = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
texts_strategy = st.lists(
    st.lists(st.sampled_from(VOCAB), min_size=0, max_size=24).map(" ".join), min_size=1, max_size=6
)


@settings(max_examples=25, deadline=None)
@given(texts_strategy, texts_strategy)
def test_ngram_and_exact_evidence_match_python_sets(train_texts, ref_texts):
    n = 4
    train = records(*[chat(t, "x", id=f"t{i}") for i, t in enumerate(train_texts)])
    ref = refs(r=[chat(t, "x", id=f"r{i}") for i, t in enumerate(ref_texts)])
    result = leakcheck(train, ref, ngram=n, min_ngram=1, frequent_cutoff=1000, near=False)
    got = {(m["train_id"], m["ref_id"]): m for m in result.matches.iter_rows(named=True)}

    def grams(text):
        ws = text.split()
        return {tuple(ws[k : k + n]) for k in range(len(ws) - n + 1)}

    expected = set()
    for i, t in enumerate(train_texts):
        for j, r in enumerate(ref_texts):
            rw = r.split()
            shared = grams(t) & grams(r)
            contained = 0 < len(rw) < n and f" {r} " in f" {t} "
            if (rw and t.split() == rw) or shared or contained:
                expected.add((f"t{i}", f"r{j}"))
            if shared:
                covered = {k + d for k in range(len(rw) - n + 1) if tuple(rw[k : k + n]) in shared
                           for d in range(n)}
                evidence = json.loads(got[(f"t{i}", f"r{j}")]["evidence"])
                assert evidence["ngram"]["coverage"] == pytest.approx(len(covered) / len(rw), abs=1e-4)
    assert set(got) == expected


@settings(max_examples=15, deadline=None)
@given(texts_strategy, texts_strategy)
def test_near_duplicate_prefilter_loses_no_pair(train_texts, ref_texts):
    """MinHash on every pair and MinHash on the prefiltered candidates find the same pairs."""
    from sftdata.ops.leakcheck import _near_pairs, _reference_items, view_text_expr

    train = records(*[chat(t, "x", id=f"t{i}") for i, t in enumerate(train_texts)])
    near_copies = [t + " zeta" for t in train_texts[:2]] + ["eps " + t for t in train_texts[:2]]
    ref = refs(r=[chat(t, "x", id=f"r{i}") for i, t in enumerate(ref_texts + near_copies)])
    result = leakcheck(train, ref, frequent_cutoff=1000)
    prefiltered = {
        (m["train_id"], m["ref_id"]) for m in result.matches.iter_rows(named=True)
        if "near" in json.loads(m["evidence"])
    }
    items = _reference_items(ref, view_text_expr("prompt"))
    items = items.with_columns(pl.Series("words", Corpus.from_texts(items["text"]).lengths))
    every = pl.DataFrame({"row": range(train.height)}).join(
        items.filter(pl.col("words") >= 5).select("ref"), how="cross"
    ).cast(pl.Int64)
    texts = train.select(view_text_expr("prompt").alias("text"))["text"]
    full = _near_pairs(texts, items, every, 0.8, 128, 1, 1)
    assert prefiltered == {(f"t{r}", items["ref_id"][ref]) for r, ref in full.select("row", "ref").rows()}


def test_an_item_repeated_in_the_benchmark_keeps_its_ngrams():
    ref = refs(bench=[chat(NATALIA, "72", id=f"g{i:02d}") for i in range(12)])
    edited = "Solve: " + NATALIA.replace("half", "a third")  # no exact match: n-grams must do it
    result = leakcheck(records(chat(edited, "x", id="a")), ref, frequent_cutoff=10, near=False)
    assert result.contaminated_ids == ["a"]
    assert set(result.matches["kind"]) == {"ngram"} and result.matches.height == 12


def test_drop_until_clean_catches_what_dropping_makes_rare_again():
    from sftdata.ops.leakcheck import drop_until_clean

    words13 = " ".join(NATALIA.split()[:13])
    filler = " ".join(f"unrelated{i}" for i in range(30))
    train = records(
        chat(NATALIA, "72", id="copy"),  # exact: caught by the first check
        chat(f"{words13} {filler}", "x", id="echo1"),  # share one 13-gram with the item: with
        chat(f"{filler} {words13}", "y", id="echo2"),  # "copy" it is in 3 texts > cutoff 2
        chat("Name a colour.", "Red.", id="clean"),
    )
    params = dict(frequent_cutoff=2, min_overlap=0.4)
    assert leakcheck(train, bench(), **params).contaminated_ids == ["copy"]
    outcome = drop_until_clean(train, bench(), **params)
    assert outcome.clean and len(outcome.rounds) == 3  # drop, drop, confirm
    assert outcome.kept["id"].to_list() == ["clean"]
    assert outcome.first_dropped == 1
    assert outcome.dropped["id"].to_list() == ["copy", "echo1", "echo2"]
    assert outcome.dropped["reason"][1].endswith(
        "(round 2: boilerplate no longer once the records of round 1 were dropped)")
    assert leakcheck(outcome.kept, bench(), **params).contaminated_ids == []
    assert outcome.kept.height + outcome.dropped.height == train.height


# --------------------------------------------------------------------------- boilerplate templates

def ag_stories(count: int, seed: int) -> list[str]:
    return made_up_stories(count, seed, words=(6, 30))


def ag_records(stories: list[str], prefix: str) -> pl.DataFrame:
    return records(*[chat(AG_TEMPLATE + s, "World", id=f"{prefix}{i}")
                     for i, s in enumerate(stories)])


def test_shared_template_is_not_evidence():
    stories = ag_stories(260, seed=7)
    train, bench_items = ag_records(stories[:200], "t"), ag_records(stories[200:], "b")
    result = leakcheck(train, {"agnews": bench_items})
    assert result.contaminated_ids == [] and result.low_confidence_ids == []
    assert result.matches.height == 0
    assert result.summary["frequent_ngrams_ignored"] >= 1
    assert result.summary["boilerplate_windows_ignored"] >= 1
    assert result.summary["parameters"]["frequent_cutoff"] == 10


def test_copied_story_under_the_template_is_still_found():
    stories = ag_stories(260, seed=7)
    copied = stories[230]
    train = ag_records([*stories[:200], copied], "t")
    # under another wrapper too: only the story's own n-grams can find it
    long_story = " ".join(ag_stories(1, seed=99)[0].split()[:1]) + " " + " ".join(
        f"x{i}" for i in range(20))
    train = pl.concat([train, records(chat("Summarize: " + long_story, "ok", id="w1"))])
    bench_items = ag_records([*stories[200:], long_story], "b")
    result = leakcheck(train, {"agnews": bench_items})
    assert result.contaminated_ids == ["t200", "w1"]
    assert result.low_confidence_ids == []
    w1 = result.matches.filter(pl.col("train_id") == "w1").row(0, named=True)
    assert w1["kind"] == "ngram" and w1["confidence"] == "high"
    # coverage counts the story's words, not the template's
    assert json.loads(w1["evidence"])["ngram"]["coverage"] == 1.0
