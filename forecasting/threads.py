"""Native thread pools (OpenMP, BLAS) limited to one thread around fits and predictions.

A control plane shares its machine: a refit must not take every core, and when several processes fit at
once OpenMP's spinning worker threads slow each other down by an order of magnitude (seen in parallel
benchmark runs on two cores). ``threadpoolctl`` is a scikit-learn dependency.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["single_thread"]

_controller: Any = None


@contextmanager
def single_thread() -> Iterator[None]:
    """Limit OpenMP and BLAS pools to one thread inside the block (about 30 us to enter)."""
    global _controller  # noqa: PLW0603 - one controller per process, built on first use (it scans libraries)
    if _controller is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - loaded with the first fit

        _controller = ThreadpoolController()
    with _controller.limit(limits=1):
        yield
