"""How this process stops: on SIGTERM through the normal unwinding, so that work spread over several processes
(``sweep --jobs``, ``tune --jobs``) never outlives the command; on Ctrl-C at the training loop's next step."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Within this block, SIGTERM (``kill``, a job scheduler's stop) exits through the normal unwinding, so the
    ``finally`` and ``with`` blocks that stop worker processes run; Python's default would end this process at
    once and leave its workers training. Outside the main thread, where signals cannot be caught, it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_on_interrupt(loop: Any) -> Iterator[None]:
    """Within this block, a first Ctrl-C sets ``loop.should_stop`` (a training loop then stops at its next step and
    keeps what it has); a second one aborts at once. Outside the main thread, where signals cannot be caught, it
    does nothing."""

    def request_stop(signum: int, frame: Any) -> None:
        if loop.should_stop:  # the second Ctrl-C
            raise KeyboardInterrupt
        loop.should_stop = True

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
