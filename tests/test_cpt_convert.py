"""Raw text corpora for continued pretraining: a directory or glob of .txt/.md files through
`sftdata convert` (library layer in sftdata.formats.text, then the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftdata.cli import cli
from sftdata.errors import UsageProblem
from sftdata.formats.text import find_corpus
from sftdata.io import iter_input_batches, open_source


def run(*args: str):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "z.txt").write_text("Zeta document.\n")
    (root / "b" / "a.md").write_text("# Manual\n\nStep one.")
    (root / "a.txt").write_text("Alpha document.\nSecond line.\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD.txt").write_text("hidden, not a document")
    return root


def test_directory_is_a_corpus_in_sorted_relative_path_order(corpus):
    found = find_corpus(corpus)
    assert found is not None and found.ids() == ["a.txt", "b/a.md", "z.txt"]
    source = open_source(corpus)
    rows = [r.value for batch in iter_input_batches(source) for r in batch.rows()]
    assert [r["id"] for r in rows] == ["a.txt", "b/a.md", "z.txt"]
    assert rows[0]["text"] == "Alpha document.\nSecond line.\n"  # kept exactly, newlines included


def test_directory_of_dataset_parts_is_not_a_corpus(tmp_path):
    (tmp_path / "part-0.parquet").write_bytes(b"PAR1")
    assert find_corpus(tmp_path) is None
    assert find_corpus(tmp_path / "part-0.parquet") is None  # a file is read as it always was


def test_mixed_directory_is_refused_naming_both_kinds(corpus):
    (corpus / "x.jsonl").write_text("{}\n")
    with pytest.raises(UsageProblem, match=r"both text files \(a.txt\) and data files \(x.jsonl\)"):
        find_corpus(corpus)


def test_convert_directory_gives_text_records(corpus):
    result = run(corpus)
    assert result.exit_code == 0, result.output
    out = records(result.stdout)
    assert [r["id"] for r in out] == ["a.txt", "b/a.md", "z.txt"]
    assert {r["task"] for r in out} == {"text"}
    assert [m["role"] for r in out for m in r["messages"]] == ["assistant"] * 3
    assert out[1]["messages"][0]["content"] == "# Manual\n\nStep one."
    assert out[0]["source"] == "corpus"
    assert result.stderr == f"convert: {corpus}: 3 rows in = 3 records out + 0 rejected (text)\n"


def test_convert_is_deterministic(corpus):
    assert run(corpus).stdout == run(corpus).stdout


def test_convert_glob_takes_ids_relative_to_its_fixed_part(corpus):
    result = run(f"{corpus}/**/*.md")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in records(result.stdout)] == ["b/a.md"]


def test_glob_matching_other_files_is_a_usage_error(corpus):
    (corpus / "img.png").write_bytes(b"\x89PNG")
    result = run(f"{corpus}/*")
    assert result.exit_code == 2
    assert "not a .txt/.md document" in result.stderr and "img.png" in result.stderr


def test_glob_matching_nothing_is_a_usage_error(tmp_path):
    result = run(f"{tmp_path}/*.txt")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path}/*.txt: no file matches this pattern\n"


def test_other_files_in_a_corpus_directory_are_reported_not_silently_skipped(corpus):
    (corpus / "img.png").write_bytes(b"\x89PNG")
    result = run(corpus)
    assert result.exit_code == 0
    assert len(records(result.stdout)) == 3
    assert (f"Warning: 1 file(s) in {corpus} are not .txt/.md documents and were not read "
            f"(e.g. {corpus}/img.png)") in result.stderr


def test_empty_and_non_utf8_documents_name_the_file(corpus, tmp_path):
    (corpus / "empty.txt").write_text(" \n")
    result = run(corpus)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {corpus}/empty.txt: empty document (no text). "
                             "Fix: remove the file, or pass --rejects FILE to skip it\n")
    (corpus / "empty.txt").unlink()
    (corpus / "latin.txt").write_bytes(b"caf\xe9")
    result = run(corpus)
    assert result.exit_code == 1
    assert f"Error: {corpus}/latin.txt: invalid UTF-8 at byte 3" in result.stderr


def test_bad_documents_go_to_rejects_and_counts_add_up(corpus, tmp_path):
    (corpus / "empty.txt").write_text("")
    rejects = tmp_path / "rejects.jsonl"
    result = run(corpus, "--rejects", rejects)
    assert result.exit_code == 0, result.output
    assert len(records(result.stdout)) == 3
    assert "4 rows in = 3 records out + 1 rejected (text)" in result.stderr
    (reject,) = records(rejects.read_text())
    assert reject["reason"] == "empty document (no text)" and '"empty.txt"' in reject["original"]


def test_a_corpus_is_not_records_for_other_commands(corpus):
    result = CliRunner().invoke(cli, ["validate", str(corpus)])
    assert result.exit_code == 2
    assert "a raw text corpus (.txt/.md files), not records" in result.stderr


def test_jsonl_and_parquet_with_a_text_column(tmp_path):
    import polars as pl

    rows = [{"body": "one long document", "url": "u1"}, {"body": "another", "url": "u2"}]
    src = tmp_path / "pages.parquet"
    pl.DataFrame(rows).write_parquet(src)
    result = run(src, "--map", "text=body")
    assert result.exit_code == 0, result.output
    out = records(result.stdout)
    assert [r["task"] for r in out] == ["text", "text"]
    assert json.loads(out[0]["meta"]) == {"url": "u1"}  # the other columns are kept
