"""The output-path policy and exit codes through the CLI: CliRunner, and real processes where the
finding needs real pipes, descriptors or signals. Pins H1, H2, H3, M1, M16 and the low findings
on output paths, temporary files and exit codes (L1, L2, L15, L17, L19, L26) with exact exit
codes and messages."""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.schema import from_dicts

ROOT = Path(__file__).resolve().parents[1]
SFTDATA = [sys.executable, "-m", "sftdata.cli"]
ALPACA = ROOT / "fixtures" / "raw" / "alpaca.jsonl"
TOKENIZER = ROOT / "fixtures" / "tokenizers" / "tiny-chatml"


def run(*args, data: bytes = b""):
    return CliRunner().invoke(cli, [str(a) for a in args], input=data)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """records.parquet (with exact duplicates, so validate fails), gold.parquet + lock (all of
    its records are in records.parquet, so leakcheck and gold verify fail), preds.jsonl (every
    prediction wrong, so a gold score gate fails) and rendered.jsonl."""
    folder = tmp_path_factory.mktemp("outputs")
    rows = [chat(f"Which colour is thing number {i} of the big red and blue set of toys here?",
                 "red" if i % 2 else "blue", id=f"r{i}", label="red" if i % 2 else "blue",
                 task="classification") for i in range(40)]
    dupes = [dict(r, id=f"d{i}") for i, r in enumerate(rows[:10])]
    from_dicts(rows + dupes).write_parquet(folder / "records.parquet")
    from_dicts(rows).write_parquet(folder / "held.parquet")
    frozen = run("gold", "freeze", folder / "held.parquet", "-n", 6, "--gold-out",
                 folder / "gold.parquet", "-o", folder / "rest.parquet")
    assert frozen.exit_code == 0, frozen.output
    gold_ids = [line.split('"id":"')[1].split('"')[0]
                for line in run("convert", folder / "gold.parquet").stdout.splitlines()]
    (folder / "preds.jsonl").write_text("".join(f'{{"id": "{i}", "prediction": "green"}}\n' for i in gold_ids))
    rendered = run("render-template", "-t", "chatml", folder / "held.parquet", "-o", folder / "rendered.jsonl")
    assert rendered.exit_code == 0, rendered.output
    return folder


# --------------------------------------------------------------------------- H1: exit codes


def gates(d: Path) -> dict[str, list]:
    return {
        "leakcheck": ["leakcheck", d / "records.parquet", "--against", d / "gold.parquet", "--fail-on", "0"],
        "gold verify": ["gold", "verify", d / "gold.parquet", "--against", d / "records.parquet"],
        "gold score": ["gold", "score", d / "gold.parquet", d / "preds.jsonl", "--min", "accuracy=0.9"],
        "validate": ["validate", d / "records.parquet"],
    }


def run_into_closed_pipe(args: list, stdin=None, stderr_too: bool = True) -> subprocess.CompletedProcess:
    """`sftdata ARGS 2>&1 | head -0`: the reader is gone before the first byte, so every write
    to stdout (and stderr) fails with EPIPE. Deterministic where `| head -1` is a race."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*SFTDATA, *map(str, args)], stdout=write_end,
                              stderr=write_end if stderr_too else subprocess.PIPE,
                              stdin=stdin, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("gate", ["leakcheck", "gold verify", "gold score"])
def test_failing_gate_exits_1_when_its_output_pipe_is_closed(data, gate):
    """H1: `sftdata leakcheck ... --fail-on 0 2>&1 | head -1` exited 0 (a contaminated set passed CI)."""
    assert run_into_closed_pipe(gates(data)[gate]).returncode == 1


@pytest.mark.slow  # Great Expectations takes about 7 s to import
def test_failing_validate_exits_1_when_its_output_pipe_is_closed(data):
    assert run_into_closed_pipe(gates(data)["validate"]).returncode == 1


class BrokenStream(io.TextIOBase):
    """A stream whose reader went away: every write and flush fails with EPIPE."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("gate", ["leakcheck", "gold verify", "gold score", "validate"])
def test_failing_gate_exits_1_whatever_happens_to_stderr(data, gate, monkeypatch):
    """H1 in process, for every gate (validate included): stdout and stderr both broken."""
    monkeypatch.setattr(sys, "stdout", BrokenStream())
    monkeypatch.setattr(sys, "stderr", BrokenStream())
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in gates(data)[gate]], prog_name="sftdata")
    assert exc.value.code == 1


def test_failing_gate_with_stderr_on_a_full_disk_exits_1(data):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([*SFTDATA, *map(str, gates(data)["gold score"])], stderr=full,
                              stdout=subprocess.DEVNULL, cwd=ROOT, timeout=120)
    assert proc.returncode == 1


def test_closed_data_pipe_stays_quiet_but_a_failed_check_stands(data):
    """`| head` on the data output is a quiet exit 0; it never turns a failed check into 0."""
    assert run_into_closed_pipe(["convert", data / "records.parquet"]).returncode == 0
    failing = ["leakcheck", data / "records.parquet", "--against", data / "gold.parquet", "--drop",
               "--fail-on", "0"]
    proc = run_into_closed_pipe(failing, stderr_too=False)
    assert proc.returncode == 1
    last = proc.stderr.decode().splitlines()[-1]
    assert last.startswith("Error: leakcheck failed: ") and last.endswith("exceed --fail-on 0")


def test_usage_error_in_the_body_keeps_exit_2_with_stderr_closed(data, monkeypatch):
    monkeypatch.setattr(sys, "stderr", BrokenStream())
    with pytest.raises(SystemExit) as exc:
        cli.main(["split", str(data / "records.parquet"), "--ratios", "a=0.5,a=0.5"], prog_name="sftdata")
    assert exc.value.code == 2


# --------------------------------------------------------------------------- H2: special outputs


def test_output_through_a_symlink_keeps_the_link(tmp_path):
    """H2: `-o sp/link.jsonl` replaced the link by a regular file; the target kept 'precious'."""
    (tmp_path / "real.jsonl").write_text("precious\n")
    os.symlink("real.jsonl", tmp_path / "link.jsonl")
    result = run("convert", ALPACA, "-o", tmp_path / "link.jsonl")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link.jsonl").is_symlink()
    assert (tmp_path / "real.jsonl").read_text().count('"messages"') == 3
    assert leftovers(tmp_path) == []


def test_output_to_a_fifo_reaches_its_reader(tmp_path):
    """H2: the FIFO became a regular file and its reader got 0 bytes."""
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run("convert", ALPACA, "-o", fifo, "--rejects", tmp_path / "rej.jsonl")
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got[0].count(b'"messages"') == 3


def test_process_substitution_and_dev_stdout(tmp_path):
    """H2: `-o >(wc -c)` crashed (FileNotFoundError '/dev/fd/.63.tmp-PID'); `-o /dev/stdout`
    replaced the /proc/self/fd/1 link, so nothing reached stdout."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*SFTDATA, "convert", str(ALPACA), "-o", f"/dev/fd/{write_end}"],
                            pass_fds=(write_end,), stderr=subprocess.PIPE, cwd=ROOT)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        piped = fh.read()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert piped.count(b'"messages"') == 3
    out = subprocess.run([*SFTDATA, "convert", str(ALPACA), "--to", "parquet", "-o", "/dev/stdout"],
                         capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout[:4] == b"PAR1"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_node_stays_a_device(tmp_path):
    """H2: `-o /dev/null` or `-o /dev/full` replaced the node; a copy of /dev/null here."""
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    result = run("convert", ALPACA, "-o", node)
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(node).st_mode) and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- H3: clashes


def clash_cases(d: Path, w: Path) -> dict[str, tuple[list, str, Path]]:
    """name -> (arguments, message fragment, the file that must survive unchanged)."""
    rec, gold, rend = w / "in.parquet", w / "gold.parquet", w / "rend.jsonl"
    return {
        "dedup --dupes INPUT": (["dedup", rec, "--dupes", rec, "-o", w / "k.jsonl"],
                                f"--dupes {rec} is the same file as INPUT {rec}", rec),
        "freeze --gold-out = --lock": (
            ["gold", "freeze", rec, "-n", "5", "--gold-out", w / "g.parquet", "--lock", w / "g.parquet",
             "-o", w / "rest.parquet"],
            f"--gold-out {w}/g.parquet and --lock {w}/g.parquet name the same file", rec),
        "balance --rejects = -o": (
            ["balance", "--by", "label", "--cap", "5", rec, "--rejects", w / "same.jsonl", "-o", w / "same.jsonl"],
            f"-o {w}/same.jsonl and --rejects {w}/same.jsonl name the same file", rec),
        "split --report INPUT": (["split", rec, "--report", rec], f"--report {rec} is the same file as INPUT", rec),
        "balance --rejects INPUT": (["balance", "--by", "label", "--cap", "5", rec, "--rejects", rec],
                                    f"--rejects {rec} is the same file as INPUT", rec),
        "tokenize --report INPUT": (["tokenize", "-t", TOKENIZER, rend, "--report", rend, "-o", w / "t.parquet"],
                                    f"--report {rend} is the same file as INPUT", rend),
        "tokenize --plot = -o": (["tokenize", "-t", TOKENIZER, rend, "--plot", w / "t.png", "-o", w / "t.png",
                                  "--to", "jsonl"], "name the same file", rend),
        "leakcheck --report TRAIN": (["leakcheck", rec, "--against", gold, "--report", rec],
                                     f"--report {rec} is the same file as TRAIN", rec),
        "leakcheck --report = --against": (["leakcheck", rec, "--against", gold, "--report", gold],
                                           f"--report {gold} is the same file as --against", gold),
        "convert --rejects via symlink": (["convert", rec, "--rejects", w / "alias.parquet"],
                                          f"--rejects {w}/alias.parquet is the same file as INPUT", rec),
        "render -o via hard link": (["render-template", "-t", "chatml", rend, "-o", w / "hard.jsonl"],
                                    "is the same file as INPUT", rend),
        "validate --report INPUT": (["validate", rec, "--report", rec], "is the same file as INPUT", rec),
        "verify --report = lock": (["gold", "verify", gold, "--report", w / "gold.lock.json"],
                                   "is the same file as --lock", w / "gold.lock.json"),
        "score --report PREDICTIONS": (["gold", "score", gold, w / "preds.jsonl", "--report", w / "preds.jsonl"],
                                       "is the same file as PREDICTIONS", w / "preds.jsonl"),
        "dedup -o - and --dupes /dev/stdout": (["dedup", rec, "--dupes", "-"],
                                                "--dupes needs a file path; stdout carries the kept records", rec),
        "split --rejects inside -o DIR": (["split", rec, "-o", w / "sp", "--rejects", w / "sp" / "r.jsonl"],
                                          f"--rejects {w}/sp/r.jsonl (an output) is inside -o {w}/sp", rec),
    }


CLASH_NAMES = list(clash_cases(Path("d"), Path("w")))


@pytest.mark.parametrize("name", CLASH_NAMES)
def test_an_output_that_is_an_input_or_another_output_is_refused_before_work(data, tmp_path, name):
    """H3: these destroyed inputs, gold sets and rejects with exit 0."""
    for f in ("gold.parquet", "gold.lock.json", "preds.jsonl"):
        shutil.copy(data / f, tmp_path / f)
    shutil.copy(data / "records.parquet", tmp_path / "in.parquet")
    shutil.copy(data / "rendered.jsonl", tmp_path / "rend.jsonl")
    os.symlink("in.parquet", tmp_path / "alias.parquet")
    os.link(tmp_path / "rend.jsonl", tmp_path / "hard.jsonl")
    args, message, kept = clash_cases(data, tmp_path)[name]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert kept.read_bytes() == before[kept.name]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert result.stdout == ""


def test_stdout_appended_to_the_input_is_refused(data, tmp_path):
    """`sftdata convert x.jsonl >> x.jsonl` would read its own output without end."""
    target = tmp_path / "x.jsonl"
    shutil.copy(ALPACA, target)
    with open(target, "ab") as out:
        proc = subprocess.run([*SFTDATA, "convert", str(target)], stdout=out, stderr=subprocess.PIPE,
                              cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (f"Error: -o (stdout) is the same file as INPUT {target}: writing it "
                                    "would destroy the input; give -o another path\n")
    assert target.read_bytes() == ALPACA.read_bytes()


def test_pack_refuses_an_input_inside_its_output_dir(data, tmp_path):
    """L26: `pack pdir/tok.parquet -o pdir --force` deleted the input."""
    (tmp_path / "pdir").mkdir()
    shutil.copy(data / "records.parquet", tmp_path / "pdir" / "tok.parquet")  # refused before it is read
    result = run("pack", tmp_path / "pdir" / "tok.parquet", "-o", tmp_path / "pdir", "--force", "--seq-len", 64)
    assert result.exit_code == 2
    assert (f"Error: INPUT {tmp_path}/pdir/tok.parquet (an input) is inside -o {tmp_path}/pdir, which is "
            "replaced as a whole; move it out or give -o another directory") in result.stderr
    assert (tmp_path / "pdir" / "tok.parquet").is_file()


# --------------------------------------------------------------------------- M1: clean errors first


def test_directory_as_output_is_a_clean_error_before_work(tmp_path):
    """M1: IsADirectoryError after the work, and a complete .exdir.tmp-PID left behind."""
    (tmp_path / "exdir").mkdir()
    result = run("convert", ALPACA, "-o", tmp_path / "exdir")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: -o {tmp_path}/exdir is a directory; -o writes a file: give a file "
                             f"name such as {tmp_path}/exdir/out.jsonl\n")
    assert leftovers(tmp_path) == [] and list((tmp_path / "exdir").iterdir()) == []


def test_trailing_slash_names_a_directory(tmp_path):
    """L15: `-o newdir/` wrote a file named newdir. It names a directory: a dataset of parts
    and a manifest (issue 13); a file output with a slash is still refused."""
    result = run("convert", ALPACA, "-o", f"{tmp_path}/newdir/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "newdir").iterdir()) == [
        "manifest.json", "part-00000.parquet"]
    result = run("convert", ALPACA, "-o", f"{tmp_path}/out.jsonl", "--rejects",
                 f"{tmp_path}/rej/")
    assert result.exit_code == 0 and (tmp_path / "rej" / "manifest.json").is_file()
    result = run("split", ALPACA, "--report", f"{tmp_path}/rep/")
    assert result.exit_code == 2
    assert f"Error: --report {tmp_path}/rep/ ends with '/', so it names a directory" in result.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = run("convert", ALPACA, "-o", f"{tmp_path}/mine/")
    assert result.exit_code == 2
    assert "is not an sftdata dataset (no manifest.json)" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_extension_and_to_must_agree(tmp_path):
    """L15: `-o out.parquet --to jsonl` wrote JSONL under a .parquet name."""
    result = run("convert", ALPACA, "-o", tmp_path / "out.parquet", "--to", "jsonl")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {tmp_path}/out.parquet: the name says parquet but --to says jsonl; "
                             "rename the file or drop --to\n")


NOCAP = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
         "--inh-caps=-dac_override,-dac_read_search,-fowner"]


def unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: a read-only directory cannot be made")
    return NOCAP


@pytest.mark.parametrize("case", ["convert -o", "dedup --dupes", "gold freeze -o"])
def test_read_only_directory_is_a_clean_error_before_any_work(data, tmp_path, case):
    """M1: a PermissionError traceback after the work: dedup had streamed all records to stdout,
    gold freeze had written the gold set and its lock."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    args = {
        "convert -o": (["convert", ALPACA, "-o", ro / "x.jsonl"], "-o"),
        "dedup --dupes": (["dedup", data / "records.parquet", "--dupes", ro / "d.jsonl"], "--dupes"),
        "gold freeze -o": (["gold", "freeze", data / "held.parquet", "-n", "5", "--gold-out",
                            tmp_path / "g2.parquet", "-o", ro / "rest.parquet"], "-o"),
    }[case]
    try:
        proc = subprocess.run([*unprivileged(), *SFTDATA, *map(str, args[0])], capture_output=True,
                              cwd=ROOT, timeout=120)
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith(f"Error: {args[1]} {ro}/")
    assert f"cannot write in {ro}/ (Permission denied); choose a place you can write to" in proc.stderr.decode()
    assert proc.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]  # no gold set, no lock


def test_closed_stdout_is_a_usage_error():
    proc = subprocess.run(f"exec >&-; exec {sys.executable} -m sftdata.cli convert {ALPACA}",
                          shell=True, capture_output=False, stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert b"Error: -o (stdout): stdout is closed; redirect it (> FILE) or give -o a file" in proc.stderr


def test_closed_stderr_still_writes_the_data():
    proc = subprocess.run(f"exec 2>&-; exec {sys.executable} -m sftdata.cli convert {ALPACA}",
                          shell=True, stdout=subprocess.PIPE, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count(b'"messages"') == 3


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("to", ["jsonl", "parquet"])
def test_full_disk_on_stdout_is_a_clean_error(to):
    """L1: OSError 28 / Polars ComputeError tracebacks."""
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([*SFTDATA, "convert", str(ALPACA), "--to", to], stdout=full,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines()[-1] == (
        "Error: stdout: cannot write (No space left on device). Fix: free some space or write to another disk")


# --------------------------------------------------------------------------- M16 and L2


def test_failed_split_leaves_the_old_split_set_whole(data, tmp_path, monkeypatch):
    """M16: a re-split cut short left a new train next to the old val/test (train/test leakage)."""
    out = tmp_path / "splits"
    first = run("split", data / "records.parquet", "--seed", 1, "-o", out)
    assert first.exit_code == 0, first.output
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    from sftdata.commands import split as split_command
    from sftdata.errors import DataError

    real_write = split_command.write_table
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise DataError("disk gone")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(split_command, "write_table", fail_second)
    again = run("split", data / "records.parquet", "--seed", 2, "-o", out)
    assert again.exit_code == 1 and "Error: disk gone" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(split_command, "write_table", real_write)
    third = run("split", data / "records.parquet", "--seed", 2, "-o", out)
    assert third.exit_code == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after["notes.txt"] == b"mine"  # other files in the directory stay
    assert all(after[n] != before[n] for n in ("train.parquet", "val.parquet", "test.parquet"))


def test_sigterm_mid_write_leaves_no_temporary(tmp_path):
    """L2: after SIGTERM (rc 143) a .NAME.tmp-PID file was left behind."""
    proc = subprocess.Popen([*SFTDATA, "convert", "-o", str(tmp_path / "out.parquet")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdin.write(ALPACA.read_bytes() * 20)  # more than the 4 KiB sniffed before the output opens
    proc.stdin.flush()  # stdin stays open: the command is mid-run, its temporary written
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(tmp_path) == [f".out.parquet.tmp-{proc.pid}"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    proc.stdin.close()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- small output findings


def test_duplicate_ratio_name_is_named(data):
    """L17: `--ratios train=0.5,train=0.5` was reported as 'must add up to 1 (got 0.5)'."""
    result = run("split", data / "records.parquet", "--ratios", "train=0.5,train=0.5")
    assert result.exit_code == 2
    assert "Error: --ratios: 'train' is given twice; give each name once" in result.stderr


@pytest.mark.parametrize("command", ["split", "balance"])
def test_rejects_file_is_written_even_when_empty(data, tmp_path, command):
    """L17: split (ratios mode) and balance did not create --rejects when nothing was rejected,
    so a stale file from an earlier run survived; convert creates an empty one."""
    rejects = tmp_path / "rej.jsonl"
    rejects.write_text("stale\n")
    extra = ["--by", "label", "--cap", "1000"] if command == "balance" else []
    result = run(command, *extra, data / "records.parquet", "--rejects", rejects)
    assert result.exit_code == 0, result.output
    assert rejects.read_text() == ""


def test_gold_freeze_does_not_replace_a_frozen_set_silently(data, tmp_path):
    """L19: a second freeze onto the same --gold-out replaced the gold set and its lock."""
    args = ["gold", "freeze", data / "held.parquet", "-n", "5", "--gold-out", tmp_path / "g.parquet",
            "-o", tmp_path / "rest.parquet"]
    assert run(*args).exit_code == 0
    before = (tmp_path / "g.parquet").read_bytes(), (tmp_path / "g.lock.json").read_bytes()
    again = run(*args, "--seed", 7)
    assert again.exit_code == 2
    assert (f"Error: --gold-out {tmp_path}/g.parquet and --lock {tmp_path}/g.lock.json already exist: "
            "a frozen gold set is not replaced silently") in again.stderr
    assert ((tmp_path / "g.parquet").read_bytes(), (tmp_path / "g.lock.json").read_bytes()) == before
    forced = run(*args, "--seed", 7, "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "g.lock.json").read_bytes() != before[1]


def test_sfttrain_plan_that_does_not_fit_exits_1_with_stdout_closed(tmp_path, monkeypatch):
    """H1 for sfttrain's gate: `sfttrain plan ... | head -1` exited 0 on a plan that does not fit."""
    from sfttrain_helpers import task_records, write_shards

    from sfttrain.cli import cli as sfttrain_cli

    tiny = ROOT / "fixtures" / "models" / "tiny-llama"  # plan reads config.json only
    shards = write_shards(tmp_path / "shards", {"train": task_records(4)})
    monkeypatch.setattr(sys, "stdout", BrokenStream())
    monkeypatch.setattr(sys, "stderr", BrokenStream())
    with pytest.raises(SystemExit) as exc:
        sfttrain_cli.main(["plan", str(shards), "--model", str(tiny), "--gpu-mem", "1MiB"],
                          prog_name="sfttrain")
    assert exc.value.code == 1
