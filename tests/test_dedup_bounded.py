"""dedup within a memory budget (engines/dedup_bounded.py): read a unit at a time, the same
kept rows, dupes, clusters, similarities and counts as the whole-frame op, for every option."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal
from test_engines import corpus

from sftdata import datasets
from sftdata.cli import cli
from sftdata.engines.bounded import Cost, plan_within
from sftdata.engines.dedup_bounded import dedup as dedup_bounded
from sftdata.io import write_table
from sftdata.ops.dedup import dedup as dedup_whole

COUNTS = ("rows_in", "kept_rows", "dropped_exact", "dropped_near", "clusters", "not_compared",
          "bands", "rows_per_band", "candidate_pairs", "rejected_pairs")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """400 records (exact copies, near copies, chains) in a Parquet file of 40-row groups."""
    df = corpus(400, seed=11)
    path = tmp_path_factory.mktemp("bounded") / "records.parquet"
    df.write_parquet(path, row_group_size=40)
    return df, path


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """8,000 records (2.6 MiB uncompressed) in 250-row groups: 3 pieces of the smallest size
    (1 MiB) under the smallest budget."""
    path = tmp_path_factory.mktemp("bounded") / "big.parquet"
    corpus(8000, seed=12).write_parquet(path, row_group_size=250)
    return path


OPTIONS = [
    {},
    {"approx": True},
    {"mode": "exact"},
    {"mode": "near"},
    {"keep": "longest"},
    {"keep": "score"},
    {"on": "prompt"},
    {"punctuation": True, "threshold": 0.7},
    {"unit": "char", "ngram": 5},
]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_unit_by_unit_equals_the_whole_frame(records, tmp_path, opts):
    df, path = records
    whole = dedup_whole(df, **opts)
    units = datasets.units(str(path), unit_rows=90)  # 5 units of 80-120 rows
    assert len(units) > 3
    spill = tmp_path / "spill"
    spill.mkdir()
    got = dedup_bounded(units, spill, **opts)
    parts = list(got.parts)
    kept = pl.concat([k for k, _ in parts])
    dupes = pl.concat([d for _, d in parts])
    assert_frame_equal(kept, whole.kept)
    assert_frame_equal(dupes, whole.dupes)
    assert whole.dropped > 0 or opts.get("on") == "prompt"
    for name in COUNTS:
        assert getattr(got, name) == getattr(whole, name), name


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["dedup", *args], input=input)


def test_cli_memory_budget_gives_the_same_bytes_and_leaves_no_scratch(big, tmp_path,
                                                                      monkeypatch):
    path = big
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    a = run(str(path), "-o", str(tmp_path / "a.parquet"), "--dupes", str(tmp_path / "da.parquet"))
    b = run(str(path), "-o", str(tmp_path / "b.parquet"), "--dupes", str(tmp_path / "db.parquet"),
            "--memory", "1MiB")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert "over --memory 1.0 MiB: reading it in 3 pieces" in b.output
    assert "over --memory" not in a.output
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert (tmp_path / "da.parquet").read_bytes() == (tmp_path / "db.parquet").read_bytes()
    assert list(scratch.iterdir()) == []


def test_cli_jsonl_on_stdin_spills_and_gives_the_same_bytes(big, tmp_path):
    df = pl.read_parquet(big)
    data = tmp_path / "in.jsonl"
    write_table(df, data)
    raw = data.read_bytes()
    a = run("-", "--dupes", str(tmp_path / "da.jsonl"), input=raw)
    b = run("-", "--dupes", str(tmp_path / "db.jsonl"), "--memory", "1MiB", input=raw)
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert "over --memory" in b.stderr and "over --memory" not in a.stderr
    assert a.stdout_bytes == b.stdout_bytes and a.stdout_bytes
    assert (tmp_path / "da.jsonl").read_bytes() == (tmp_path / "db.jsonl").read_bytes()


def test_jsonl_over_the_budget_spills_into_units_that_keep_file_and_row(big, tmp_path):
    df = pl.read_parquet(big)
    data = tmp_path / "in.jsonl"
    write_table(df, data)
    spill = tmp_path / "spill"
    spill.mkdir()
    within = plan_within(str(data), 1 << 20, Cost(3.0, min_unit=1), spill)  # 128 KiB pieces
    assert within.streamed and within.rows == df.height and len(within.units) > 4
    assert all(u.name == str(data) for u in within.units)
    starts = [u.first_row for u in within.units]
    assert starts[0] == 0 and starts == sorted(starts)
    frames = [datasets.read_unit(u) for u in within.units]
    assert starts[1:] == list(np.cumsum([f.height for f in frames])[:-1])
    assert_frame_equal(pl.concat(frames), df, check_dtypes=False)


def test_error_in_a_spilled_jsonl_names_the_file_and_line(big, tmp_path):
    data = tmp_path / "in.jsonl"
    write_table(pl.read_parquet(big), data)
    lines = data.read_bytes().splitlines(keepends=True)
    lines[2000] = b'{"id": "broken", "messages": [\n'
    data.write_bytes(b"".join(lines))
    got = run(str(data), "-o", str(tmp_path / "out.jsonl"), "--memory", "1MiB")
    assert got.exit_code == 1, got.output
    assert f"{data}" in got.output and "line 2001" in got.output
    assert "Traceback" not in got.output and not (tmp_path / "out.jsonl").exists()


def test_dataset_parts_with_different_columns_align_like_the_whole_read(big, tmp_path):
    df = pl.read_parquet(big)
    folder = tmp_path / "parts"
    folder.mkdir()
    df.slice(0, 3000).drop("score").write_parquet(folder / "a.parquet")
    df.slice(3000).write_parquet(folder / "b.parquet")
    a = run(str(folder), "-o", str(tmp_path / "a.parquet"))
    b = run(str(folder), "-o", str(tmp_path / "b.parquet"), "--memory", "1MiB")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert "over --memory" in b.output
    assert_frame_equal(pl.read_parquet(tmp_path / "a.parquet"),
                       pl.read_parquet(tmp_path / "b.parquet"))


@pytest.mark.parametrize("keep", ["score", "longest"])
def test_keep_column_missing_from_some_parts_is_null_there_as_in_the_whole_read(big, tmp_path,
                                                                               keep):
    df = pl.read_parquet(big)
    folder = tmp_path / "parts"
    folder.mkdir()
    df.slice(0, 5000).write_parquet(folder / "a.parquet")
    df.slice(5000).drop("score").write_parquet(folder / "b.parquet")
    args = [str(folder), "--keep", keep, "--dupes"]
    a = run(*args, str(tmp_path / "da.parquet"), "-o", str(tmp_path / "a.parquet"))
    b = run(*args, str(tmp_path / "db.parquet"), "-o", str(tmp_path / "b.parquet"),
            "--memory", "1MiB")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert "over --memory" in b.output
    for name in ("a", "da"):
        other = name.replace("a", "b")
        assert_frame_equal(pl.read_parquet(tmp_path / f"{name}.parquet"),
                           pl.read_parquet(tmp_path / f"{other}.parquet"))


def test_keep_column_in_no_part_is_the_same_usage_error(big, tmp_path):
    got = [run(str(big), "-o", str(tmp_path / f"out{i}.parquet"), "--keep", "nope", *extra)
           for i, extra in enumerate([[], ["--memory", "1MiB"]])]
    assert [g.exit_code for g in got] == [2, 2]
    assert got[0].output == got[1].output.splitlines()[-1] + "\n" and "--keep nope: no such column" in got[0].output
    assert not list(tmp_path.glob("out*"))


def test_budget_that_fits_reads_whole(records, tmp_path):
    _, path = records
    within = plan_within(str(path), 1 << 34, 3.0, tmp_path)
    assert not within.streamed and within.whole().height == 400
    assert os.listdir(tmp_path) == []


def test_a_log_gets_progress_lines_for_each_pass(big, tmp_path, monkeypatch):
    import sftdata.commands._common as common

    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)  # every piece, instead of every 30 s
    got = run(str(big), "-o", str(tmp_path / "out.parquet"), "--memory", "1MiB")
    assert got.exit_code == 0, got.output
    for step in ("signatures", "bands", "verify", "write"):
        assert f"dedup: {step}: 1/" in got.stderr
    assert "dedup: signatures: 3/3" in got.stderr


def test_a_spill_write_that_fails_is_an_error_naming_the_scratch_space(tmp_path):
    import errno

    import pytest as _pytest

    from sftdata.errors import OutputError
    from sftdata.outputs import scratch_dir

    with _pytest.raises(OutputError) as caught, scratch_dir("t") as spill:
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert message.startswith("scratch space ") and "No space left on device" in message
    assert "Fix: set TMPDIR to a directory with room" in message
    assert not spill.exists()
