"""Reports of ``pdscale plan`` and ``pdscale bench``: Markdown text and matplotlib plots (PNG).

    plot_timeline(timeline, "run.png", title="retail-day / slo")  # demand, replicas, utilisation, latency
    write_plan_report(plan, "out/")                                 # out/report.md + out/*.png
    bench_markdown(rows)                                            # the results table as Markdown

Utilisation is drawn per pool as separate lines: prefill compute-busy share, decode compute-busy share and
decode KV share (the load-dependent part of a decode step's memory traffic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pdscale.controller.lab.bench_run import Timeline
from pdscale.controller.lab.planner import static_timeline

__all__ = [
    "BENCH_BEGIN",
    "BENCH_END",
    "bench_markdown",
    "bench_table_rows",
    "plot_bench_summary",
    "plot_timeline",
    "write_bench_markdown",
    "write_plan_report",
]

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("policy", "policy"),
    ("GPU-hours", "gpu_hours"),
    ("x oracle", "x_oracle"),
    ("x hindsight", "x_hindsight"),
    ("SLO attainment", "slo_attainment"),
    ("feasible attainment", "slo_attainment_feasible"),
    ("TTFT p99 ms", "ttft_p99_ms"),
    ("ITL p99 ms", "itl_p99_ms"),
    ("scale actions", "scale_actions"),
    ("peak GPUs", "peak_gpus"),
    ("wall s", "wall_s"),
)


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("slo_attainment", "slo_attainment_feasible"):
        return f"{100.0 * float(value):.2f}%"
    if key in ("x_oracle", "x_hindsight"):
        return f"{float(value):.2f}"
    if key in ("gpu_hours", "ttft_p99_ms", "itl_p99_ms"):
        return f"{float(value):,.1f}" if float(value) < 100 else f"{float(value):,.0f}"
    if key == "wall_s":
        return f"{float(value):.0f}"
    return str(value)


def bench_table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The bench rows formatted as table cells (the order of ``TABLE_COLUMNS``)."""
    return [[_fmt(key, row.get(key)) for _, key in TABLE_COLUMNS] for row in rows]


def bench_markdown(rows: Sequence[Mapping[str, Any]], *, target: float = 0.99) -> str:
    """A Markdown table of bench rows; attainment under ``target`` is marked in bold with a trailing '!'."""
    head = "| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = [head, sep]
    for row, cells in zip(rows, bench_table_rows(rows), strict=True):
        for key in ("slo_attainment", "slo_attainment_feasible"):
            att = row.get(key)
            if isinstance(att, (int, float)) and att < target:
                i = [k for _, k in TABLE_COLUMNS].index(key)
                cells[i] = f"**{cells[i]}** !"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


POOL_COLORS: Mapping[str, str] = {"prefill": "C0", "decode": "C1", "colocated": "C2"}


BENCH_BEGIN = "<!-- pdscale-bench:begin -->"
BENCH_END = "<!-- pdscale-bench:end -->"


def write_bench_markdown(rows: Sequence[Mapping[str, Any]], path: str | Path, *, note: str = "") -> None:
    """Write the table to ``path``; a file holding the begin/end markers keeps its text around them."""
    p = Path(path)
    block = f"{BENCH_BEGIN}\n{note}{bench_markdown(rows)}{BENCH_END}"
    text = p.read_text(encoding="utf-8") if p.is_file() else ""
    if BENCH_BEGIN in text and BENCH_END in text:
        head, rest = text.split(BENCH_BEGIN, 1)
        tail = rest.split(BENCH_END, 1)[1]
        p.write_text(head + block + tail, encoding="utf-8")
    else:
        p.write_text(block + "\n", encoding="utf-8")


def _pyplot() -> Any:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_timeline(tl: Timeline, path: str | Path, *, title: str = "") -> None:
    """Four panels over time: demand, replicas per pool, utilisation (prefill and decode as separate lines),
    p99 TTFT and ITL per interval against their targets."""
    import numpy as np  # noqa: PLC0415

    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    hours = tl.t_s / 3600.0
    ax = axes[0]
    ax.plot(hours, tl.arrivals_per_s, color="C0", label="requests/s")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(hours, tl.prompt_tokens_per_s / 1000.0, color="C1", alpha=0.6, label="prompt ktok/s")
    ax2.set_ylabel("prompt ktok/s")
    ax.legend(loc="upper left", fontsize="small")
    ax2.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{title}: demand" if title else "demand")
    for pool, counts in sorted(tl.replicas.items()):
        axes[1].step(hours, counts, where="post", color=POOL_COLORS.get(pool, "C3"), label=f"{pool} replicas")
    axes[1].set_title("replicas per pool (starting + ready + draining)")
    axes[1].legend(loc="upper left", fontsize="small")
    for pool in sorted(tl.busy_share):
        color = POOL_COLORS.get(pool, "C3")
        axes[2].plot(hours, tl.busy_share[pool], color=color, label=f"{pool} compute-busy share")
        if pool != "prefill":
            axes[2].plot(hours, tl.kv_share[pool], color=color, linestyle="--", label=f"{pool} KV share")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("utilisation")
    axes[2].legend(loc="upper left", fontsize="small")
    ax = axes[3]
    ax.plot(hours, tl.ttft_p99_ms, color="C4", label="TTFT p99 ms")
    ax.plot(hours, tl.itl_p99_ms, color="C5", label="mean ITL p99 ms")
    ax.axhline(tl.ttft_slo_ms, color="C4", linestyle=":", label="TTFT SLO")
    ax.axhline(tl.itl_slo_ms, color="C5", linestyle=":", label="ITL SLO")
    if np.any(np.isfinite(tl.ttft_p99_ms)):
        ax.set_yscale("log")
    ax.set_title("latency per interval vs SLO")
    ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_bench_summary(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Per scenario, GPU-hours (bars) and SLO attainment (labels) of every policy."""
    plt = _pyplot()
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    policies = list(dict.fromkeys(str(r["policy"]) for r in rows))
    cols = min(4, len(scenarios))
    grid_rows = -(-len(scenarios) // cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(4.5 * cols, 4 * grid_rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(scenarios) :]:
        ax.set_visible(False)
    for ax, scen in zip(flat, scenarios, strict=False):
        mine = {str(r["policy"]): r for r in rows if r["scenario"] == scen and r.get("gpu_hours") is not None}
        names = [p for p in policies if p in mine]
        values = [float(mine[p]["gpu_hours"]) for p in names]
        bars = ax.bar(names, values, color=[f"C{policies.index(p)}" for p in names])
        for bar, p in zip(bars, names, strict=True):
            att = mine[p].get("slo_attainment")
            label = "-" if att is None else f"{100 * float(att):.2f}%"
            ax.annotate(
                label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
            )
        ax.set_title(scen)
        ax.set_ylabel("GPU-hours (label: SLO attainment)")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_costs(plan: Any, path: Path) -> None:
    plt = _pyplot()
    s = plan.savings()
    names = ["colocated (static)", "disagg (static)", "disagg (autoscaled)"]
    values = [s["colocated_gpu_hours"], s["static_disagg_gpu_hours"], s["autoscaled_gpu_hours"]]
    keep = [(n, v) for n, v in zip(names, values, strict=True) if v is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar([n for n, _ in keep], [v for _, v in keep], color=["C3", "C0", "C2"][: len(keep)])
    for bar, (_, v) in zip(bars, keep, strict=True):
        ax.annotate(f"{v:,.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("GPU-hours over the trace")
    ax.set_title("GPU-hours at the same SLO")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:,.0f}"


def _gpuh(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _evaluation_row(label: str, e: Mapping[str, Any]) -> str:
    cells = [
        label,
        str(e["gpus"]),
        f"{100 * e['attainment']:.2f}%",
        f"{100 * e['ttft_attainment']:.2f}%",
        f"{100 * e['itl_attainment']:.2f}%",
        _fmt("ttft_p99_ms", e["ttft_p99_ms"]),
        _fmt("itl_p99_ms", e["itl_p99_ms"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _met(row: Mapping[str, Any]) -> str:
    return f"{100 * row['attainment']:.2f}%" + ("" if row["met"] else " (target not met)")


def write_plan_report(plan: Any, out_dir: str | Path) -> Path:
    """Write ``report.md`` and its plots into ``out_dir``; returns the report's path."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_timeline(static_timeline(plan.static), out / "static_split.png", title="static disaggregated split")
    plot_timeline(static_timeline(plan.colocated), out / "colocated.png", title="static colocated fleet")
    if plan.autoscaled is not None:
        plot_timeline(plan.autoscaled.timeline, out / "autoscaled.png", title="autoscaled (slo policy)")
    _plot_costs(plan, out / "cost.png")
    j = plan.to_json()
    s = j["savings"]
    st, co = j["static_split"], j["colocated"]
    slo = j["slo"]
    lines = [
        f"# Capacity plan: {j['trace']}",
        "",
        f"{j['requests']:,} requests over {j['duration_h']:.2f} h; {j['model']} on tp{j['tp']} replicas; SLO TTFT "
        f"{slo['ttft_ms']:g} ms and mean ITL {slo['itl_ms']:g} ms for at least "
        f"{100 * j['attainment_target']:g}% of requests (simulated).",
        "",
        "## Answer",
        "",
        "| option | fleet | GPUs | SLO attainment | GPU-hours | cost |",
        "|---|---|---|---|---|---|",
        f"| static disaggregated | {st['sizes']['prefill']} prefill + {st['sizes']['decode']} decode | {st['gpus']} "
        f"| {_met(st)} | {_gpuh(st['gpu_hours'])} | {_money(s.get('static_disagg_usd'))} |",
        f"| static colocated (chunk {co['token_budget']} tokens) | {co['sizes']['colocated']} replicas | "
        f"{co['gpus']} | {_met(co)} | {_gpuh(co['gpu_hours'])} | {_money(s.get('colocated_usd'))} |",
    ]
    auto = j["autoscaled"]
    if auto is not None:
        lines.append(
            f"| autoscaled disaggregated (slo policy) | up to {auto.get('prefill_replicas_peak', '-')} prefill + "
            f"{auto.get('decode_replicas_peak', '-')} decode | peak {auto.get('peak_gpus', '-')} | "
            f"{100 * (auto['slo_attainment'] or 0):.2f}% | {_gpuh(auto['gpu_hours'])} | "
            f"{_money(s.get('autoscaled_usd'))} |"
        )
    gain = s["disagg_vs_colocated_gpu_hours"]
    lines.append("")
    if gain > 0:
        lines.append(
            f"- Disaggregation saves {_gpuh(gain)} GPU-hours over colocated serving "
            f"({_money(s.get('disagg_vs_colocated_usd'))}; {_money(s.get('disagg_vs_colocated_usd_per_month'))} "
            "per month at this traffic)."
        )
    else:
        lines.append(f"- Disaggregation costs {_gpuh(-gain)} GPU-hours more than colocated serving.")
    saved = s["autoscaled_vs_static_gpu_hours"]
    if saved is not None and saved >= 0:
        lines.append(
            f"- Autoscaling saves {_gpuh(saved)} GPU-hours over the static split "
            f"({_money(s.get('autoscaled_vs_static_usd'))}; {_money(s.get('autoscaled_vs_static_usd_per_month'))} "
            "per month)."
        )
    elif saved is not None:
        lines.append(
            f"- Autoscaling costs {_gpuh(-saved)} GPU-hours more than the static split here (a short or flat trace "
            "leaves nothing to scale down, and the policy keeps forecast headroom)."
        )
    lines += ["", f"**Disaggregation pays: {'yes' if j['disaggregation_pays'] else 'no'}.**", ""]
    if j["flags"]:
        lines += ["## Where disaggregation may not pay", ""]
        lines += [f"- `{f['code']}`: {f['message']}" for f in j["flags"]]
        lines.append("")
    lines += [
        "## Traffic",
        "",
        f"- Prompts under 512 tokens: {100 * j['short_prompt_share']:.1f}%.",
        "- Prefix reuse: " + ("not given." if j["prefix_reuse"] is None else f"{100 * j['prefix_reuse']:.0f}%."),
        "",
        "## How the fleets were found",
        "",
        "The capacity model sized each pool for the trace's peak demand (prefill "
        f"{st['model_estimate'].get('prefill')}, decode {st['model_estimate'].get('decode')}; colocated "
        f"{co['model_estimate'].get('colocated')}), then the simulator verified and refined it: the disaggregated "
        "split grows the pool that helps most until the target holds, then shrinks each pool while it still does; "
        "the colocated fleet is bisected for each chunk size (2048 down to 128 prompt tokens per iteration).",
        "",
        "| fleet | GPUs | attainment | TTFT-met | ITL-met | TTFT p99 ms | ITL p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_evaluation_row(f"disagg {e['sizes']['prefill']}+{e['sizes']['decode']}", e) for e in st["evaluations"]]
    lines += [_evaluation_row(f"colocated {e['sizes']['colocated']}", e) for e in co["evaluations"]]
    lines += [
        "",
        "## Plots",
        "",
        "![GPU-hours](cost.png)",
        "",
        "Static disaggregated split (demand, replicas per pool, prefill and decode utilisation, TTFT/ITL vs SLO):",
        "",
        "![static split](static_split.png)",
        "",
    ]
    if auto is not None:
        lines += ["Autoscaled with the slo policy:", "", "![autoscaled](autoscaled.png)", ""]
    lines += ["Static colocated fleet:", "", "![colocated](colocated.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
