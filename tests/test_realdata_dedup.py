"""Real data: LLaMA-Factory's Alpaca demo, duplicated with light edits, is deduplicated back."""

from __future__ import annotations

import json
import random

import pytest

from sftdata.ops.dedup import dedup
from sftdata.schema import from_dicts

pytestmark = pytest.mark.realdata


def alpaca_records(realdata) -> list[dict]:
    path = realdata / "datasets/alpaca_format/llamafactory_alpaca_en_demo.json"
    rows = []
    for i, item in enumerate(json.loads(path.read_text())):
        prompt = "\n\n".join(p for p in (item["instruction"], item.get("input") or "") if p)
        rows.append({"id": f"alpaca-{i}", "messages": [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": item["output"]},
        ]})
    return rows


def light_copy(row: dict, rng: random.Random, kind: str) -> dict:
    user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    if kind == "respaced":  # exact duplicate once case and whitespace are normalized
        answer = "  " + answer.replace(" ", "  ").upper() + "\n"
        user = user.lower()
    else:  # one word of a long answer replaced: a near duplicate
        tokens = answer.split(" ")
        tokens[rng.randrange(len(tokens))] = "banana"
        answer = " ".join(tokens)
    return {"id": row["id"] + "-" + kind, "messages": [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer},
    ]}


def test_alpaca_demo_with_planted_copies_is_deduplicated_back(realdata):
    originals = alpaca_records(realdata)
    rng = random.Random(0)
    long_ones = [r for r in originals if len(r["messages"][1]["content"].split()) >= 150]
    assert len(long_ones) >= 100
    copies = [light_copy(r, rng, "respaced") for r in long_ones[:50]]
    copies += [light_copy(r, rng, "edited") for r in long_ones[50:100]]
    mixed = originals + copies  # the copies come later, so keep=first keeps the originals

    baseline = dedup(from_dicts(originals))  # what the demo file itself holds
    assert (baseline.dropped_exact, baseline.dropped_near) == (14, 0)  # 14 repeated rows in it
    result = dedup(from_dicts(mixed))

    assert set(result.kept["id"]) == set(baseline.kept["id"])
    dropped = dict(zip(result.dupes["id"], result.dupes["reason"], strict=True))
    for copy in copies:
        original_id = copy["id"].rsplit("-", 1)[0]
        assert dropped[copy["id"]] == ("exact" if copy["id"].endswith("respaced") else "near")
        kept_id = result.dupes.filter(result.dupes["id"] == copy["id"])["kept_id"][0]
        assert kept_id == original_id or original_id in set(baseline.dupes["id"])
    assert result.dropped == baseline.dropped + len(copies)
