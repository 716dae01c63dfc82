"""Shared test helpers: where the real data lives, small record builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI must not turn red on a random draw: there the examples are derandomized (fixed per test).
# Locally each run explores new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
REALDATA = Path(os.environ.get("SFT_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture
def realdata() -> Path:
    """The shared real-data folder; tests that use it skip cleanly when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The tiny random Llama of the sfttrain tests (fixtures/models/tiny-llama), built once per
    test process; tests read it and never write into it."""
    from sfttrain_helpers import make_tiny_model  # imports torch: only for tests that ask

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def chat(*turns: str, **fields) -> dict:
    """A record from alternating user/assistant texts: chat("hi", "hello")."""
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return {"messages": messages, **fields}


# 13 words shared by every record: "template + first words of the story" is not leak evidence
AG_TEMPLATE = "Classify the topic of this news headline as World, Sports, Business or Sci/Tech.\n\n"


def made_up_stories(count: int, seed: int, words: tuple[int, int]) -> list[str]:
    """Different made-up news texts of `words` (low, high) words after an opener; many open
    with the same word, as AG News titles do ("Delta ...")."""
    import random

    rng = random.Random(seed)
    openers = [f"opener{i}" for i in range(80)]  # a few records each
    vocab = [f"w{i}" for i in range(3000)]
    return [" ".join([rng.choice(openers), *rng.sample(vocab, rng.randint(*words))])
            for _ in range(count)]
