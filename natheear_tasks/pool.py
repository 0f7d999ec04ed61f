"""Run independent jobs in a process pool (or in this process) with a progress bar."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch
from tqdm import tqdm

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker process as soon as its parent process dies (a SIGKILLed parent
    cannot shut its pool down, and the workers would wait for jobs forever).

    On Linux the kernel kills the worker (``prctl(PR_SET_PDEATHSIG, SIGKILL)``; it fires when
    the thread that started the worker ends, so pools are run from a thread that lives as
    long as they do, the main one here). Everywhere, a daemon thread waits on the parent's
    sentinel (the pipe multiprocessing closes when the parent dies) and ends the process.
    A worker killed mid-file leaves at most that file to redo (see the journal).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_when_ready, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _start_worker(parent_pid: int, initializer: Callable | None, initargs: tuple) -> None:
    _exit_with_parent(parent_pid)
    _single_thread(initializer, initargs)


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
    be importable module-level functions, and end when this process dies, even by SIGKILL
    (:func:`_exit_with_parent`). At most ``2 * workers`` jobs wait at a time.
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
            initializer=_start_worker,
            initargs=(os.getpid(), initializer, initargs),
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
