"""The Kubernetes HPA's stabilisation windows, shared by the HPA-style policies (``reactive``, ``keda``).

A scale-down goes only to the highest desired count of the last ``down_window_s``, a scale-up only to the lowest
of the last ``up_window_s`` (0: at once). The desired counts of the windows travel in the policy state under
``"desired"`` as ``[time_s, replicas]`` pairs per pool.
"""

from __future__ import annotations

from collections.abc import Callable

from pdscale.controller.core.protocols import PolicyContext

__all__ = ["stabilised"]


def stabilised(
    ctx: PolicyContext,
    desired: Callable[[str], tuple[int | None, str]],
    *,
    down_window_s: float,
    up_window_s: float = 0.0,
    down_label: str = "scale-down window",
) -> tuple[dict[str, int], dict[str, str], dict[str, list[list[float]]]]:
    """Per pool: ``desired(pool)`` (None: hold, with its reason) through the windows; returns targets, reasons
    and the window history to keep in the state."""
    history: dict[str, list[list[float]]] = {}
    targets: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for name in ctx.pools:
        current = ctx.states[name].target
        past = [
            [float(t), float(v)]
            for t, v in (ctx.state.get("desired", {}).get(name) or [])
            if ctx.now_s - float(t) <= max(up_window_s, down_window_s)
        ]
        want, why = desired(name)
        if want is None:
            targets[name], reasons[name], history[name] = current, why, past
            continue
        entries = [*past, [ctx.now_s, float(want)]]
        history[name] = entries
        target = want
        if want < current:
            target = min(current, int(max(v for t, v in entries if ctx.now_s - t <= down_window_s)))
            if target != want:
                why += f"; {down_label} {down_window_s:g} s keeps {target}"
        elif want > current and up_window_s > 0:
            target = max(current, int(min(v for t, v in entries if ctx.now_s - t <= up_window_s)))
            if target != want:
                why += f"; scale-up window {up_window_s:g} s keeps {target}"
        targets[name], reasons[name] = target, why
    return targets, reasons, history
