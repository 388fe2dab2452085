"""Where chunks are scored: this process, local worker processes, or a Dask cluster.

Every engine takes chunks from one iterator and hands results back in chunk order,
with at most ``2 x workers`` chunks in flight: memory stays flat however big the input.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from qemlflow.errors import ConfigError
from qemlflow.screen.scoring import ScoringPackage, init_worker, load_scorer, score_chunk

if TYPE_CHECKING:
    import pyarrow as pa

    from qemlflow.screen.reading import InputChunk

__all__ = ["DASK_ADDRESS_VARIABLE", "run_chunks"]

DASK_ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"

Done = Callable[["InputChunk", "pa.Table"], None]


def run_chunks(
    chunks: Iterator[InputChunk],
    package: ScoringPackage,
    done: Done,
    *,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
) -> None:
    """Score every chunk and call ``done(chunk, table)`` for each, in chunk order.

    ``engine`` is ``"local"`` (``workers`` processes; 1 scores in this process) or
    ``"dask"`` (the cluster at ``address``, else ``$DASK_SCHEDULER_ADDRESS``).
    """
    if engine == "dask":
        _run_dask(chunks, package, done, address)
    elif engine != "local":
        raise ConfigError(f"unknown engine {engine!r}", "use --engine local or --engine dask")
    elif workers <= 1:
        scorer = load_scorer(package)
        for chunk in chunks:
            done(chunk, scorer.score(chunk.ids, chunk.smiles, chunk.errors))
    else:
        _run_pool(chunks, package, done, workers)


def _bounded(
    chunks: Iterator[InputChunk],
    submit: Callable[[InputChunk], Any],
    result: Callable[[Any], pa.Table],
    done: Done,
    limit: int,
) -> None:
    """Submit chunks keeping at most ``limit`` pending; finish them oldest first."""
    pending: deque[tuple[InputChunk, Any]] = deque()
    for chunk in chunks:
        while len(pending) >= limit:
            oldest, future = pending.popleft()
            done(oldest, result(future))
        light = _without_rows(chunk)
        pending.append((light, submit(chunk)))
    while pending:
        oldest, future = pending.popleft()
        done(oldest, result(future))


def _without_rows(chunk: InputChunk) -> InputChunk:
    """The chunk's bookkeeping without its molecules (the worker has those)."""
    from qemlflow.screen.reading import InputChunk

    return InputChunk(chunk.index, chunk.start, [], [], chunk.position, chunk.rows)


def _run_pool(
    chunks: Iterator[InputChunk], package: ScoringPackage, done: Done, workers: int
) -> None:
    from qemlflow.screen.scoring import score_loaded

    # Spawned, not forked: the progress bar runs a thread, and a fork copies its locks.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=init_worker, initargs=(package,)
    )
    try:
        _bounded(
            chunks,
            lambda chunk: pool.submit(score_loaded, package.key, chunk),
            lambda future: future.result(),
            done,
            2 * workers,
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def dask_address(address: str | None) -> str:
    """The scheduler address: ``address``, else ``$DASK_SCHEDULER_ADDRESS``."""
    found = address or os.environ.get(DASK_ADDRESS_VARIABLE)
    if not found:
        raise ConfigError(
            "--engine dask needs the address of a running Dask scheduler",
            f"pass --address tcp://HOST:8786 or set {DASK_ADDRESS_VARIABLE}",
        )
    return found


def _run_dask(
    chunks: Iterator[InputChunk], package: ScoringPackage, done: Done, address: str | None
) -> None:
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise ConfigError(
            "--engine dask needs the 'distributed' package, which is not installed",
            "install the dask extra: pip install 'qemlflow[dask]'",
        ) from None
    where = dask_address(address)
    try:
        client = Client(where, timeout="20s", set_as_default=False)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {where} ({exc})",
            "start the cluster or correct --address",
        ) from None
    try:
        shared = client.scatter(package, broadcast=True, hash=False)  # type: ignore[no-untyped-call]
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        token = uuid.uuid4().hex[:12]

        def submit(chunk: InputChunk) -> Any:
            key = f"qemlflow-screen-{token}-{chunk.index}"
            return client.submit(score_chunk, shared, chunk, key=key, retries=2)

        _bounded(chunks, submit, lambda future: future.result(), done, 2 * workers)
    finally:
        client.close()  # type: ignore[no-untyped-call]
