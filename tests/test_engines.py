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


@pytest.mark.parametrize("extra", [[], ["--keep", "score", "--mode", "near"], ["--approx"]],
                         ids=["both", "near-keep-score", "approx"])
def test_dedup_ray_equals_local(ray_cluster, parts, tmp_path, extra):
    outs = {}
    for engine in ("local", "ray"):
        result = run("dedup", str(parts), "-o", f"{tmp_path}/{engine}/", "--dupes",
                     f"{tmp_path}/{engine}-dupes/", "--threshold", "0.7", "--engine", engine,
                     *extra)
        outs[engine] = result.stderr.replace(f"{tmp_path}/{engine}", "OUT")
    for name in ("", "-dupes"):
        for f in ("manifest.json", "part-00000.parquet"):
            assert ((tmp_path / f"local{name}" / f).read_bytes()
                    == (tmp_path / f"ray{name}" / f).read_bytes()), (name, f)
    dupes = read_dir(tmp_path / "ray-dupes")
    assert dupes.height > 20 and set(dupes["reason"]) == ({"near"} if "near" in extra
                                                          else {"exact", "near"})
    assert outs["local"] == outs["ray"]  # the same counts, banding and rejected pairs


def test_tokenize_ray_equals_local(ray_cluster, parts, tmp_path):
    """Rendered parts tokenized on both engines: same ids, labels, rejects and report."""
    from conftest import FIXTURES

    tok = str(FIXTURES / "tokenizers/tiny-chatml")
    run("render-template", str(parts), "-t", "chatml", "-o", f"{tmp_path}/rendered/",
        "--to", "jsonl")
    for engine in ("local", "ray"):
        run("tokenize", f"{tmp_path}/rendered/", "-t", tok, "--max-len", "60",
            "--truncation", "drop", "--rejects", f"{tmp_path}/{engine}-rej.jsonl",
            "--report", f"{tmp_path}/{engine}.json", "-o", f"{tmp_path}/{engine}/",
            "--engine", engine)
    for f in ("ray/manifest.json", "ray/part-00000.parquet", "ray-rej.jsonl", "ray.json"):
        assert (tmp_path / f).read_bytes() == (tmp_path / f.replace("ray", "local")).read_bytes()
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["rows_in"] == 240 and report["rows_too_long_dropped"] > 0


def test_errors_name_the_part_and_row_on_both_engines(ray_cluster, tmp_path):
    """A record the template refuses, in the second part: the same error line on both engines."""
    df = corpus(80)
    bad = df.with_columns(pl.when(pl.int_range(pl.len()) == 62)
                          .then(pl.col("messages").list.eval(
                              pl.element().struct.with_fields(pl.lit("robot").alias("role"))))
                          .otherwise(pl.col("messages")).alias("messages"))
    write_parts(bad, tmp_path / "d", rows_per_part=50)
    lines = []
    for engine in ("local", "ray"):
        result = CliRunner().invoke(cli, ["render-template", str(tmp_path / "d"), "-t", "chatml",
                                          "--engine", engine])
        assert result.exit_code == 1, result.output
        lines.append(result.stderr.strip().splitlines()[-1])
    assert lines[0] == lines[1]
    assert "part-00001.parquet, row 13" in lines[0] and "Traceback" not in lines[0]


def test_split_ray_equals_local(ray_cluster, tmp_path):
    """Every record in the same split, the same report, with groups spanning parts."""
    df = corpus(160).with_columns(group=pl.when(pl.int_range(pl.len()) % 4 == 0)
                                  .then(pl.lit("g") + (pl.int_range(pl.len()) % 7).cast(pl.String)))
    write_parts(df, tmp_path / "d", rows_per_part=40)
    for engine in ("local", "ray"):
        run("split", str(tmp_path / "d"), "--stratify", "label", "--seed", "5",
            "-o", str(tmp_path / engine), "--report", f"{tmp_path}/{engine}.json",
            "--engine", engine)
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "local.json").read_text()
    for name in ("train", "val", "test"):
        ray_part = pl.read_parquet(tmp_path / "ray" / f"{name}.parquet")
        assert ray_part.equals(pl.read_parquet(tmp_path / "local" / f"{name}.parquet"))
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["group_by"] == "group" and report["splits"]["train"]["records"] > 80


@pytest.mark.parametrize("how", [["--cap", "30"],
                                 ["--target", "l0=0.6,l1=0.2,l2=0.2", "--strategy", "upsample"]],
                         ids=["cap", "upsample"])
def test_balance_ray_equals_local(ray_cluster, parts, tmp_path, how):
    """The same sample, copies (ids, meta, group) and dropped rows with reasons."""
    for engine in ("local", "ray"):
        run("balance", str(parts), "--by", "label", *how, "--seed", "3", "-o",
            f"{tmp_path}/{engine}.jsonl", "--rejects", f"{tmp_path}/{engine}-rej.jsonl",
            "--report", f"{tmp_path}/{engine}.json", "--engine", engine)
    for name in ("", "-rej"):
        ray_out = (tmp_path / f"ray{name}.jsonl").read_text()
        assert ray_out == (tmp_path / f"local{name}.jsonl").read_text()
    assert "~up" in (tmp_path / "ray.jsonl").read_text() or "--cap" in how
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "local.json").read_text()


def test_usage_error_inside_a_ray_task_is_exit_2(ray_cluster, parts):
    result = CliRunner().invoke(cli, ["dedup", str(parts), "--keep", "nosuch", "--engine", "ray"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --keep nosuch: no such column")


def test_jsonl_parts_by_url_and_glob(ray_cluster, tmp_path):
    """JSONL parts read through a file:// URL and a glob give the local engine's answer; a
    broken line names its part file and line on both engines."""
    df = corpus(90)
    (tmp_path / "j").mkdir()
    for i, start in enumerate(range(0, 90, 30)):
        df.slice(start, 30).write_ndjson(tmp_path / "j" / f"p{i}.jsonl")
    run("dedup", f"{tmp_path}/j/*.jsonl", "-o", f"{tmp_path}/local.jsonl")
    run("dedup", f"file://{tmp_path}/j", "-o", f"{tmp_path}/ray.jsonl", "--engine", "ray")
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    with open(tmp_path / "j" / "p1.jsonl", "a") as fh:
        fh.write('{"id": "broken", "messages": [\n')
    for engine in ("local", "ray"):
        result = CliRunner().invoke(cli, ["render-template", str(tmp_path / "j"), "-t", "chatml",
                                          "--engine", engine])
        assert result.exit_code == 1
        assert f"{tmp_path}/j/p1.jsonl, line 31" in result.stderr, result.stderr


def test_leakcheck_ray_equals_local(ray_cluster, parts, tmp_path):
    """Exact copies, edited copies (n-gram and near evidence) and unrelated items: the same
    matches, evidence and summary from both engines."""
    train = read_dir(parts)
    rng = random.Random(9)
    answers = train["messages"].list.get(1).struct.field("content").to_list()
    items = []
    for i in range(12):
        text = answers[rng.randrange(len(answers))].split()
        if i % 3 == 1:
            text[rng.randrange(len(text))] = "edited"
        elif i % 3 == 2:
            text = words(rng, 60).split()
        items.append(chat("q", " ".join(text), id=f"ref{i}"))
    ref = tmp_path / "bench.jsonl"
    from_dicts(items).write_ndjson(ref)
    for engine in ("local", "ray"):
        run("leakcheck", str(parts), "--against", str(ref), "--on", "response",
            "--report", f"{tmp_path}/{engine}.json", "--engine", engine)
    report = json.loads((tmp_path / "ray.json").read_text())
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "local.json").read_text()
    kinds = report["summary"]["references"]["bench"]["matches_by_kind"]
    assert kinds["exact"] > 0 and kinds["ngram"] > 0 and report["contaminated"]


def test_convert_ray_equals_local(ray_cluster, tmp_path):
    """Alpaca JSONL parts (one with a bad row) and stdin: the same records and rejects."""
    rng = random.Random(4)
    (tmp_path / "raw").mkdir()
    for p in range(3):
        lines = [json.dumps({"instruction": words(rng, 8), "input": "", "output": words(rng, 20)})
                 for _ in range(40)]
        if p == 1:
            lines[7] = json.dumps({"instruction": "q", "input": "", "output": ""})  # no answer
        (tmp_path / "raw" / f"part{p}.jsonl").write_text("\n".join(lines) + "\n")
    for engine in ("local", "ray"):
        run("convert", str(tmp_path / "raw"), "-o", f"{tmp_path}/{engine}/", "--rejects",
            f"{tmp_path}/{engine}-rej.jsonl", "--engine", engine)
    assert same_dir(tmp_path / "local", tmp_path / "ray")
    rej = (tmp_path / "ray-rej.jsonl").read_text()
    assert rej == (tmp_path / "local-rej.jsonl").read_text() and rej.count("\n") == 1
    stdin = (tmp_path / "raw" / "part0.jsonl").read_bytes()
    outs = [CliRunner().invoke(cli, ["convert", "--engine", e], input=stdin) for e in ("local", "ray")]
    assert outs[0].exit_code == outs[1].exit_code == 0
    assert outs[0].stdout == outs[1].stdout and outs[0].stdout.count("\n") == 40


def same_dir(a, b) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def packed_docs(folder, split: str) -> dict[str, tuple[list[int], list[int]]]:
    """Every document of a shard split: record id -> (tokens, labels)."""
    from sftdata.shards import ShardReader

    docs = {}
    for row in ShardReader(folder, split, verify=True):
        ids, labels, at = list(row["input_ids"]), list(row["labels"]), 0
        assert len(ids) <= 512
        for rid, n in zip(row["record_ids"], row["doc_lens"], strict=True):
            assert rid not in docs  # bfd never splits a document
            docs[rid] = (ids[at:at + n], labels[at:at + n])
            at += n
    return docs


def tokenized_parts(folder, n: int = 4000, rows_per_part: int = 1000):
    """Tokenized records of SFT-like lengths (some longer than 512, some with no supervised
    token), 10% in a val split, written as parts."""
    import numpy as np
    from test_pack import tokenized

    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(4.5, 0.8, n).astype(int), 1, 700).tolist()
    prompts = [n_ if i % 97 == 0 else n_ // 2 for i, n_ in enumerate(lengths)]
    df = tokenized(lengths, prompts, split=["val" if i % 10 == 0 else "train" for i in range(n)])
    write_parts(df, folder, rows_per_part=rows_per_part)


@pytest.mark.parametrize("pool", [None, 8], ids=["pool-at-end", "pool-refilled-often"])
def test_pack_bfd_ray_same_documents_efficiency_within_half_a_point(ray_cluster, tmp_path,
                                                                    monkeypatch, pool):
    """4,000 records in 4 parts: every document with the same tokens and labels, the same
    drops, report and input fingerprint; only the bins differ, and efficiency stays within
    0.5 points of local BFD in every split (docs/engines.md)."""
    if pool is not None:
        monkeypatch.setattr("sftdata.engines.pack.POOL_SEQUENCES", pool)
    tokenized_parts(tmp_path / "in")
    for engine in ("local", "ray"):
        run("pack", str(tmp_path / "in"), "--seq-len", "512", "--rows-per-file", "300",
            "-o", str(tmp_path / engine), "--rejects", f"{tmp_path}/{engine}-rej.jsonl",
            "--engine", engine)
    local, ray = (json.loads((tmp_path / e / "manifest.json").read_text())
                  for e in ("local", "ray"))
    assert ray["input_fingerprint"] == local["input_fingerprint"]
    assert ray["packing"] == local["packing"] and local["packing"]["rows_dropped"]
    assert (tmp_path / "ray-rej.jsonl").read_text() == (tmp_path / "local-rej.jsonl").read_text()
    for split in ("train", "val"):
        assert packed_docs(tmp_path / "ray", split) == packed_docs(tmp_path / "local", split)
        a, b = local["splits"][split], ray["splits"][split]
        assert (a["documents"], a["tokens"], a["supervised_tokens"]) == (
            b["documents"], b["tokens"], b["supervised_tokens"])
        assert b["efficiency"] > a["efficiency"] - 0.005, (split, a["efficiency"], b["efficiency"])
        assert [f["rows"] for f in b["files"]][:-1] == [300] * (len(b["files"]) - 1)


@pytest.mark.parametrize("how", [["--no-pack"], ["--strategy", "wrap"],
                                 ["--strategy", "wrap", "--cross-doc-attention"]],
                         ids=["no-pack", "wrap", "wrap-cross-doc"])
def test_pack_no_pack_and_wrap_ray_equal_local_byte_for_byte(ray_cluster, tmp_path, how):
    """--no-pack (input order) and wrap (one stream per split, cut on the driver): the local
    engine's shards and manifest, byte for byte."""
    tokenized_parts(tmp_path / "in", n=1200, rows_per_part=300)
    for engine in ("local", "ray"):
        run("pack", str(tmp_path / "in"), "--seq-len", "512", "--rows-per-file", "100",
            "-o", str(tmp_path / engine), "--engine", engine, *how)
    files = sorted(str(p.relative_to(tmp_path / "local")) for p in
                   (tmp_path / "local").rglob("*") if p.is_file())
    assert len(files) >= 5  # the manifest, files of 100 sequences in both splits
    for name in files:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_pack_ray_errors_name_the_part_and_row(ray_cluster, tmp_path):
    """A label that is neither -100 nor its token, in the second part, and parts tokenized
    with two tokenizers: exit 1, the part file and row, no traceback."""
    from test_pack import tiny_tokenizer, tokenized

    df = tokenized([20] * 60, seed=5)
    bad = df.with_columns(pl.when(pl.int_range(pl.len()) == 47)
                          .then(pl.col("labels").list.eval(pl.element() * 0 + 7))
                          .otherwise(pl.col("labels")).alias("labels"))
    write_parts(bad, tmp_path / "bad", rows_per_part=30)
    other = tokenized([20] * 30, tokenizer={**tiny_tokenizer(), "name": "other"})
    write_parts(pl.concat([df.head(30), other]), tmp_path / "mixed", rows_per_part=30)
    for folder, says in (("bad", "part-00001.parquet, row 18"),
                         ("mixed", "part-00001.parquet, row 1")):
        result = CliRunner().invoke(cli, ["pack", str(tmp_path / folder), "-o",
                                          str(tmp_path / "out"), "--engine", "ray"])
        assert result.exit_code == 1, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert says in line and "Traceback" not in result.stderr, result.stderr
    assert "rows disagree on the tokenizer" in line and "part-00000.parquet, row 1" in line
    assert not (tmp_path / "out").exists()


def test_stream_fingerprint_equals_the_whole_inputs():
    """pack's input fingerprint from consecutive parts (the Ray driver's way) is the digest
    of the whole input (the local engine's), at any cut, odd bit counts included."""
    import numpy as np
    from test_pack import tokenized

    from sftdata.ops.pack import StreamFingerprint, prepare

    df = tokenized([3, 1, 7, 9, 2, 5, 11, 4, 6], seed=2)
    whole = prepare(df, seq_len=8).fingerprint()
    for cuts in ([], [1], [2, 5], [1, 2, 3, 8]):
        stream = StreamFingerprint()
        for part in np.split(np.arange(df.height), cuts):
            p = prepare(df[part], seq_len=8)
            stream.add(p.offsets, p.ids, p.labels != -100, p.record_ids)
        assert stream.hexdigest() == whole, cuts


@pytest.mark.parametrize("ratios", ["train=100,val=20,test=15", "train=rest,val=25,test=25"],
                         ids=["unselected", "rest"])
def test_split_counts_ray_equals_local(ray_cluster, tmp_path, ratios):
    """Counts mode (keys ranked on the driver, then every part assigned): the same files,
    unselected records and report, strata allocated, groups spanning parts."""
    df = corpus(160).with_columns(group=pl.when(pl.int_range(pl.len()) % 4 == 0)
                                  .then(pl.lit("g") + (pl.int_range(pl.len()) % 7).cast(pl.String)))
    write_parts(df, tmp_path / "d", rows_per_part=40)
    for engine in ("local", "ray"):
        run("split", str(tmp_path / "d"), "--ratios", ratios, "--stratify", "label",
            "--seed", "5", "-o", str(tmp_path / engine), "--report", f"{tmp_path}/{engine}.json",
            "--rejects", f"{tmp_path}/{engine}-rej.jsonl", "--engine", engine)
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "local.json").read_text()
    rej = (tmp_path / "ray-rej.jsonl").read_text()
    assert rej == (tmp_path / "local-rej.jsonl").read_text()
    assert (rej.count("\n") > 0) == ("rest" not in ratios)
    for name in ("train", "val", "test"):
        ray_part = pl.read_parquet(tmp_path / "ray" / f"{name}.parquet")
        assert ray_part.equals(pl.read_parquet(tmp_path / "local" / f"{name}.parquet"))
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["mode"] == "counts" and report["splits"]["val"]["records"] >= 20


def test_leakcheck_drop_ray_equals_local(ray_cluster, parts, tmp_path):
    """--drop on both engines: an exact copy caught by the first check, two records sharing
    its 13-gram caught by the second (boilerplate while the copy counted) in other parts, and
    an --against item edited: the same kept records, dropped records with reasons and
    messages."""
    from test_cli_leakcheck import NATALIA

    words13 = " ".join(NATALIA.split()[:13])
    filler = " ".join(f"unrelated{i}" for i in range(30))
    train = read_dir(parts).head(90)
    special = from_dicts([chat(NATALIA, "72", id="copy"),
                          chat(f"{words13} {filler}", "x", id="echo1"),
                          chat(f"{filler} {words13}", "y", id="echo2")])
    rows = pl.concat([train.slice(0, 20), special.slice(0, 1), train.slice(20, 40),
                      special.slice(1, 1), train.slice(60, 30), special.slice(2, 1)],
                     how="diagonal_relaxed")
    write_parts(rows, tmp_path / "d", rows_per_part=30)
    ref = tmp_path / "bench.jsonl"
    from_dicts([chat(NATALIA, "72", id="g1")]).write_ndjson(ref)
    outs = {}
    for engine in ("local", "ray"):
        result = run("leakcheck", str(tmp_path / "d"), "--against", str(ref), "--drop",
                     "--frequent-cutoff", "2", "-o", f"{tmp_path}/{engine}.jsonl",
                     "--rejects", f"{tmp_path}/{engine}-rej.jsonl", "--engine", engine)
        outs[engine] = result.stderr.replace(f"{tmp_path}/{engine}", "OUT")
    assert outs["ray"] == outs["local"]
    assert "dropped 3 contaminated record(s) of 93; wrote 90" in outs["ray"], outs["ray"]
    for name in ("", "-rej"):
        ray_out = (tmp_path / f"ray{name}.jsonl").read_text()
        assert ray_out == (tmp_path / f"local{name}.jsonl").read_text()
    assert "round 2: boilerplate no longer" in (tmp_path / "ray-rej.jsonl").read_text()
