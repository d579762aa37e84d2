"""Work spread over several processes (``sweep --jobs``, ``tune --jobs``): none of them may outlive the command."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator


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
