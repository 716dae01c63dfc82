"""`sftdata pack` through the CLI: exit codes, exact messages, shard directories, determinism."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from test_pack import tokenized

from sftdata.cli import cli
from sftdata.shards import ShardReader, read_manifest


def run(*args, input=None):
    return CliRunner().invoke(cli, ["pack", *map(str, args)], input=input)


@pytest.fixture
def records(tmp_path):
    path = tmp_path / "tokens.jsonl"
    tokenized([30, 12, 50, 7, 64, 20, 9, 33], split=["train"] * 6 + ["val"] * 2).write_ndjson(path)
    return path


def test_help_has_summary_and_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Pack tokenized records into fixed-length training shards." in result.output
    assert "| sftdata pack --seq-len 2048 -o shards/" in result.output


def test_pack_writes_shards_manifest_and_report(records, tmp_path):
    out = tmp_path / "shards"
    result = run(records, "-o", out, "--seq-len", 64)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # data goes to the directory, the report to stderr
    assert f"pack: 8 rows in -> 8 packed, 0 dropped (bfd, seq_len 64) -> {out}" in result.stderr
    assert "  val: 1 sequences, 2 documents, 42 tokens" in result.stderr
    manifest = read_manifest(out)
    assert list(manifest["splits"]) == ["train", "val"]
    train = manifest["splits"]["train"]
    assert (train["documents"], train["tokens"]) == (6, 183)
    assert train["efficiency"] == round(183 / (64 * train["sequences"]), 6)
    assert manifest["packing"]["strategy"] == "bfd"
    reader = ShardReader(out, "val", verify=True)
    assert sorted(r for row in reader for r in row["record_ids"]) == ["r00006", "r00007"]
    assert not list(tmp_path.glob(".shards.*"))  # no temporary directory left behind


def test_same_input_gives_byte_identical_shards_from_jsonl_and_parquet(records, tmp_path):
    parquet = tmp_path / "tokens.parquet"
    pl.read_ndjson(records).write_parquet(parquet)
    for name, src in (("a", records), ("b", records), ("c", parquet)):
        assert run(src, "-o", tmp_path / name, "--seq-len", 64).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for other in ("b", "c"):
        for rel in files:
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / other / rel).read_bytes(), rel


def test_stdin_pipe_and_no_pack(records, tmp_path):
    out = tmp_path / "padded"
    result = run("-o", out, "--seq-len", 64, "--no-pack", input=records.read_text())
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["packing"]["strategy"] == "none"
    assert manifest["splits"]["train"]["sequences"] == 6


def test_flag_combinations_and_existing_output_are_usage_errors(records, tmp_path):
    result = run(records, "-o", tmp_path / "s", "--no-pack", "--strategy", "ffd")
    assert result.exit_code == 2
    assert "Error: --no-pack and --strategy cannot be used together." in result.output
    result = run(records, "-o", tmp_path / "s", "--seq-len", 0)
    assert result.exit_code == 2
    assert "Error: --seq-len must be at least 1, got 0." in result.output
    result = run(records, "-o", tmp_path / "s", "--seq-len", 10_000_000_000)  # L25: cost 2.1 GB
    assert result.exit_code == 2
    assert "Error: --seq-len must be at most 16,777,216 (2**24), got 10000000000." in result.output
    result = run(records)
    assert result.exit_code == 2
    assert "Missing option '-o' / '--output'" in result.output


def test_refuses_a_non_empty_directory_without_force(records, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = run(records, "-o", out, "--seq-len", 64)
    assert result.exit_code == 2
    assert f"Error: {out} exists and is not empty; pass --force to replace it." in result.output
    assert (out / "keep.txt").exists()
    result = run(records, "-o", out, "--seq-len", 64, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists()
    assert (out / "manifest.json").exists()


def test_truncation_fail_is_a_data_error_naming_the_row(records, tmp_path):
    out = tmp_path / "shards"
    result = run(records, "-o", out, "--seq-len", 40, "--truncation", "fail")
    assert result.exit_code == 1
    assert (
        f"Error: {records}, row 3: field 'input_ids': record 'r00002' has 50 tokens, longer than "
        "--seq-len 40 (2 rows are). Fix: raise --seq-len"
    ) in result.output
    assert not out.exists()  # nothing half-written


def test_dropped_rows_are_reported_and_written_with_reasons(records, tmp_path):
    rejects = tmp_path / "dropped.jsonl"
    result = run(records, "-o", tmp_path / "s", "--seq-len", 40, "--truncation", "drop",
                 "--rejects", rejects)
    assert result.exit_code == 0, result.output
    assert "pack: 8 rows in -> 6 packed, 2 dropped" in result.stderr
    assert "  dropped 2 rows: too long" in result.stderr
    dropped = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dropped] == [
        ("r00002", "50 tokens, longer than --seq-len 40 (--truncation drop)"),
        ("r00004", "64 tokens, longer than --seq-len 40 (--truncation drop)"),
    ]
    assert dropped[0]["input_ids"]  # the whole row, so it can be fixed and re-run


def test_nothing_left_to_pack_is_a_data_error_and_rejects_are_still_written(tmp_path):
    path = tmp_path / "tokens.jsonl"
    tokenized([30, 40], prompt_lens=[20, 30]).write_ndjson(path)
    rejects = tmp_path / "dropped.jsonl"
    result = run(path, "-o", tmp_path / "s", "--seq-len", 16, "--rejects", rejects)
    assert result.exit_code == 1
    assert (
        f"Error: {path}: all 2 rows were dropped (no_supervised_after_truncation 2); nothing to "
        "pack. Fix: raise --seq-len or change --truncation"
    ) in result.output
    assert len(rejects.read_text().splitlines()) == 2
    assert not (tmp_path / "s").exists()


def test_right_truncation_reports_rows_and_lost_supervision(records, tmp_path):
    result = run(records, "-o", tmp_path / "s", "--seq-len", 40)
    assert result.exit_code == 0, result.output
    assert "  truncated (right): 2 rows, 34 supervised tokens lost" in result.stderr
    assert read_manifest(tmp_path / "s")["packing"]["supervised_tokens_lost"] == 34


def test_input_that_is_not_tokenized_is_a_data_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "messages": []}\n')
    result = run(path, "-o", tmp_path / "s")
    assert result.exit_code == 1
    assert (
        f"Error: {path}: not tokenized records: missing column(s) input_ids, labels, tokenizer. "
        "Fix: run the records through `sftdata render-template | sftdata tokenize` first"
    ) in result.output


def test_render_tokenize_pack_inspect_end_to_end(tmp_path):
    from conftest import FIXTURES, chat

    from sftdata.schema import from_dicts

    tiny = FIXTURES / "tokenizers" / "tiny-chatml"
    records = from_dicts(
        [chat("hi", "hello there", split="train"), chat("name a colour", "blue", split="train"),
         chat("2+2?", "4", "and 3+3?", "6", split="val")]
    )
    runner = CliRunner()
    rendered = runner.invoke(cli, ["render-template", "-t", "chatml"], input=records.write_ndjson())
    assert rendered.exit_code == 0, rendered.output
    tokens = runner.invoke(cli, ["tokenize", "-t", str(tiny)], input=rendered.stdout)
    assert tokens.exit_code == 0, tokens.output
    out = tmp_path / "shards"
    packed = runner.invoke(cli, ["pack", "-o", str(out), "--seq-len", "128"], input=tokens.stdout)
    assert packed.exit_code == 0, packed.output
    assert "Warning" not in packed.stderr  # template text resolved, pad token known
    manifest = read_manifest(out)
    assert manifest["template"]["name"] == "chatml" and "<|im_start|>" in manifest["template"]["text"]
    assert manifest["splits"]["val"]["documents"] == 1
    tokenized_rows = [json.loads(line) for line in tokens.stdout.splitlines()]
    assert manifest["splits"]["train"]["supervised_tokens"] == sum(
        r["n_supervised"] for r in tokenized_rows if r["split"] == "train"
    )
    shown = runner.invoke(cli, ["inspect", str(out), "--split", "val", "--index", "0",
                                "--tokenizer", str(tiny)])
    assert shown.exit_code == 0, shown.output
    assert "assistant\n[[4<|im_end|>]]\n<|im_start|>user\nand 3+3?<|im_end|>" in shown.stdout
