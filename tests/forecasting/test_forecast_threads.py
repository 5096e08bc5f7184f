"""Native thread pools stay at one thread inside fits and predictions."""

from __future__ import annotations

import importlib

from threadpoolctl import threadpool_info

from pdscale.forecasting.threads import single_thread


class TestSingleThread:
    def test_every_loaded_pool_limited(self) -> None:
        """Inside the block every OpenMP/BLAS pool runs one thread, including ones loaded after the first use."""
        with single_thread():
            pass
        importlib.import_module("sklearn.ensemble")  # brings scikit-learn's OpenMP runtime
        with single_thread():
            pools = threadpool_info()
            assert pools
            assert all(p["num_threads"] == 1 for p in pools)

    def test_nested_blocks_keep_the_limit(self) -> None:
        """An inner block's exit does not lift the outer block's limit."""
        with single_thread():
            with single_thread():
                pass
            assert all(p["num_threads"] == 1 for p in threadpool_info())
