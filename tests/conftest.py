"""Suite-wide set-up: the checkout's folders import only as ``pdscale.*``, exactly as from the wheel."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
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


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """``pdscale`` commands configure structlog onto the test's captured stderr; later tests get the defaults."""
    yield
    structlog.reset_defaults()
