"""Metrics sources: where a pool's live serving signals come from (Prometheus, the embedded simulator)."""

from __future__ import annotations

__all__: list[str] = []
