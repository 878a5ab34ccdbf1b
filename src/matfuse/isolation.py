"""Per-item work in worker processes, so that a native crash costs one item, not the dataset.

A segfault or abort inside a C library (spglib, a BLAS, a compiled pymatgen helper) cannot be
caught in Python: it ends the process. :func:`map_isolated` runs chunks of items in a process pool
and yields their results in input order; when a worker dies, every chunk that was in flight is run
again one item per process, so the one item that kills its process is found and reported as a
:class:`WorkerCrash` while all other items get their real results. The consumer may stop early
(``break``): the pool is shut down and pending chunks are cancelled.

Workers come from a ``forkserver`` context: each is forked from a clean server process that has
imported the worker function's module, so start-up is cheap and no threads of the parent (pyarrow,
OpenMP) are inherited. Workers never re-import the caller's ``__main__`` (a Snakemake script
without a ``__main__`` guard would otherwise run again in every worker), and a worker that cannot
start at all raises :class:`WorkerStartError` instead of being blamed on an item.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import faulthandler
import functools
import logging
import multiprocessing
import signal
import sys
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class WorkerCrash:
    """The item whose processing ended its worker process (``exitcode`` < 0: killed by a signal)."""

    exitcode: int | None

    @property
    def reason(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            try:
                name = signal.Signals(-self.exitcode).name
            except ValueError:
                name = f"signal {-self.exitcode}"
            return f"worker process died with {name} while processing this entry (a crash inside a native library)"
        return f"worker process died (exit code {self.exitcode}) while processing this entry"


class WorkerStartError(RuntimeError):
    """A worker process died before it could run anything: the set-up is broken, not an item."""


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start processes without them re-importing ``__main__`` (multiprocessing reads ``__file__``/``__spec__``)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved = {k: main.__dict__.get(k, missing) for k in ("__file__", "__spec__")}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                main.__dict__.pop(k, None)
            else:
                main.__dict__[k] = v


def _context(func: Callable[..., Any]) -> multiprocessing.context.BaseContext:
    """A forkserver context whose server has imported ``func``'s module (``functools.partial`` unwrapped)."""
    while isinstance(func, functools.partial):
        func = func.func
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([func.__module__])
    return ctx


def _init_worker() -> None:
    faulthandler.enable()  # a native crash prints the Python stack of the worker to stderr


def _run_chunk(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [func(item) for item in items]


def _child(func: Callable[[Any], Any], item: Any, conn: Any) -> None:  # pragma: no cover - child process
    _init_worker()
    conn.send("started")
    conn.send(func(item))
    conn.close()


def run_alone(func: Callable[[T], R], item: T, ctx: multiprocessing.context.BaseContext | None = None) -> R | WorkerCrash:
    """``func(item)`` in a process of its own; :class:`WorkerCrash` if that process dies."""
    ctx = ctx or _context(func)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(func, item, send), daemon=True)
    with _main_hidden():
        proc.start()
    send.close()
    try:
        try:
            recv.recv()  # "started"
        except EOFError:
            proc.join()
            raise WorkerStartError(
                f"a worker process for {getattr(func, '__name__', func)!r} died before it started "
                f"(exit code {proc.exitcode}); see the error printed above"
            ) from None
        try:
            result = recv.recv()
        except EOFError:
            proc.join()
            return WorkerCrash(proc.exitcode)
    finally:
        recv.close()
    proc.join()
    return result


def map_isolated(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    chunk_size: int = 64,
    on_crash: Callable[[int, WorkerCrash], None] | None = None,
) -> Iterator[tuple[int, R | WorkerCrash]]:
    """Yield ``(index, func(item))`` in input order, each computed in a worker process.

    ``func`` must be a module-level function and items/results picklable. An item whose
    processing kills its worker yields a :class:`WorkerCrash` instead of a result.
    """
    ctx = _context(func)
    it = iter(enumerate(items))
    window = max(1, 2 * workers)

    def next_chunk() -> list[tuple[int, T]]:
        chunk = []
        for pair in it:
            chunk.append(pair)
            if len(chunk) >= chunk_size:
                break
        return chunk

    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    pending: collections.deque[tuple[list[tuple[int, T]], cf.Future]] = collections.deque()
    try:
        while True:
            while len(pending) < window:
                chunk = next_chunk()
                if not chunk:
                    break
                with _main_hidden():  # workers start on submit
                    pending.append((chunk, pool.submit(_run_chunk, func, [x for _, x in chunk])))
            if not pending:
                return
            chunk, fut = pending[0]
            try:
                results = fut.result()
            except BrokenProcessPool:
                # Every chunk in flight is lost with the pool: redo each item alone to find the culprit.
                lost = [pair for c, _ in pending for pair in c]
                pending.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                log.warning("a worker process died; re-running the %d items in flight one per process", len(lost))
                for index, item in lost:
                    result = run_alone(func, item, ctx)
                    if isinstance(result, WorkerCrash):
                        log.error("item %d: %s", index, result.reason)
                        if on_crash is not None:
                            on_crash(index, result)
                    yield index, result
                pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
                continue
            pending.popleft()
            for (index, _), result in zip(chunk, results):
                yield index, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
