"""`sftdata inspect` through the CLI: manifest summary, decoded sequences with trained tokens."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from test_pack import TINY, template_json, tiny_tokenizer

from sftdata.cli import cli
from sftdata.shards import LABEL_PAD


def encode_chat(tok, user: str, answer: str) -> tuple[list[int], list[int]]:
    """ChatML ids with the assistant answer and its <|im_end|> trained."""
    prompt = tok.encode(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n").ids
    trained = tok.encode(f"{answer}<|im_end|>").ids
    ids = prompt + trained
    return ids, [LABEL_PAD] * len(prompt) + trained


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    chats = [("hi", "hello there"), ("name a colour", "blue"), ("2+2?", "4")]
    rows = [encode_chat(tok, u, a) for u, a in chats]
    frame = pl.DataFrame(
        {
            "id": ["greet", "colour", "sum"],
            "input_ids": [r[0] for r in rows],
            "labels": [r[1] for r in rows],
            "tokenizer": [json.dumps(tiny_tokenizer())] * 3,
            "template": [template_json()] * 3,
        }
    )
    root = tmp_path_factory.mktemp("inspect")
    frame.write_parquet(root / "tokens.parquet")
    out = root / "shards"
    result = CliRunner().invoke(cli, ["pack", str(root / "tokens.parquet"), "-o", str(out),
                                      "--seq-len", "64"])
    assert result.exit_code == 0, result.output
    return out


def run(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_help_has_summary_and_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Show a shard directory's manifest and which tokens of a sequence are trained." in (
        result.output
    )
    assert "sftdata inspect shards/ --index 0 --tokenizer tok/" in result.output


def test_summary_shows_identity_and_efficiency_per_split(shards):
    result = run(shards)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{shards}  (sftdata-shards v1, sftdata 0.1.0)"
    assert lines[1].startswith("tokenizer  hf tiny-chatml  vocab 512  hash ")
    assert "template   chatml  hash " in result.stdout
    assert lines[-2].split() == [
        "split", "files", "sequences", "documents", "tokens", "supervised_tokens", "efficiency"
    ]
    cells = lines[-1].split()
    assert cells[:4] == ["train", "1", "1", "3"]
    assert cells[-1] == f"{int(cells[4]) / 64:.2%}"


def test_decoded_sequence_marks_trained_tokens_and_documents(shards):
    result = run(shards, "--index", 0, "--tokenizer", TINY)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the tokenizer is the one the shards were made with
    text = result.stdout.split("\ntrain[0]: ", 1)[1]
    assert "(trained tokens inside [[ ]])" in text.splitlines()[0]
    assert "--- document 1/3  record greet" in text
    assert "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n[[hello there<|im_end|>]]" in text
    assert "assistant\n[[blue<|im_end|>]]" in text
    assert "--- document 3/3  record sum" in text


def test_without_a_tokenizer_ids_are_shown_and_json_has_segments(shards):
    result = run(shards, "--index", 0, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["summary"]["splits"]["train"]["documents"] == 3
    docs = out["sequence"]["documents"]
    assert [d["record_id"] for d in docs] == ["greet", "colour", "sum"]
    trained = [s for s in docs[0]["segments"] if s["trained"]]
    assert len(trained) == 1 and "text" not in trained[0]
    plain = run(shards, "--index", 0)
    assert "[[" + " ".join(map(str, trained[0]["ids"])) + "]]" in plain.stdout


def test_color_on_request(shards):
    result = run(shards, "--index", 0, "--tokenizer", TINY, "--color")
    assert "\x1b[1;32mhello there<|im_end|>\x1b[0m" in result.stdout


def test_a_different_tokenizer_is_warned_about(shards, realdata):
    result = run(shards, "--index", 0, "--tokenizer", realdata / "tokenizers/gpt2/tokenizer.json")
    assert result.exit_code == 0
    assert "is not the tokenizer these shards were made with" in result.stderr


def test_a_tiktoken_file_decodes_bytes_and_warns_about_the_backend(shards):
    ranks = TINY.parent / "tiny.tiktoken"  # the tokenize fixture
    if not ranks.exists():
        pytest.skip("fixtures/tokenizers/tiny.tiktoken not built")
    result = run(shards, "--index", 0, "--tokenizer", ranks)
    assert result.exit_code == 0, result.output
    assert "is a tiktoken tokenizer; these shards were made with a hf one (tiny-chatml)" in (
        result.stderr
    )
    assert "--- document 1/3  record greet" in result.stdout


def test_usage_and_data_errors(shards, tmp_path):
    result = run(shards, "--index", 5)
    assert result.exit_code == 2
    assert "Error: --index 5: split 'train' has 1 sequences (0..0)" in result.output
    result = run(shards, "--split", "val")
    assert result.exit_code == 2
    assert f"Error: --split val: no such split in {shards} (have: train)" in result.output
    result = run(shards, "--tokenizer", TINY)
    assert result.exit_code == 2
    assert "Error: --tokenizer is only used with --index." in result.output
    result = run(tmp_path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path}: no manifest.json, so not a `sftdata pack` output (the directory is "
        "empty). Fix: run `sftdata pack TOKENS -o DIR` again and point at DIR\n"
    )


def test_verify_reports_changed_files(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    assert "checksums  every file matches the manifest" in run(copy, "--verify").stdout
    shard = copy / "train" / "00000.arrow"
    shard.write_bytes(shard.read_bytes() + b"\0")
    result = run(copy, "--verify")
    assert result.exit_code == 1
    assert "00000.arrow: checksum differs from the manifest" in result.output
