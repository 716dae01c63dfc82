"""The engines give the same answers: each command on --engine ray against --engine local, on
datasets given as directories of parts (a local Ray of 2 CPUs, started once per session)."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.datasets import DatasetWriter
from sftdata.outputs import together
from sftdata.schema import from_dicts


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for every test that needs it; shut down at the end of the session."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray")
    from sftdata.engines.ray_engine import init

    started = not ray.is_initialized()
    if started:
        import logging

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    init()
    yield ray
    if started:
        ray.shutdown()


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(300)}" for _ in range(n))


def corpus(n: int = 240, seed: int = 3) -> pl.DataFrame:
    """Records with exact copies (case changed), near copies (one word changed) and chains of
    near copies (a ~ b ~ c with a, c further apart), so clusters span several buckets."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = rng.random()
        if rows and kind < 0.15:
            src = rng.choice(rows)
            rows.append(chat(src["messages"][0]["content"].upper(), src["messages"][1]["content"],
                             id=f"r{i}", label=f"l{i % 3}"))
        elif rows and kind < 0.4:
            src = rng.choice(rows)["messages"][1]["content"].split()
            src[rng.randrange(len(src))] = f"x{i}"
            rows.append(chat("question", " ".join(src), id=f"r{i}", label=f"l{i % 3}"))
        else:
            rows.append(chat("question", words(rng, 60), id=f"r{i}", label=f"l{i % 3}"))
    return from_dicts(rows).with_columns(score=pl.Series([rng.randrange(5) for _ in rows]))


def write_parts(df: pl.DataFrame, folder, rows_per_part: int = 50) -> None:
    with together(), DatasetWriter(folder, "parquet", rows_per_part=rows_per_part) as w:
        w.write(df)


def run(*args: str) -> object:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def read_dir(folder) -> pl.DataFrame:
    return pl.read_parquet(sorted(str(p) for p in folder.glob("part-*.parquet")))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in") / "data"
    write_parts(corpus(), folder)
    return folder


def test_directory_output_is_parts_and_manifest(tmp_path):
    df = corpus(120)
    write_parts(df, tmp_path / "d", rows_per_part=50)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert [p["rows"] for p in manifest["parts"]] == [50, 50, 20]
    assert manifest["rows"] == 120
    assert read_dir(tmp_path / "d").equals(df)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_render_template_ray_equals_local(ray_cluster, parts, tmp_path):
    run("render-template", str(parts), "-t", "chatml", "-o", f"{tmp_path}/local/")
    run("render-template", str(parts), "-t", "chatml", "-o", f"{tmp_path}/ray/",
        "--engine", "ray")
    for name in ("manifest.json", "part-00000.parquet"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()
    assert read_dir(tmp_path / "ray").height == 240
