"""tokenize and leakcheck within a memory budget on the local engine: an input over --memory is
read in pieces (engines/bounded.py) and gives the same bytes, report and exit as read whole."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from test_engines import corpus

from sftdata.cli import cli

TINY_HF = str(Path(__file__).resolve().parents[1] / "fixtures/tokenizers/tiny-chatml")


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """2,500 rendered records (about 1.3 MiB) in 250-row groups: over 1 MiB / 4."""
    tmp = tmp_path_factory.mktemp("bounded-cmds")
    records = tmp / "records.parquet"
    corpus(2500, seed=21).write_parquet(records, row_group_size=250)
    out = tmp / "rendered.parquet"
    got = run("render-template", "-t", "chatml", str(records), "-o", str(out))
    assert got.exit_code == 0, got.output
    pl.read_parquet(out).write_parquet(out, row_group_size=250)
    return records, out


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_tokenize_in_pieces_gives_the_same_bytes_and_report(rendered, tmp_path, fmt):
    _, path = rendered
    if fmt == "jsonl":
        pl.read_parquet(path).write_ndjson(tmp_path / "in.jsonl")
        path = tmp_path / "in.jsonl"
    outs = {}
    for label, extra in (("whole", []), ("pieces", ["--memory", "1MiB"])):
        out, report = tmp_path / f"{label}.parquet", tmp_path / f"{label}.json"
        got = run("tokenize", "-t", TINY_HF, str(path), "-o", str(out), "--max-len", "64",
                  "--report", str(report), *extra)
        assert got.exit_code == 0, got.output
        assert ("reading it in" in got.stderr) == (label == "pieces")
        outs[label] = (out.read_bytes(), json.loads(report.read_text()), got.stdout)
    assert outs["whole"] == outs["pieces"]


def test_tokenize_error_in_a_piece_names_the_row_of_the_input(rendered, tmp_path):
    _, path = rendered
    frame = pl.read_parquet(path)
    bad = frame.with_columns(text=pl.when(pl.int_range(pl.len()) == 1800).then(None)
                             .otherwise(pl.col("text")))
    bad_path = tmp_path / "bad.parquet"
    bad.write_parquet(bad_path, row_group_size=250)
    messages = []
    for extra in ([], ["--memory", "1MiB"]):
        got = run("tokenize", "-t", TINY_HF, str(bad_path), "-o", str(tmp_path / "o.parquet"),
                  *extra)
        messages.append((got.exit_code, got.stderr.splitlines()[-1]))
    assert messages[0] == messages[1], messages
    assert messages[0][0] == 1 and str(bad_path) in messages[0][1]


@pytest.fixture(scope="module")
def leak_files(rendered, tmp_path_factory):
    records, _ = rendered
    tmp = tmp_path_factory.mktemp("leak")
    train = pl.read_parquet(records)
    bench = train.slice(1200, 40).with_columns(id=pl.format("b{}", pl.int_range(pl.len())))
    bench_path = tmp / "bench.jsonl"
    bench.write_ndjson(bench_path)
    return records, bench_path


def test_leakcheck_in_pieces_gives_the_same_report_and_drop(leak_files, tmp_path):
    train, bench = leak_files
    seen = {}
    for label, extra in (("whole", []), ("pieces", ["--memory", "1MiB"])):
        (tmp_path / label).mkdir()
        out, rejects = tmp_path / label / "out.parquet", tmp_path / label / "rejects.parquet"
        report = tmp_path / label / "report.json"
        got = run("leakcheck", str(train), "--against", str(bench), "--on", "response",
                  "--report", str(report), "--drop", "-o", str(out), "--rejects", str(rejects),
                  *extra)
        assert got.exit_code == 0, got.output
        assert ("reading it in" in got.stderr) == (label == "pieces")
        lines = [ln.replace(str(tmp_path / label), "DIR") for ln in got.stderr.splitlines()
                 if "--memory" not in ln]
        seen[label] = (out.read_bytes(), rejects.read_bytes(), json.loads(report.read_text()),
                       lines)
    assert seen["whole"] == seen["pieces"]
    assert pl.read_parquet(tmp_path / "whole" / "rejects.parquet").height >= 40


def test_leakcheck_fail_on_in_pieces_exits_1_like_whole(leak_files):
    train, bench = leak_files
    codes = [run("leakcheck", str(train), "--against", str(bench), "--on", "response",
                 "--fail-on", "0",
                 *extra).exit_code for extra in ([], ["--memory", "1MiB"])]
    assert codes == [1, 1]


def test_tokenize_stdin_and_a_jsonl_dataset_in_pieces(rendered, tmp_path):
    _, path = rendered
    frame = pl.read_parquet(path)
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.slice(0, 1200).write_ndjson(folder / "a.jsonl")
    frame.slice(1200).write_ndjson(folder / "b.jsonl")
    raw = (folder / "a.jsonl").read_bytes() + (folder / "b.jsonl").read_bytes()
    base = ["tokenize", "-t", TINY_HF, "--max-len", "64", "--to", "jsonl"]
    outs = []
    for source, stdin in (("-", raw), (str(folder), None)):
        for extra in ([], ["--memory", "1MiB"]):
            got = run(*base, source, *extra, input=stdin)
            assert got.exit_code == 0, got.output
            assert ("reading it in" in got.stderr) == bool(extra)
            outs.append(got.stdout_bytes)
    assert len(set(outs)) == 1 and outs[0]
