"""A labelled near-duplicate set made from real text in ../shared/realdata.

Originals are real answers and documents (LLaMA-Factory's Alpaca demo, GPTeacher roleplay and
toolformer answers, OASST assistant replies, C4 sample documents), at least ``min_words`` long.
Originals that already resemble each other (exact Jaccard of word 5-grams >= 0.5) are pruned
first, so the only near duplicates in the set are the planted ones. Then a share of them get a
copy made by one of these edits:

  words       1-3% of the words substituted, deleted or duplicated
  reorder     two sentences swapped
  whitespace  spaces doubled, line breaks added or removed, some words re-cased
  mixed       whitespace changes plus 1-2% word edits

Labels are pairs (original, copy). Every other pair is a negative; the ``exact_jaccard`` of each
planted pair is recorded so a reader can see how hard each kind is.

Used by bench/bench_dedup.py (and importable by other benchmarks):

    from neardup_set import build_neardup_set
    data = build_neardup_set(Path("../shared/realdata"), seed=0)
    data.texts, data.pairs, data.kinds
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sftdata import minhash  # noqa: E402

EDIT_KINDS = ("words", "reorder", "whitespace", "mixed")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class NearDupSet:
    texts: list[str]
    sources: list[str]
    pairs: set[tuple[int, int]]  # planted near-duplicate pairs (i < j)
    kinds: dict[tuple[int, int], str] = field(default_factory=dict)
    exact_jaccard: dict[tuple[int, int], float] = field(default_factory=dict)

    def describe(self) -> str:
        by_source: dict[str, int] = {}
        for s in self.sources:
            by_source[s] = by_source.get(s, 0) + 1
        by_kind: dict[str, int] = {}
        for k in self.kinds.values():
            by_kind[k] = by_kind.get(k, 0) + 1
        js = np.array(list(self.exact_jaccard.values()))
        return (
            f"{len(self.texts)} texts ({', '.join(f'{k} {v}' for k, v in sorted(by_source.items()))}); "
            f"{len(self.pairs)} planted pairs ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))}); "
            f"exact Jaccard of planted pairs: median {np.median(js):.2f}, "
            f"{(js >= 0.8).mean():.0%} at or above 0.8"
        )


# --------------------------------------------------------------------------- real text


def _alpaca_outputs(path: Path) -> list[str]:
    return [row.get("output") or row.get("response") or "" for row in json.loads(path.read_text())]


def _oasst_replies(path: Path) -> list[str]:
    out: list[str] = []

    def walk(node: dict) -> None:
        if node.get("role") == "assistant" and node.get("text"):
            out.append(node["text"])
        for child in node.get("replies") or []:
            walk(child)

    for line in path.read_text().splitlines():
        if line.strip():
            walk(json.loads(line)["prompt"])
    return out


def real_texts(realdata: Path, min_words: int = 40) -> list[tuple[str, str]]:
    """(source, text) for every real text of at least ``min_words`` words, exact copies removed."""
    ds = realdata / "datasets"
    groups = {
        "alpaca": _alpaca_outputs(ds / "alpaca_format/llamafactory_alpaca_en_demo.json"),
        "roleplay": _alpaca_outputs(ds / "alpaca_format/alpacacleaned_gpteacher_roleplay_deduped.json"),
        "toolformer": _alpaca_outputs(ds / "alpaca_format/alpacacleaned_gpteacher_toolformer_sim0.6.json"),
        "oasst": _oasst_replies(ds / "oasst_trees/oasst_en_100_tree.jsonl"),
        "c4": [
            json.loads(line)["text"]
            for line in (ds / "pretrain_text/llamafactory_c4_demo.jsonl").read_text().splitlines()
            if line.strip()
        ],
    }
    seen: set[str] = set()
    out = []
    for source, texts in groups.items():
        for text in texts:
            key = " ".join(text.split()).casefold()
            if len(text.split()) >= min_words and key not in seen:
                seen.add(key)
                out.append((source, text))
    return out


def prune_similar(texts: list[str], threshold: float = 0.5, ngram: int = 5) -> list[int]:
    """Indices of texts to keep so that no two kept texts reach ``threshold`` exact Jaccard."""
    sigs = minhash.signatures(texts, num_perm=128, ngram=ngram, workers=1)
    bands, rows = minhash.optimal_bands(threshold, 128, 0.1, 0.9)  # lean to recall: prune more
    drop: set[int] = set()
    shingle_sets = {}
    for i, j in minhash.candidate_pairs(sigs, bands, rows).tolist():
        if i in drop or j in drop:
            continue
        for k in (i, j):
            if k not in shingle_sets:
                shingle_sets[k] = set(minhash.shingles(texts[k], ngram))
        if minhash.jaccard(shingle_sets[i], shingle_sets[j]) >= threshold:
            drop.add(j)
    return [i for i in range(len(texts)) if i not in drop]


# --------------------------------------------------------------------------- edits


def edit_words(text: str, rng: random.Random, rate: float) -> str:
    tokens = text.split(" ")
    count = max(1, round(len(tokens) * rate))
    for _ in range(count):
        i = rng.randrange(len(tokens))
        op = rng.choice(("substitute", "delete", "duplicate"))
        if op == "substitute":
            tokens[i] = rng.choice(tokens)
        elif op == "delete" and len(tokens) > 1:
            del tokens[i]
        else:
            tokens.insert(i, tokens[i])
    return " ".join(tokens)


def reorder_sentences(text: str, rng: random.Random) -> str:
    sentences = _SENTENCE_END.split(text.strip())
    if len(sentences) < 3:
        return edit_words(text, rng, 0.02)  # too short to reorder: fall back to word edits
    i, j = rng.sample(range(len(sentences)), 2)
    sentences[i], sentences[j] = sentences[j], sentences[i]
    return " ".join(sentences)


def change_whitespace(text: str, rng: random.Random) -> str:
    out = []
    for token in re.split(r"(\s+)", text):
        if token.isspace():
            token = rng.choice([token, token, "  ", "\n", " \n "])
        elif token and rng.random() < 0.1:
            token = token.upper() if rng.random() < 0.5 else token.capitalize()
        out.append(token)
    return "".join(out)


def perturb(text: str, kind: str, rng: random.Random) -> str:
    if kind == "words":
        return edit_words(text, rng, rng.uniform(0.01, 0.03))
    if kind == "reorder":
        return reorder_sentences(text, rng)
    if kind == "whitespace":
        return change_whitespace(text, rng)
    if kind == "mixed":
        return edit_words(change_whitespace(text, rng), rng, rng.uniform(0.01, 0.02))
    raise ValueError(f"unknown edit kind {kind!r}; choose one of {', '.join(EDIT_KINDS)}")


# --------------------------------------------------------------------------- the set


def build_neardup_set(
    realdata: Path, *, copy_share: float = 0.3, limit: int | None = None, seed: int = 0,
    ngram: int = 5,
) -> NearDupSet:
    """Real originals plus planted copies of ``copy_share`` of them, in a seeded shuffled order."""
    rng = random.Random(seed)
    found = real_texts(realdata)
    rng.shuffle(found)
    if limit is not None:
        found = found[:limit]
    keep = prune_similar([t for _, t in found], ngram=ngram)
    originals = [found[i] for i in keep]

    # (source, text, item index of the original it copies, edit kind)
    items: list[tuple[str, str, int | None, str | None]] = []
    for source, text in originals:
        items.append((source, text, None, None))
        if rng.random() < copy_share:
            kind = EDIT_KINDS[len(items) % len(EDIT_KINDS)]
            items.append((source, perturb(text, kind, rng), len(items) - 1, kind))
    order = list(range(len(items)))
    rng.shuffle(order)  # copies must not sit next to their originals
    position = {item: pos for pos, item in enumerate(order)}

    texts = [items[i][1] for i in order]
    sources = [items[i][0] for i in order]
    pairs: set[tuple[int, int]] = set()
    kinds: dict[tuple[int, int], str] = {}
    jac: dict[tuple[int, int], float] = {}
    for item, (_, _, original, kind) in enumerate(items):
        if original is not None:
            a, b = position[item], position[original]
            pair = (min(a, b), max(a, b))
            pairs.add(pair)
            kinds[pair] = kind or ""
    for (i, j) in pairs:
        jac[(i, j)] = minhash.jaccard(minhash.shingles(texts[i], ngram), minhash.shingles(texts[j], ngram))
    return NearDupSet(texts, sources, pairs, kinds, jac)


def pair_scores(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Precision, recall and F1 of predicted duplicate pairs against the planted pairs."""
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": len(predicted)}


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2] / "shared" / "realdata"
    print(build_neardup_set(root).describe())
