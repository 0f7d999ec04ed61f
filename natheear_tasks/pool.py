"""Run independent jobs in a process pool (or in this process) with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch
from tqdm import tqdm


def _single_thread(initializer: Callable | None, initargs: tuple) -> None:
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def run_jobs(
    function: Callable,
    items: Iterable,
    workers: int,
    initializer: Callable | None = None,
    initargs: tuple = (),
    desc: str = "",
    unit: str = "job",
    size: Callable[[Any], int] | None = None,
) -> Iterator:
    """Yield ``function(item)`` for every item, in completion order.

    Each worker (or this process, for ``workers == 1``) runs ``initializer(*initargs)``
    once and uses one torch thread; processes start with ``spawn``, so the functions must
    be importable module-level functions. At most ``2 * workers`` jobs wait at a time.
    The progress bar counts ``size(item)`` per item (default 1), in ``unit``.
    """
    items = list(items)
    size = size or (lambda item: 1)
    bar = tqdm(total=sum(size(item) for item in items), desc=desc, unit=unit)
    try:
        if workers <= 1:
            threads = torch.get_num_threads()
            try:
                _single_thread(initializer, initargs)
                for item in items:
                    yield function(item)
                    bar.update(size(item))
            finally:
                torch.set_num_threads(threads)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_single_thread,
            initargs=(initializer, initargs),
        ) as pool:
            pending = {}
            for item in items:
                pending[pool.submit(function, item)] = item
                if len(pending) >= 2 * workers:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
                        bar.update(size(pending.pop(future)))
            for future, item in pending.items():
                yield future.result()
                bar.update(size(item))
    finally:
        bar.close()
