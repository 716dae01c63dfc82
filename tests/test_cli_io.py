"""Pipes with real processes: a closed downstream pipe exits 0 quietly (no traceback).

stdin input and stdout-only data are covered through CliRunner in test_cli_convert.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SFTDATA = [sys.executable, "-m", "sftdata.cli"]


@pytest.fixture(scope="module")
def big_alpaca(tmp_path_factory) -> Path:
    """About 3 MB of JSONL: far more than a pipe buffer holds."""
    path = tmp_path_factory.mktemp("pipe") / "big.jsonl"
    row = {"instruction": "Repeat the word.", "input": "", "output": "word " * 30}
    with open(path, "w") as fh:
        for i in range(20_000):
            fh.write(json.dumps({**row, "input": str(i)}) + "\n")
    return path


@pytest.mark.parametrize("to", ["jsonl", "parquet", pytest.param("arrow", marks=pytest.mark.slow)])
def test_closed_downstream_pipe_exits_zero_quietly(big_alpaca, to):
    """The equivalent of `sftdata convert big.jsonl | head -c 100`."""
    proc = subprocess.Popen(
        [*SFTDATA, "convert", str(big_alpaca), "--to", to],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    first = proc.stdout.read(100)
    proc.stdout.close()  # what `head` does once it has enough
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert len(first) == 100
    assert "Traceback" not in stderr and "Error" not in stderr


def test_error_while_stdin_is_being_read_exits_cleanly():
    """A bad first line on a real pipe: exit 1 with the message, no abort from the reader thread."""
    proc = subprocess.run([*SFTDATA, "convert"], input=b'{"text": \n{"text": "ok"}\n',
                          capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "Error: <stdin>, line 1: broken JSON (Expecting value at column 10). "
        "Fix: repair or remove the line, or pass --rejects FILE to skip bad rows\n")
