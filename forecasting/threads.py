"""Native thread pools (OpenMP, BLAS) limited to one thread around fits and predictions.

A control plane shares its machine: a refit must not take every core, and when several processes fit at
once OpenMP's spinning worker threads slow each other down by an order of magnitude (seen in parallel
benchmark runs on two cores). ``threadpoolctl`` is a scikit-learn dependency. The limit is process-wide, so
nested and concurrent blocks (the tick thread predicting while a background fit runs) share one limit,
reference-counted: the first block in sets it, the last one out restores the libraries' defaults.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["single_thread"]

_lock = threading.Lock()
_controller: Any = None
_active: Any = None
_depth = 0
_modules_seen = 0


@contextmanager
def single_thread() -> Iterator[None]:
    """Limit OpenMP and BLAS pools to one thread inside the block (about 30 us to enter the first time)."""
    global _controller, _active, _depth, _modules_seen  # noqa: PLW0603 - one process-wide limit
    with _lock:
        if _controller is None or (_depth == 0 and len(sys.modules) != _modules_seen):
            # The controller knows the native libraries loaded when it was built: rebuild it after imports
            # (scikit-learn's OpenMP runtime arrives with its first use, often after a statsmodels fit).
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - loaded with the first fit

            _controller = ThreadpoolController()
            _modules_seen = len(sys.modules)
        if _depth == 0:
            _active = _controller.limit(limits=1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _active is not None:
                _active.restore_original_limits()
                _active = None
