"""The ``pdscale demo`` plot: replicas per pool, demand, and exact p99 latency per interval against the SLO.

Latencies are the p99 TTFT and p99 per-request mean ITL of the requests that finished in each sample interval,
computed from the per-request samples (``demo_story.window_latency``), never interpolated from histogram buckets.
Replica axes have integer ticks; legends sit right of the axes, outside the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["demo_figure", "plot_demo"]

_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.08, 1.0), "fontsize": 8, "frameon": False, "borderaxespad": 0}


def plot_demo(
    series: Sequence[Mapping[str, Any]],
    pools: Mapping[str, str],
    latency: Mapping[str, Sequence[float]],
    slo: Any,
    path: str | Path,
) -> None:
    """Write the demo's PNG to ``path`` (see :func:`demo_figure`)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = demo_figure(series, pools, latency, slo)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def demo_figure(
    series: Sequence[Mapping[str, Any]],
    pools: Mapping[str, str],
    latency: Mapping[str, Sequence[float]],
    slo: Any,
) -> Any:
    """``series``: one row per tick (``t`` s, then per pool target/ready/demand); ``pools``: name -> role;
    ``latency``: ``demo_story.window_latency``. Returns the matplotlib figure (laid out, not saved)."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    t = [row["t"] / 60.0 for row in series]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    colors = {name: f"C{i}" for i, name in enumerate(pools)}
    ax = axes[0]
    for name in pools:
        ax.step(t, [row[name]["target"] for row in series], where="post", color=colors[name], label=f"{name} target")
        ready = [row[name]["ready"] for row in series]
        ax.step(t, ready, where="post", linestyle=":", linewidth=2, color=colors[name], label=f"{name} ready")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("replicas")
    ax.set_title("replicas per pool: the controller's target and the replicas serving", fontsize=10)
    ax.legend(**_LEGEND)

    ax = axes[1]
    seqs = ax.twinx()
    handles = []
    for name, role in pools.items():
        on = seqs if role == "decode" else ax
        label = f"{name}: concurrent seqs (right)" if role == "decode" else f"{name}: prompt tok/s (left)"
        demand = [math.nan if row[name]["demand"] is None else row[name]["demand"] for row in series]
        (line,) = on.plot(t, demand, color=colors[name], label=label)
        handles.append(line)
    ax.set_ylabel("prompt tokens/s")
    seqs.set_ylabel("concurrent sequences")
    ax.set_title("demand the pools saw", fontsize=10)
    ax.legend(handles=handles, **_LEGEND)

    ax = axes[2]
    tm = list(latency["t_min"])
    ax.plot(tm, latency["ttft_p99_ms"], color="C4", marker=".", label="TTFT p99")
    ax.plot(tm, latency["itl_p99_ms"], color="C5", marker=".", label="mean ITL p99")
    ax.axhline(slo.ttft_ms, color="C4", linestyle="--", linewidth=1, label=f"TTFT SLO {slo.ttft_ms:g} ms")
    ax.axhline(slo.itl_ms, color="C5", linestyle="--", linewidth=1, label=f"ITL SLO {slo.itl_ms:g} ms")
    values = [v for v in (*latency["ttft_p99_ms"], *latency["itl_p99_ms"]) if not math.isnan(v)]
    if values:
        ax.set_yscale("log")
    ax.set_ylabel("ms")
    step = f"{60 * (tm[1] - tm[0]):g} s" if len(tm) > 1 else "interval"
    ax.set_title(f"p99 per {step} of the requests that finished in it (exact, from every request)", fontsize=10)
    ax.legend(**_LEGEND)
    ax.set_xlabel("simulated minutes")
    fig.suptitle("pdscale demo: prefill and decode pools sized against the SLO")
    fig.tight_layout()
    return fig
