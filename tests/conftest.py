"""Suite-wide set-up: the checkout's folders import only as ``pdscale.*``, exactly as from the wheel; the test
doubles are registered as plugins of a test-only distribution (``tests/plugins``), here and in subprocesses."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest
import structlog

_FOLDERS = frozenset({"controller", "forecasting", "actuators", "simulator"})


class _FolderImportBlocker(importlib.abc.MetaPathFinder):
    """Refuses ``import controller`` (and the other folder names): the repository root is on sys.path for
    ``tests.*``, which would otherwise let a stale top-level import pass here and fail from the wheel."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] in _FOLDERS:
            raise ModuleNotFoundError(f"import {fullname!r} as 'pdscale.{fullname}' (one namespace)", name=fullname)
        return None


sys.meta_path.insert(0, _FolderImportBlocker())

TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
"""Holds the dist-info that registers ``fake`` (actuator) and ``static`` (metrics source) from pdscale.testing."""
if str(TEST_PLUGINS) not in sys.path:
    sys.path.append(str(TEST_PLUGINS))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TEST_PLUGINS)) if p)
    importlib.invalidate_caches()


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """``pdscale`` commands configure structlog onto the test's captured stderr; later tests get the defaults."""
    yield
    structlog.reset_defaults()
