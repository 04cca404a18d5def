"""Waiting for a condition up to a deadline, never by sleeping a guessed time: how
tests, harnesses and benchmarks wait for a live system."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lego.errors import LegoError


def wait_for(cond: Callable[[], Any], timeout: float, what: str | Callable[[], str],
             poll: float = 0.01) -> Any:
    """Poll ``cond`` until it returns a true value (returned) or ``timeout`` seconds
    pass (LegoError naming ``what``, or what it returns then when it is a function):
    how tests and harnesses wait, never by sleeping."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LegoError(f"timed out after {timeout:.1f} s waiting for "
                            f"{what() if callable(what) else what}")
        time.sleep(poll)
