"""The Ray engine: the same ops as Ray Data tasks, on a local Ray or an existing cluster.

Row-local work is ``map_batches`` over a dataset of unit indices: each task reads its unit
(a worker reads part files itself; in-memory slices travel through the object store), runs the
op and returns the pickled result, and the driver receives results in unit order
(``preserve_order``), which is what makes the output equal to the local engine's. Global steps
(dedup) are Ray Data shuffles: ``groupby(key).map_groups`` (hash partitioned). Ray's own
output is kept off stderr: no dashboard, no usage stats, no worker logs to the driver, Ray
Data's progress bars and INFO lines off. An error inside a task reaches the user as the same
``Error: ...`` line the local engine gives (our errors are returned, not raised, by tasks; any
other worker failure is unwrapped from RayTaskError into a DataError).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from .. import datasets
from ..errors import DataError, SftError

PARTITIONS_PER_CPU = 2  # hash partitions of a shuffle per cluster CPU


def init(address: str | None = None) -> None:
    """Connect to ``address`` (or $RAY_ADDRESS), else start a local Ray; quietly, once."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # Ray's C++ core writes to fd 2
    try:
        import ray
    except ImportError:
        from ..errors import UsageProblem

        raise UsageProblem("--engine ray needs Ray: pip install 'sftdata[ray]'") from None
    if not ray.is_initialized():
        _probe(address or os.environ.get("RAY_ADDRESS"))
        try:
            with _stderr_silenced():  # the C++ core's retry warnings; our error line follows
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, configure_logging=True,
                         num_cpus=_local_cpus(address))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            from ..errors import UsageProblem

            where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
            raise UsageProblem(f"--ray-address: cannot start or reach {where} "
                               f"({str(exc).splitlines()[0]}); check the address, or leave "
                               "it out to start a local Ray") from None
    quiet()


def _local_cpus(address: str | None) -> int | None:
    """$SFTDATA_RAY_CPUS: how many CPUs a local Ray started here may use (benchmarks compare 1
    and 2); ignored when joining a cluster, which knows its own."""
    value = os.environ.get("SFTDATA_RAY_CPUS")
    if address or os.environ.get("RAY_ADDRESS") or not value:
        return None
    if not value.isdigit() or int(value) < 1:
        from ..errors import UsageProblem

        raise UsageProblem(f"SFTDATA_RAY_CPUS={value!r}: give a whole number of CPUs, at least 1")
    return int(value)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (C++ logs bypass Python)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _probe(address: str | None) -> None:
    """Fail fast on an address nothing listens at: Ray itself retries for a minute, printing a
    warning a second from its C++ core."""
    import socket

    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        from ..errors import UsageProblem

        raise UsageProblem(f"--ray-address: nothing answers at {address} ({exc.strerror or exc}); "
                           "check the address (`ray status` on the head node prints it), or "
                           "leave it out to start a local Ray") from None


def quiet() -> None:
    import ray.data

    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a failed task is our error line
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.verbose_stats_logs = False
    ctx.execution_options.preserve_order = True


def shuffle(ds: Any, key: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Hash-partition ``ds`` on the int64 column ``key`` into :func:`partitions` parts and call
    ``fn(part, *args)`` once per part (an Arrow table holding every row of its keys), so the
    op groups a whole partition with numpy instead of one Python call per key.

    The exchange is Ray tasks over the dataset's blocks (one split task per block, one reduce
    task per partition; Ray schedules them and its object store spills), and the result is a
    Ray Data dataset again. Ray Data's own ``groupby`` does the same exchange but costs 5-30 s
    per shuffle on a small, busy machine (operator and actor start-up), against well under a
    second for the tasks; dedup runs about ten shuffles (docs/engines.md).
    """
    import ray
    import ray.data

    count = partitions()
    blocks = ds.to_arrow_refs()
    split = _split_block.options(num_returns=count) if count > 1 else _split_block
    pieces = [split.remote(block, key, count) for block in blocks]
    if count == 1:
        pieces = [[p] for p in pieces]
    reduced = [_reduce_part.remote(fn, args, *[p[i] for p in pieces]) for i in range(count)]
    return ray.data.from_arrow_refs(reduced)


def _remote(f: Callable[..., Any]) -> Any:
    """A Ray task made on first use (importing this module must not import Ray)."""
    cache: dict[str, Any] = {}

    class Lazy:
        def options(self, **kw: Any) -> Any:
            return self._task().options(**kw)

        def remote(self, *a: Any) -> Any:
            return self._task().remote(*a)

        def _task(self) -> Any:
            if "task" not in cache:
                import ray

                cache["task"] = ray.remote(f)
            return cache["task"]

    return Lazy()


def _split(block: Any, key: str, count: int) -> Any:
    import numpy as np
    import pyarrow as pa

    keys = block[key].to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        part = ((keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) % np.uint64(count)
    if count == 1:
        return block
    return tuple(block.filter(pa.array(part == i)) for i in range(count))


def _reduce(fn: Callable[..., Any], args: tuple, *parts: Any) -> Any:
    import pyarrow as pa

    return fn(pa.concat_tables(parts, promote_options="default"), *args)


_split_block = _remote(_split)
_reduce_part = _remote(_reduce)


def partitions() -> int:
    """Hash partitions of a shuffle: 2 per cluster CPU, or $SFTDATA_RAY_PARTITIONS (raise it
    for very large inputs: one reduce task holds 1/P of a stage's rows, docs/engines.md)."""
    import ray

    given = os.environ.get("SFTDATA_RAY_PARTITIONS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, cpus * PARTITIONS_PER_CPU)


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        init(address)

    def plan(self, path: str) -> list[datasets.Unit]:
        return datasets.plan(path, self.name)

    def map(self, units: list[datasets.Unit], fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        ds = unit_dataset(units, _pickled_result, fn, args)
        for row in rows(ds):
            yield _unpickle(row["payload"])

    def table_map(self, units: list[datasets.Unit], fn: Callable[..., Any], *args: Any) -> Any:
        """A Ray Dataset of the Arrow tables ``fn(frame, unit, *args)`` returns per unit."""
        return unit_dataset(units, _table_result, fn, args)


def unit_dataset(units: list[datasets.Unit], wrap: Callable[..., Any], fn: Callable[..., Any],
                 args: tuple) -> Any:
    import ray
    import ray.data

    for unit in units:
        if unit.part is None and unit.frame is not None and not isinstance(unit.frame, ray.ObjectRef):
            unit.frame = ray.put(unit.frame)
    shared = ray.put((units, fn, args))

    def task(batch: Any) -> Any:
        plan, func, extra = ray.get(shared)
        out = [wrap(plan[int(i)], func, extra) for i in batch["i"].to_pylist()]
        return out[0] if len(out) == 1 else _concat(out)

    items = ray.data.from_items([{"i": i} for i in range(len(units))],
                                override_num_blocks=max(1, len(units)))
    return items.map_batches(task, batch_size=1, batch_format="pyarrow")


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    return pa.concat_tables(tables)


def _read(unit: datasets.Unit) -> Any:
    if unit.part is None:
        import ray

        frame = unit.frame
        return ray.get(frame) if isinstance(frame, ray.ObjectRef) else frame
    return datasets.read_unit(unit)


def _call(unit: datasets.Unit, fn: Callable[..., Any], args: tuple) -> Any:
    frame = _read(unit)
    try:
        return fn(frame, unit, *args)
    except DataError as exc:
        raise datasets.rebase(exc, unit) from None


def _pickled_result(unit: datasets.Unit, fn: Callable[..., Any], args: tuple) -> Any:
    import pyarrow as pa

    try:
        value = ("ok", _call(unit, fn, args))
    except SftError as exc:  # returned, not raised: it reaches the user as it is
        value = ("error", exc)
    return pa.table({"i": [unit.index], "payload": [pickle.dumps(value, protocol=5)]},
                    schema=pa.schema([("i", pa.int64()), ("payload", pa.large_binary())]))


_MARK = "sftdata-error:"


class _Carried(RuntimeError):
    """Our error on its way through Ray Data, which re-wraps a task's exception and keeps only
    its text: the pickled error rides in the text and :func:`unwrap` takes it out again."""


def _table_result(unit: datasets.Unit, fn: Callable[..., Any], args: tuple) -> Any:
    import base64

    try:
        return _call(unit, fn, args)
    except SftError as exc:
        blob = base64.b64encode(pickle.dumps(exc, protocol=5)).decode("ascii")
        raise _Carried(f"{_MARK}{blob}:end") from None


def _unpickle(payload: bytes) -> Any:
    kind, value = pickle.loads(payload)
    if kind == "error":
        raise value
    return value


def rows(ds: Any) -> Iterator[dict[str, Any]]:
    """Iterate a dataset's rows; a worker's failure becomes our error, never a traceback."""
    try:
        yield from ds.iter_rows()
    except Exception as exc:  # noqa: BLE001 - RayTaskError and friends wrap the real cause
        raise unwrap(exc) from None


def collect(ds: Any) -> Any:
    """A whole (small) dataset as one Arrow table, with the same error unwrapping."""
    import pyarrow as pa

    try:
        tables = [t for t in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    except Exception as exc:  # noqa: BLE001
        raise unwrap(exc) from None
    if not tables:
        return None
    return pa.concat_tables(tables)


def materialize(ds: Any) -> Any:
    try:
        return ds.materialize()
    except Exception as exc:  # noqa: BLE001
        raise unwrap(exc) from None


def unwrap(exc: BaseException) -> BaseException:
    """The SftError inside a Ray failure, or a DataError that says what failed."""
    import base64
    import re

    for cause in _chain(exc):
        if isinstance(cause, SftError):
            return cause
        found = re.search(_MARK + r"([A-Za-z0-9+/=]+):end", str(cause))
        if found:
            return pickle.loads(base64.b64decode(found.group(1)))
    inner = exc
    for cause in _chain(exc):
        if not type(cause).__module__.startswith("ray"):
            inner = cause
    if inner is exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else type(exc).__name__
    else:
        text = f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner) else ''}"
    return DataError(f"a Ray task failed ({text})",
                     fix="run the same command with --engine local to see whether the input "
                         "is the cause, and check the Ray cluster's logs")


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        out.append(cause)
        inner = getattr(cause, "cause", None)
        cause = inner if isinstance(inner, BaseException) else (cause.__cause__ or cause.__context__)
    return out
