"""The one output-path policy: how every file or directory a command writes gets there.

* ``-`` is stdout. ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` and ``/proc/self/fd/N`` (what
  ``>(cmd)`` expands to) are this process's own file descriptors: written through a copy of the
  descriptor, so the shell's redirection (``>``, ``>>``, a pipe) decides where the bytes go.
* A regular file, or a path that does not exist yet, is written atomically: a temporary
  ``.NAME.tmp-PID`` in the same directory, renamed onto NAME when the write succeeds.
* A symlink is written through: the file it points to is replaced (atomically, in that file's
  own directory) and the link stays a link. A dangling link creates the file it names.
* Anything else (a FIFO, ``/dev/null``, a character device, a socket) is written in place:
  opened and written, never renamed over.
* A directory output (``split -o DIR``, ``pack -o DIR``) is built in ``.DIR.tmp-PID`` beside it
  and swapped in as a whole (one renameat2(RENAME_EXCHANGE) where the kernel has it): readers
  see the old set or the new set, never half of each.
* Every temporary file or directory is registered while it lives and removed on every exit: an
  error, SIGTERM or SIGHUP (SIGINT unwinds as KeyboardInterrupt), interpreter exit. ``kill -9``
  cannot be caught; its leftovers (``.NAME.tmp-PID`` of a process that no longer runs) are swept
  the next time the same target is written.
* Inside :func:`together` (every sftdata command runs in one) the renames wait until the command
  ends: its files appear together, or none does when it fails.
* :func:`check` runs before any work: every output against every input and every other output
  (the same file after symlinks, or a path inside a directory output), and whether each output
  can be written (a directory in the way, a read-only or uncreatable directory).

No Polars here: sfttrain uses it too.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import DataPipeClosed, OutputError, UsageProblem

STDIO = "-"
DATA = "-o"  # the label of a command's data output: a closed pipe there ends quietly

# --------------------------------------------------------------------------- what a path is

_FD_LINK = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")
_STD_LINK = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def descriptor(path: str | os.PathLike) -> int | None:
    """The file descriptor a path names (/dev/stdout, /dev/fd/63, /proc/self/fd/3), else None."""
    text = os.path.normpath(os.fspath(path))
    if text in _STD_LINK:
        return _STD_LINK[text]
    match = _FD_LINK.match(text)
    if match and (match.group(1) is None or int(match.group(1)) == os.getpid()):
        return int(match.group(2))
    return None


def kind(path: str | os.PathLike | None) -> str:
    """How a path is written: 'stdout'; 'fd' (a descriptor of this process, written through);
    'special' (FIFO, device, socket: in place); 'file' (atomic; it may not exist yet);
    'directory' (not writable as a file)."""
    if path is None or os.fspath(path) == STDIO:
        return "stdout"
    if descriptor(path) is not None:
        return "fd"
    try:
        st = os.stat(path)  # follows symlinks: a link is judged by what it points to
    except OSError:
        return "file"  # new (or a dangling link: the file it names is created)
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "special"


def real_path(path: str | os.PathLike) -> Path:
    """Where an atomic write lands: symlinks resolved, so a link itself is never replaced."""
    return Path(os.path.realpath(path))


def temp_name(real: Path, tag: str = "tmp") -> Path:
    return real.with_name(f".{real.name}.{tag}-{os.getpid()}")


# --------------------------------------------------------------------------- temporaries

_live: dict[str, bool] = {}  # temporary path -> is a directory
_made_dirs: list[str] = []  # parent directories created for outputs; removed if the command fails
_lock = threading.Lock()
_handlers_installed = False


def _register(path: Path, is_dir: bool = False) -> None:
    _install_handlers()
    with _lock:
        _live[str(path)] = is_dir


def _forget(path: Path) -> None:
    with _lock:
        _live.pop(str(path), None)


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def cleanup(made_dirs: bool = True) -> None:
    """Remove every registered temporary (and, with ``made_dirs``, the parent directories made
    for outputs, when empty). Runs on errors, on SIGTERM/SIGHUP and at interpreter exit."""
    with _lock:
        live = dict(_live)
        _live.clear()
        made = list(_made_dirs) if made_dirs else []
        if made_dirs:
            _made_dirs.clear()
    for path, is_dir in live.items():
        _remove(path, is_dir)
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty


def _on_signal(signum: int, frame: Any) -> None:
    cleanup()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as the shell expects (exit status 128+N)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(cleanup, False)  # temporaries only: directories of finished outputs stay
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        with contextlib.suppress(ValueError, OSError, TypeError):
            if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _on_signal)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def sweep(real: Path) -> None:
    """Remove ``.NAME.tmp-PID`` (and ``.NAME.old-PID``) left beside ``real`` by a process that
    no longer runs: kill -9 cannot be caught."""
    try:
        siblings = list(real.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        for tag in ("tmp", "old"):
            prefix = f".{real.name}.{tag}-"
            pid = sibling.name[len(prefix):]
            if not sibling.name.startswith(prefix) or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if tag == "old" and not real.exists():
                continue  # a swap cut short: the old set is the only one left; keep it
            _remove(str(sibling), sibling.is_dir() and not sibling.is_symlink())


def _make_parents(folder: Path) -> None:
    missing = []
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        os.mkdir(d)
        with _lock:
            _made_dirs.append(str(d))


# --------------------------------------------------------------------------- commits


class _Batch:
    def __init__(self) -> None:
        self.commits: list[Callable[[], None]] = []
        self.discards: list[Callable[[], None]] = []


_batch: _Batch | None = None


@contextlib.contextmanager
def together(keep_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Hold back every rename until the block ends: then all outputs appear together, or, on an
    exception not in ``keep_on``, none does and every temporary is removed."""
    global _batch
    outer, batch = _batch, _Batch()
    _batch = batch
    try:
        yield
    except keep_on:
        _batch = outer
        _commit_all(batch)
        raise
    except BaseException:
        _batch = outer
        for discard in batch.discards:
            discard()
        cleanup()
        raise
    _batch = outer
    _commit_all(batch)


def _commit_all(batch: _Batch) -> None:
    done = 0
    try:
        for commit in batch.commits:
            commit()
            done += 1
    except BaseException:
        for discard in batch.discards[done:]:
            discard()
        raise
    with _lock:
        _made_dirs.clear()  # the outputs stand, and so do their directories


@contextlib.contextmanager
def immediately() -> Iterator[None]:
    """Writes in this block are committed at once, even inside :func:`together` (pack writes
    its rejects before it stops with "all rows were dropped")."""
    global _batch
    outer, _batch = _batch, None
    try:
        yield
    finally:
        _batch = outer


def _schedule(commit: Callable[[], None], discard: Callable[[], None]) -> None:
    if _batch is None:
        commit()
    else:
        _batch.commits.append(commit)
        _batch.discards.append(discard)


# --------------------------------------------------------------------------- errors

_FIXES = {
    errno.EACCES: "choose a place you can write to, or change its permissions",
    errno.EPERM: "choose a place you can write to, or change its permissions",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space (disk quota exceeded) or write to another disk",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a file is in the way of that directory; give another path",
    errno.ENOENT: "create the directory first, or give another path",
    errno.EPIPE: "the program reading it exited before everything was written",
    errno.EBADF: "the descriptor is closed; redirect it to a file or give a file path",
}


def error_number(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a Polars/pyarrow error that only says it in its text."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    match = re.search(r"os error (\d+)|\[Errno (\d+)\]", text)
    if match:
        return int(match.group(1) or match.group(2))
    if "Broken pipe" in text:
        return errno.EPIPE
    if "No space left on device" in text:
        return errno.ENOSPC
    return None


def _describe(label: str | None, path: Any) -> str:
    if path is None or os.fspath(path) == STDIO:
        return "stdout"
    return f"{label} {os.fspath(path)}" if label else os.fspath(path)


def failure(exc: BaseException, label: str | None, path: Any,
            doing: str = "cannot write") -> BaseException:
    """An I/O error while writing an output, as what the CLI reports: a closed pipe on the data
    output (or on stdout) is DataPipeClosed (quiet exit 0 unless a check failed); anything
    else is an OutputError naming the option, the path, the cause and the fix."""
    code = error_number(exc)
    if code == errno.EPIPE and (label in (None, DATA) or kind(path) == "stdout"
                                or descriptor(path or STDIO) == 1):
        return DataPipeClosed(errno.EPIPE, "Broken pipe")
    text = os.strerror(code) if code is not None else str(exc).splitlines()[0]
    return OutputError(f"{_describe(label, path)}: {doing} ({text})",
                       fix=_FIXES.get(code) if code is not None else None)


# --------------------------------------------------------------------------- writing


class Output:
    """One output being written: ``fh`` (binary) until ``close(ok)``.

    stdout and descriptors are written through; special files in place; regular files into a
    registered temporary beside the real target, renamed onto it on ``close(ok=True)`` (at the
    end of the command inside :func:`together`).
    """

    def __init__(self, path: str | os.PathLike | None, label: str | None = None) -> None:
        self.label = label
        self.path = STDIO if path is None else path
        self.kind = kind(self.path)
        self.tmp: Path | None = None
        self.real: Path | None = None
        self._closed = False
        try:
            self.fh: IO[bytes] = self._open()
        except OSError as exc:
            raise failure(exc, label, self.path) from None

    def _open(self) -> IO[bytes]:
        if self.kind == "stdout":
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise OSError(errno.EBADF, "stdout is closed")
            return sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
        if self.kind == "fd":
            return os.fdopen(os.dup(descriptor(self.path)), "wb")
        if self.kind == "special":
            return open(self.path, "wb")  # a FIFO waits here for its reader
        if self.kind == "directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        self.real = real_path(self.path)
        _make_parents(self.real.parent)
        sweep(self.real)
        self.tmp = temp_name(self.real)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)  # our own, from an earlier write of this process
        _register(self.tmp)
        try:
            return open(self.tmp, "xb")
        except BaseException:
            _forget(self.tmp)
            raise

    def close(self, ok: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.kind == "stdout":
                if ok:
                    self.fh.flush()
            else:
                self.fh.close()
        except OSError as exc:
            if self.tmp is not None:
                self._discard()
            if ok:
                raise failure(exc, self.label, self.path) from None
            return
        if self.tmp is None:
            return
        if ok:
            _schedule(self._commit, self._discard)
        else:
            self._discard()

    def _commit(self) -> None:
        try:
            os.replace(self.tmp, self.real)
        except OSError as exc:
            self._discard()
            raise failure(exc, self.label, self.path, "cannot put the new file in place") from None
        _forget(self.tmp)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
        _forget(self.tmp)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)


def write_bytes(data: bytes, target: str | os.PathLike | None, label: str | None = None) -> None:
    """``data`` to ``target`` under the policy (atomic file, or in place for pipes and devices)."""
    out = Output(target, label)
    try:
        out.fh.write(data)
    except OSError as exc:
        out.close(ok=False)
        raise failure(exc, label, out.path) from None
    except BaseException:
        out.close(ok=False)
        raise
    out.close(ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, label: str | None = None) -> Iterator[Path]:
    """A path to write ``target`` through, for writers that want a path (matplotlib, pyarrow).

    For a regular file it is a registered temporary beside the real target, renamed onto it
    when the block succeeds. For stdout, a descriptor or a special file it is a registered
    temporary elsewhere whose bytes are then written to the target in place.
    """
    how = kind(target)
    if how == "directory":
        raise failure(IsADirectoryError(errno.EISDIR, "is a directory"), label, target)
    if how != "file":
        fd, name = tempfile.mkstemp(prefix=".sftdata-")
        os.close(fd)
        tmp = Path(name)
        _register(tmp)
        try:
            yield tmp
            if tmp.exists():
                write_bytes(tmp.read_bytes(), target, label)
        finally:
            _remove(name, False)
            _forget(tmp)
        return
    real = real_path(target)
    try:
        _make_parents(real.parent)
    except OSError as exc:
        raise failure(exc, label, target) from None
    sweep(real)
    tmp = temp_name(real)
    _register(tmp)

    def commit() -> None:
        try:
            os.replace(tmp, real)
        except OSError as exc:
            discard()
            raise failure(exc, label, target, "cannot put the new file in place") from None
        _forget(tmp)

    def discard() -> None:
        _remove(str(tmp), False)
        _forget(tmp)

    try:
        yield tmp
    except BaseException:
        discard()
        raise
    if not tmp.exists():
        discard()  # nothing was written: the target stays as it was
        return
    _schedule(commit, discard)


# --------------------------------------------------------------------------- directories


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry(old: Path, new: Path) -> list[str]:
    """Hard-link (or copy) every entry of ``old`` that ``new`` lacks into ``new``."""
    carried = []
    for entry in sorted(old.iterdir()):
        dest = new / entry.name
        if os.path.lexists(dest):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest)
        elif entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest)
        carried.append(entry.name)
    return carried


@dataclass
class DirBuild:
    """A directory output being built: write into ``path``. After the swap, ``carried`` names
    the entries kept from the directory it replaced (with ``keep_others``)."""

    path: Path
    target: Path
    carried: list[str]


@contextlib.contextmanager
def building_dir(target: str | os.PathLike, label: str | None = None,
                 keep_others: bool = False) -> Iterator[DirBuild]:
    """Build a directory output in a temporary sibling, then swap it in as a whole.

    With ``keep_others`` the entries of the existing directory that the new build does not
    write are carried over (hard links): the files written are replaced together, other files
    stay. A symlink to a directory is written through (the link stays a link).
    """
    real = real_path(target)
    try:
        _make_parents(real.parent)
        sweep(real)
        tmp = temp_name(real)
        shutil.rmtree(tmp, ignore_errors=True)
        _register(tmp, is_dir=True)
        tmp.mkdir()
    except OSError as exc:
        raise failure(exc, label, target) from None
    build = DirBuild(tmp, real, [])

    def discard() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        _forget(tmp)

    def commit() -> None:
        try:
            if real.is_dir():
                if keep_others:
                    build.carried = _carry(real, tmp)
                if _exchange(tmp, real):
                    shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old set
                else:
                    old = temp_name(real, "old")
                    _register(old, is_dir=True)
                    os.replace(real, old)
                    os.replace(tmp, real)
                    shutil.rmtree(old, ignore_errors=True)
                    _forget(old)
            else:
                os.replace(tmp, real)
        except OSError as exc:
            discard()
            raise failure(exc, label, target, "cannot put the new directory in place") from None
        _forget(tmp)

    try:
        yield build
    except BaseException:
        discard()
        raise
    _schedule(commit, discard)


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class Spec:
    """One path of a command: its option (``-o``, ``--report``, ``INPUT``), the path, and for
    an output whether it is a directory."""

    label: str
    path: str
    is_dir: bool = False


def specs(items: Sequence[tuple[str, Any]], dirs: Sequence[str] = ()) -> list[Spec]:
    """[(label, path, paths or None), ...] -> Specs; labels in ``dirs`` are directory outputs."""
    out = []
    for label, value in items:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                out.append(Spec(label, os.fspath(v), label in dirs))
    return out


def _stream_key(stream: Any, tests: tuple[Callable[[int], bool], ...]) -> tuple | None:
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None  # no real descriptor (CliRunner): nothing to compare
    return ("ino", st.st_dev, st.st_ino) if any(t(st.st_mode) for t in tests) else None


def _is_devnull(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


def _key(path: str, output: bool) -> tuple | None:
    """What identifies the file behind a path; None when nothing can clash with it."""
    if path == STDIO:
        if output:  # stdout, when it is a pipe or a file, can be named again (/dev/stdout)
            return _stream_key(sys.stdout, (stat.S_ISREG, stat.S_ISFIFO)) or ("stdout",)
        return _stream_key(sys.stdin, (stat.S_ISREG,))  # `< in.jsonl ... -o in.jsonl`
    fd = descriptor(path)
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path)
    except OSError:
        try:  # `sub/../in.jsonl` with no sub/ yet: the write would land on in.jsonl
            st = os.stat(os.path.realpath(path))
        except OSError:
            return ("path", os.path.realpath(path))
    if _is_devnull(st) or stat.S_ISDIR(st.st_mode) and not output:
        return None  # /dev/null clashes with nothing; an input directory is checked by file
    return ("ino", st.st_dev, st.st_ino)


def _show(spec: Spec, output: bool) -> str:
    if spec.path == STDIO:
        return f"{spec.label} (stdout)" if output else f"{spec.label} (stdin)"
    return f"{spec.label} {spec.path}"


def _inside(path: str, folder: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check(inputs: Iterable[Spec], outputs: Iterable[Spec]) -> None:
    """Before any work: refuse (UsageProblem, exit 2) an output that is an input or another
    output, that lies inside a directory output, or that cannot be written; all problems are
    listed together. Missing parent directories are made (and removed if the command fails)."""
    inputs, outputs = list(inputs), list(outputs)
    problems: list[str] = []
    out_keys = [(s, _key(s.path, output=True)) for s in outputs]
    in_keys = [(s, _key(s.path, output=False)) for s in inputs]
    for i, (spec, key) in enumerate(out_keys):
        if key is None:
            continue
        for other, other_key in out_keys[:i]:
            if key == other_key:
                problems.append(f"{_show(other, True)} and {_show(spec, True)} name the same "
                                "file; give them different paths")
        for source, source_key in in_keys:
            if key == source_key:
                problems.append(f"{_show(spec, True)} is the same file as {_show(source, False)}: "
                                f"writing it would destroy the input; give {spec.label} another path")
    for folder in (s for s in outputs if s.is_dir and s.path != STDIO):
        others = [(s, True) for s in inputs] + [(s, False) for s in outputs if s is not folder]
        for other, is_input in others:
            if other.path == STDIO or descriptor(other.path) is not None:
                continue
            if _inside(other.path, folder.path):
                what = "an input" if is_input else "an output"
                problems.append(f"{_show(other, not is_input)} ({what}) is inside {folder.label} "
                                f"{folder.path}, which is replaced as a whole; move it out or "
                                f"give {folder.label} another directory")
    if not problems:
        problems = [p for p in (_writable(s) for s in outputs) if p]
    if len(problems) == 1:
        raise UsageProblem(problems[0])
    if problems:
        raise UsageProblem(f"{len(problems)} problems with output paths:\n  " + "\n  ".join(problems))


def _writable(spec: Spec) -> str | None:
    """None when ``spec`` can be written; else what is wrong and the fix."""
    path, shown, how = spec.path, _show(spec, True), kind(spec.path)
    if how == "stdout":
        if sys.stdout is None:
            return f"{shown}: stdout is closed; redirect it (> FILE) or give {spec.label} a file"
        return None
    if how == "fd":
        try:
            os.fstat(descriptor(path))
        except OSError:
            return f"{shown}: file descriptor {descriptor(path)} is not open"
        return None
    if spec.is_dir:
        if how != "directory" and os.path.lexists(path):
            return f"{shown} exists and is not a directory; give a directory path"
        return _probe(shown, real_path(path).parent, make_dir=True)
    if how == "directory":
        return (f"{shown} is a directory; {spec.label} writes a file: give a file name such as "
                f"{os.path.join(path, 'out' + _suffix(spec))}")
    if path.endswith(("/", os.sep)):
        return (f"{shown} ends with '/', so it names a directory; {spec.label} writes a file: "
                f"give a file name such as {path}out{_suffix(spec)}")
    if how == "special":
        if not os.access(path, os.W_OK):
            return f"{shown}: not writable (permission denied); choose a place you can write to"
        return None
    return _probe(shown, real_path(path).parent)


def _suffix(spec: Spec) -> str:
    return {"--report": ".json", "--lock": ".lock.json", "--plot": ".png"}.get(spec.label, ".jsonl")


def _probe(shown: str, folder: Path, make_dir: bool = False) -> str | None:
    """Can a file (or directory) be created in ``folder``? Made if missing, then tried."""
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{shown}: {probe} is not a directory; give a path whose parents are directories"
    try:
        _make_parents(folder)
    except OSError as exc:
        return (f"{shown}: cannot create the directory {folder} ({exc.strerror}); "
                f"{_FIXES.get(exc.errno, 'give another path')}")
    test = folder / f".sftdata-write-test-{os.getpid()}"
    try:
        if make_dir:
            test.mkdir()
            test.rmdir()
        else:
            os.close(os.open(test, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(test)
    except OSError as exc:
        return (f"{shown}: cannot write in {folder}/ ({exc.strerror}); "
                f"{_FIXES.get(exc.errno, 'choose a directory you can write to')}")
    return None


@contextlib.contextmanager
def scratch_dir(tag: str) -> Iterator[Path]:
    """A private directory for spilled intermediates (``$TMPDIR/sftdata-TAG-*``), removed when
    the block ends, on an error, on SIGTERM/SIGHUP and at exit: no spill file survives. An I/O
    error making it, or on a file inside it (a full disk), is an OutputError naming it."""
    try:
        path = Path(tempfile.mkdtemp(prefix=f"sftdata-{tag}-"))
    except OSError as exc:
        raise _scratch_failure(exc, tempfile.gettempdir()) from None
    _register(path, is_dir=True)
    try:
        yield path
    except OSError as exc:
        named = getattr(exc, "filename", None)
        ours = (_inside(os.fspath(named), str(path)) if named is not None
                else exc.errno in (errno.ENOSPC, errno.EDQUOT))  # a full disk names no file
        if not ours:
            raise  # another file's, or a closed pipe: their own handlers say so
        raise _scratch_failure(exc, path) from None
    finally:
        _forget(path)
        _remove(str(path), True)


def _scratch_failure(exc: OSError, where: Any) -> BaseException:
    error = failure(exc, "scratch space", where)
    if isinstance(error, OutputError):
        error.fix = "set TMPDIR to a directory with room (the spill needs about the input's size)"
    return error
