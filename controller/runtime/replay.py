"""Drive the cluster simulator with the control loop on a manual clock (replay), and build the embedded cluster.

    cluster = build_cluster(settings)                  # or Cluster(config, trace)
    result = replay(reconciler, cluster, tick_s=30.0)  # advance_to(t); reconciler.run_once(t); ... ; finish()

The simulator never imports the controller; this module is the glue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from pdscale.controller.runtime.settings import Settings
from pdscale.simulator import Cluster, ClusterConfig, Mode, SimResult
from pdscale.simulator.config import pools_by_name

__all__ = ["build_cluster", "cluster_config", "ensure_cluster", "load_settings_trace", "replay", "scale_trace_rate"]

log = structlog.get_logger(__name__)


def load_settings_trace(settings: Settings) -> Any:
    """The trace named by ``settings.simulator``: ``bundled:<name>`` or a file, re-synthesized on ``rate_curve``
    (with ``duration_s``, ``rate_scale``, ``seed``) when one is set, else with its arrival rate scaled by
    ``rate_scale`` over the same window (:func:`scale_trace_rate`)."""
    from pdscale.simulator.traces import bundled_trace, load_rate_curve, load_trace  # noqa: PLC0415

    sim = settings.simulator
    trace = (
        bundled_trace(sim.trace.removeprefix("bundled:")) if sim.trace.startswith("bundled:") else load_trace(sim.trace)
    )
    if sim.rate_curve is not None:
        from pdscale.simulator.synth import synthesize  # noqa: PLC0415

        curve = load_rate_curve(sim.rate_curve)
        duration = sim.duration_s if sim.duration_s is not None else float(trace.arrival_s[-1])
        trace = synthesize(curve, trace, duration_s=duration, rate_scale=sim.rate_scale, burstiness=1.0, seed=sim.seed)
    elif sim.rate_scale != 1.0:
        trace = scale_trace_rate(trace, sim.rate_scale)
    return trace


def scale_trace_rate(trace: Any, factor: float) -> Any:
    """``trace`` at ``factor`` times its arrival rate over the same window: arrival offsets divided by
    ``factor``, the compressed trace repeated (or, below 1, cut) to fill the original span again.
    Each request keeps its input and output lengths; the time-of-day shape repeats ``factor`` times."""
    import numpy as np  # noqa: PLC0415

    from pdscale.simulator.traces import Trace  # noqa: PLC0415

    if not factor > 0:
        raise ValueError(f"simulator.rate_scale must be > 0, got {factor}")
    n = len(trace.arrival_s)
    if n < 2 or factor == 1.0:
        return trace
    start = float(trace.arrival_s[0])
    span = float(trace.arrival_s[-1]) - start
    if span <= 0:
        return trace
    # The trace covers its span plus one mean gap, so a repeated copy does not land on the last request.
    period = span * n / (n - 1) / factor
    offsets = (trace.arrival_s - start) / factor
    copies = int(np.ceil(factor))
    shifted = np.concatenate([offsets + k * period for k in range(copies)])
    keep = shifted <= span
    order = np.argsort(shifted[keep], kind="stable")
    inputs = np.tile(trace.input_tokens, copies)[keep][order]
    outputs = np.tile(trace.output_tokens, copies)[keep][order]
    return Trace(shifted[keep][order] + start, inputs, outputs, f"{trace.name}x{factor:g}")


def cluster_config(settings: Settings, perf: Any) -> ClusterConfig:
    """A ClusterConfig from the settings' pools (initial sizes, cold start) and simulator section."""
    sim = settings.simulator
    mode = Mode(sim.mode)
    roles = pools_by_name({p.name: p for p in settings.pools})
    initial = {
        roles[p.name].value: p.initial_replicas if p.initial_replicas is not None else p.min_replicas
        for p in settings.pools
    }
    cold_start = max(p.cold_start_s for p in settings.pools)
    extra = dict(sim.params)
    try:
        if mode is Mode.DISAGG:
            return ClusterConfig(
                perf=perf,
                mode=mode,
                prefill_replicas=initial.get("prefill", 0),
                decode_replicas=initial.get("decode", 0),
                cold_start_s=cold_start,
                ttft_slo_ms=settings.slo.ttft_ms,
                itl_slo_ms=settings.slo.itl_ms,
                **extra,
            )
        return ClusterConfig(
            perf=perf,
            mode=mode,
            colocated_replicas=initial.get("colocated", 0),
            cold_start_s=cold_start,
            ttft_slo_ms=settings.slo.ttft_ms,
            itl_slo_ms=settings.slo.itl_ms,
            **extra,
        )
    except TypeError as exc:
        raise ValueError(f"simulator.params: {exc}") from exc


def build_cluster(settings: Settings) -> Cluster:
    """The simulated cluster the settings describe (perf model of settings.model, slowed by simulator.slowdown)."""
    from pdscale.simulator.perf import load_perf_model  # noqa: PLC0415

    tp = settings.pools[0].gpus_per_replica
    perf = load_perf_model(settings.model, tp=tp)
    if settings.simulator.slowdown != 1.0:
        perf = perf.scaled(settings.simulator.slowdown)
    return Cluster(cluster_config(settings, perf), load_settings_trace(settings))


def ensure_cluster(settings: Settings, env: Any) -> Cluster:
    """Put the embedded cluster (and a lock guarding it) into ``env.resources`` unless one is there."""
    resources: dict[str, Any] = env.resources
    cluster = resources.get("simulator")
    if not isinstance(cluster, Cluster):
        cluster = build_cluster(settings)
        resources["simulator"] = cluster
    resources.setdefault("simulator_lock", threading.RLock())
    return cluster


def replay(
    reconciler: Any,
    cluster: Cluster,
    *,
    tick_s: float,
    until_s: float | None = None,
    on_tick: Callable[[float, Cluster], None] | None = None,
    lock: threading.RLock | None = None,
) -> SimResult:
    """Alternate ``cluster.advance_to(t)`` and ``reconciler.run_once(t)`` every ``tick_s`` simulated seconds
    until ``until_s`` (default: the last arrival of the trace), then run the cluster to completion."""
    if not tick_s > 0:
        raise ValueError(f"replay tick_s must be > 0, got {tick_s}")
    arrivals = cluster.trace.arrival_s
    end = until_s if until_s is not None else (float(arrivals[-1]) if len(arrivals) else 0.0)
    guard = lock or threading.RLock()
    t = cluster.now_s
    ticks = 0
    while t <= end:
        with guard:
            cluster.advance_to(t)
            reconciler.run_once(t)
        if on_tick is not None:
            on_tick(t, cluster)
        ticks += 1
        t += tick_s
    with guard:
        result = cluster.finish()
    log.info("replay_finished", ticks=ticks, end_s=end, **{k: result.to_json()[k] for k in ("completed", "dropped")})
    return result
