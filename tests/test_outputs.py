"""The output-path policy (sftdata/outputs.py) at the library layer: what each kind of path
becomes, the checks before any work, commits together, temporaries on every exit, directory
outputs swapped as a whole. Findings H2, H3, M1, M16, L2 of the reliability report."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from sftdata import outputs
from sftdata.errors import DataPipeClosed, OutputError, UsageProblem
from sftdata.io import TableWriter, write_json, write_table
from sftdata.outputs import Spec

ROOT = Path(__file__).resolve().parents[1]
FRAME = pl.DataFrame({"id": ["a", "b"], "n": [1, 2]})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []

    def reader() -> None:
        with open(path, "rb") as fh:
            got.append(fh.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, got


# --------------------------------------------------------------------------- kinds (H2)


def test_kind_of_each_path(tmp_path):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    os.symlink("file", tmp_path / "link")
    os.symlink("nowhere", tmp_path / "dangling")
    assert outputs.kind("-") == "stdout"
    assert outputs.kind(tmp_path / "file") == "file"
    assert outputs.kind(tmp_path / "new") == "file"
    assert outputs.kind(tmp_path / "link") == "file"  # judged by its target
    assert outputs.kind(tmp_path / "dangling") == "file"
    assert outputs.kind(tmp_path / "fifo") == "special"
    assert outputs.kind(os.devnull) == "special"
    assert outputs.kind(tmp_path / "dir") == "directory"
    assert outputs.kind("/dev/stdout") == "fd"
    assert outputs.kind("/dev/fd/63") == "fd"
    assert outputs.kind(f"/proc/{os.getpid()}/fd/3") == "fd"
    assert outputs.descriptor("/proc/self/fd/7") == 7


def test_symlink_is_written_through_and_stays_a_link(tmp_path):
    """H2: the atomic writer replaced the link with a regular file; the target kept old data."""
    real = tmp_path / "data" / "real.jsonl"
    real.parent.mkdir()
    real.write_text("precious\n")
    link = tmp_path / "link.jsonl"
    os.symlink(real, link)
    write_table(FRAME, link)
    assert link.is_symlink()
    assert real.read_text() == '{"id":"a","n":1}\n{"id":"b","n":2}\n'
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    os.symlink("made.json", link)
    write_json({"a": 1}, link)
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == '{\n  "a": 1\n}\n'


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "arrow"])
def test_fifo_is_written_in_place(tmp_path, fmt):
    """H2: a FIFO became a regular file and its reader got 0 bytes."""
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    write_table(FRAME, fifo, fmt)
    thread.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if fmt == "jsonl":
        assert got == [b'{"id":"a","n":1}\n{"id":"b","n":2}\n']
    else:
        assert got[0][:4] in (b"PAR1", b"\xff\xff\xff\xff")
    assert leftovers(tmp_path) == []


def test_json_to_a_fifo_and_atomic_path_to_a_fifo(tmp_path):
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    write_json({"ok": True}, fifo)
    thread.join(10)
    assert got == [b'{\n  "ok": true\n}\n']
    thread, got = read_fifo(fifo)
    with outputs.atomic_path(fifo, "--plot") as tmp:  # a writer that wants a path (matplotlib)
        Path(tmp).write_bytes(b"PNG bytes")
    thread.join(10)
    assert got == [b"PNG bytes"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_descriptor_paths_are_written_through_the_descriptor():
    """H2: `-o >(cmd)` crashed looking for /dev/fd/.63.tmp-PID; /proc/self/fd/1 was replaced."""
    read_end, write_end = os.pipe()
    try:
        write_table(FRAME, f"/dev/fd/{write_end}")
        write_json({"x": 1}, f"/proc/self/fd/{write_end}")
        os.close(write_end)
        data = os.read(read_end, 1000)
    finally:
        os.close(read_end)
    assert data == b'{"id":"a","n":1}\n{"id":"b","n":2}\n{\n  "x": 1\n}\n'


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_node_is_written_in_place(tmp_path):
    """H2: `-o /dev/null` (or /dev/full) replaced the device node; here a copy of /dev/null."""
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    write_table(FRAME, node, "parquet")
    write_json({"a": 1}, node)
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_full_device_is_a_clean_output_error(tmp_path):
    """L1: ENOSPC as an OutputError naming the option and the fix, never a raw OSError.
    (A copy of /dev/full: the system's own node is never a test target.)"""
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    with pytest.raises(OutputError) as err:
        write_table(FRAME, full, label="--rejects")
    assert str(err.value) == (f"--rejects {full}: cannot write (No space left on device). "
                              "Fix: free some space or write to another disk")
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_failure_classifies_closed_pipes():
    epipe = BrokenPipeError(errno.EPIPE, "Broken pipe")
    assert isinstance(outputs.failure(epipe, "-o", "-"), DataPipeClosed)
    assert isinstance(outputs.failure(epipe, "-o", "/dev/fd/63"), DataPipeClosed)
    side = outputs.failure(epipe, "--report", "/dev/fd/63")
    assert isinstance(side, OutputError) and "--report /dev/fd/63: cannot write (Broken pipe)" in str(side)
    polars_text = pl.exceptions.ComputeError("failed to write: No space left on device (os error 28)")
    assert "No space left on device" in str(outputs.failure(polars_text, "-o", "x.parquet"))


# --------------------------------------------------------------------------- the check (H3, M1)


def specs(*items, dirs=()):
    return outputs.specs(list(items), dirs)


def test_check_refuses_an_output_that_is_an_input(tmp_path):
    """H3: `dedup in.parquet --dupes in.parquet` replaced the input with the dropped rows."""
    src = tmp_path / "in.parquet"
    src.write_bytes(b"PAR1")
    with pytest.raises(UsageProblem) as err:
        outputs.check(specs(("INPUT", str(src))), specs(("-o", "-"), ("--dupes", str(src))))
    assert str(err.value) == (f"--dupes {src} is the same file as INPUT {src}: writing it would "
                              "destroy the input; give --dupes another path")


def test_check_sees_through_symlinks_hardlinks_and_spellings(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    os.symlink(src, tmp_path / "alias.jsonl")
    os.link(src, tmp_path / "hard.jsonl")
    for other in ("alias.jsonl", "hard.jsonl", "./sub/../in.jsonl"):
        with pytest.raises(UsageProblem, match="is the same file as INPUT"):
            outputs.check(specs(("INPUT", str(src))), specs(("--report", str(tmp_path / other))))
    # two outputs that do not exist yet, spelled apart
    (tmp_path / "sub").mkdir()
    with pytest.raises(UsageProblem) as err:
        outputs.check([], specs(("--gold-out", str(tmp_path / "g.parquet")),
                                ("--lock", str(tmp_path / "sub" / ".." / "g.parquet"))))
    assert "--gold-out" in str(err.value) and "--lock" in str(err.value)
    assert "name the same file; give them different paths" in str(err.value)


def test_check_lists_every_problem(tmp_path):
    src = tmp_path / "b.parquet"
    src.write_bytes(b"PAR1")
    with pytest.raises(UsageProblem) as err:
        outputs.check(specs(("INPUT", str(src))),
                      specs(("-o", str(tmp_path / "o.jsonl")), ("--rejects", str(src)),
                            ("--report", str(tmp_path / "o.jsonl"))))
    text = str(err.value)
    assert text.startswith("2 problems with output paths:\n  ")
    assert "--rejects" in text and "--report" in text


def test_devnull_and_distinct_paths_do_not_clash(tmp_path):
    outputs.check(specs(("INPUT", os.devnull)),
                  specs(("-o", os.devnull), ("--rejects", os.devnull),
                        ("--report", str(tmp_path / "r.json"))))


def test_output_inside_a_directory_output_or_input_inside_it(tmp_path):
    """L26 and M16: `pack pdir/tok.parquet -o pdir --force` deleted the input."""
    folder = tmp_path / "pdir"
    folder.mkdir()
    (folder / "tok.parquet").write_bytes(b"PAR1")
    with pytest.raises(UsageProblem) as err:
        outputs.check(specs(("INPUT", str(folder / "tok.parquet"))), specs(("-o", str(folder)), dirs=["-o"]))
    assert str(err.value) == (f"INPUT {folder}/tok.parquet (an input) is inside -o {folder}, which is "
                              "replaced as a whole; move it out or give -o another directory")
    with pytest.raises(UsageProblem, match="--report .* \\(an output\\) is inside -o"):
        outputs.check([], specs(("-o", str(folder)), ("--report", str(folder / "r.json")), dirs=["-o"]))


def test_directory_trailing_slash_and_file_in_the_way(tmp_path):
    """M1 and L15: `-o exdir` gave IsADirectoryError after the work; `-o newdir/` a file."""
    (tmp_path / "exdir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = {
        str(tmp_path / "exdir"): f"-o {tmp_path}/exdir is a directory; -o writes a file: give a file "
                                 f"name such as {tmp_path}/exdir/out.jsonl",
        str(tmp_path / "newdir") + "/": f"-o {tmp_path}/newdir/ ends with '/', so it names a directory",
        str(tmp_path / "afile" / "x.jsonl"): f"-o {tmp_path}/afile/x.jsonl: {tmp_path}/afile is not a directory",
    }
    for path, message in cases.items():
        with pytest.raises(UsageProblem) as err:
            outputs.check([], specs(("-o", path)))
        assert str(err.value).startswith(message)
    with pytest.raises(UsageProblem, match="exists and is not a directory"):
        outputs.check([], specs(("-o", str(tmp_path / "afile")), dirs=["-o"]))


def test_unwritable_directory_is_found_before_any_work(tmp_path, monkeypatch):
    """M1: a read-only directory gave a PermissionError traceback after the work. (As root a
    chmod does not stop writes, so the probe's open is refused here instead.)"""
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if ".sftdata-write-test-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(UsageProblem) as err:
        outputs.check([], specs(("--dupes", str(tmp_path / "d.jsonl"))))
    assert str(err.value) == (f"--dupes {tmp_path}/d.jsonl: cannot write in {tmp_path}/ "
                              "(Permission denied); choose a place you can write to, or change its permissions")


def test_missing_parents_are_made_and_removed_again_on_failure(tmp_path):
    target = tmp_path / "a" / "b" / "out.jsonl"
    with pytest.raises(RuntimeError), outputs.together():
        outputs.check([], specs(("-o", str(target))))
        assert target.parent.is_dir()
        write_table(FRAME, target)
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with outputs.together():
        outputs.check([], specs(("-o", str(target))))
        write_table(FRAME, target)
    assert target.is_file()


# --------------------------------------------------------------------------- commits and temporaries


def test_together_commits_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    a.write_text("old\n")
    with pytest.raises(OutputError), outputs.together():
        write_table(FRAME, a)
        assert a.read_text() == "old\n"  # held back until the command ends
        raise OutputError("third output failed")
    assert a.read_text() == "old\n" and leftovers(tmp_path) == []
    with outputs.together():
        write_table(FRAME, a)
        write_json({"k": 1}, b)
    assert a.read_text().startswith('{"id":"a"') and b.is_file() and leftovers(tmp_path) == []


def test_together_keeps_outputs_of_a_failed_check(tmp_path):
    class Failed(Exception):
        pass

    with pytest.raises(Failed), outputs.together(keep_on=(Failed,)):
        write_json({"failed": 1}, tmp_path / "report.json")
        raise Failed
    assert (tmp_path / "report.json").is_file()


def test_failed_table_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.parquet"
    write_table(FRAME, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), TableWriter(target) as w:
        w.write(FRAME)
        raise RuntimeError
    assert target.read_bytes() == before and leftovers(tmp_path) == []


def test_sigterm_removes_temporaries(tmp_path):
    """L2: SIGTERM (rc 143) left .NAME.tmp-PID files up to 15 MB."""
    script = (
        "import os, signal, sys\n"
        "from sftdata.io import TableWriter\n"
        "import polars as pl\n"
        "w = TableWriter(sys.argv[1])\n"
        "w.write(pl.DataFrame({'a': [1]}))\n"
        "assert any('.tmp-' in n for n in os.listdir(os.path.dirname(sys.argv[1])))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "import time; time.sleep(5)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.jsonl")],
                          capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_process_are_swept(tmp_path):
    """L2: kill -9 cannot be caught; the next write of the same target removes its temporary."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".out.jsonl.tmp-{dead}").write_text("half")
    (tmp_path / ".out.jsonl.tmp-1").write_text("pid 1 still runs")  # alive: not ours to remove
    write_table(FRAME, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.jsonl.tmp-1", "out.jsonl"]


# --------------------------------------------------------------------------- directory outputs (M16)


def make_set(folder: Path, tag: str) -> None:
    folder.mkdir(exist_ok=True)
    for name in ("train", "val", "test"):
        (folder / f"{name}.jsonl").write_text(f"{tag}\n")


def test_directory_is_replaced_as_a_set(tmp_path):
    folder = tmp_path / "splits"
    make_set(folder, "old")
    (folder / "notes.txt").write_text("mine")
    with outputs.building_dir(folder, "-o", keep_others=True) as build:
        for name in ("train", "val", "test"):
            (build.path / f"{name}.jsonl").write_text("new\n")
        assert (folder / "train.jsonl").read_text() == "old\n"
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        "train.jsonl": "new\n", "val.jsonl": "new\n", "test.jsonl": "new\n", "notes.txt": "mine"}
    assert leftovers(tmp_path) == []


def test_interrupted_directory_build_leaves_the_old_set_whole(tmp_path):
    """M16: a kill while re-splitting left a new train next to the old val/test (ids in two
    splits). The build goes to a sibling, so the old set stays whole whatever happens."""
    folder = tmp_path / "splits"
    make_set(folder, "old")
    with pytest.raises(KeyboardInterrupt), outputs.building_dir(folder, "-o") as build:
        (build.path / "train.jsonl").write_text("new\n")
        raise KeyboardInterrupt
    assert {p.read_text() for p in folder.iterdir()} == {"old\n"}
    assert leftovers(tmp_path) == []


def test_directory_build_inside_together_waits_for_the_command(tmp_path):
    folder = tmp_path / "shards"
    make_set(folder, "old")
    with pytest.raises(OutputError), outputs.together():
        with outputs.building_dir(folder, "-o") as build:
            write_table(FRAME, build.path / "train.jsonl")
        raise OutputError("a later output failed")
    assert {p.read_text() for p in folder.iterdir()} == {"old\n"} and leftovers(tmp_path) == []


def test_symlinked_directory_output_is_written_through(tmp_path):
    real = tmp_path / "real"
    make_set(real, "old")
    os.symlink("real", tmp_path / "link")
    with outputs.building_dir(tmp_path / "link") as build:
        (build.path / "train.jsonl").write_text("new\n")
    assert (tmp_path / "link").is_symlink()
    assert [p.name for p in real.iterdir()] == ["train.jsonl"]
    assert leftovers(tmp_path) == []


def test_check_spec_labels_survive_specs_helper():
    assert outputs.specs([("--against", ("a", "b")), ("-o", None)]) == [
        Spec("--against", "a"), Spec("--against", "b")]
