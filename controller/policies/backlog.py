"""What a queue and an overloaded pool really ask for: backlogs to drain, not standing demand.

After a step, a return from a gap or a flash crowd, the pools are short for one lead time (cold start plus a
tick) whatever the policy does. What it does decide is how the fleet *settles*: sizing for the symptoms of the
shortage (a queue counted as concurrency, sequences slowed by an overfull batch) overshoots, then collapses,
while ignoring the prefill queue leaves every request behind it waiting long after capacity arrived. Both
rules use Little's law on the pool's own metrics, and each says what it did in the decision's reason.

- Decode: ``decode_backlog``. A decode queue of ``W`` sequences is a backlog that replicas arriving after the
  lead time ``L`` drain in ``L``: ``W x OSL x step / L`` slots, not ``W`` standing ones. And the running count
  depends on the speed it was observed at: tokens per sequence are fixed, so by Little's law the sequences that
  run at ``ITL_observed`` hold ``step_at_sizing_batch / ITL_observed`` times as many slots once the pool runs at
  the batch it is sized for (generated tokens/s x that step). A pool slowed past its target would otherwise
  overshoot after a step; a pool with slack would shrink, see its sequences slow at the larger batch, and
  scale straight back up a cold start later (the 2 <-> 3 flapping this rule ends).
- Prefill: ``prefill_backlog``. Queued prompts wait in front of every new one; the pool is sized for the
  arrival rate plus the rate that clears the backlog, as it will stand when new capacity arrives (the queue
  now plus its growth while the ready replicas stay short), within one lead time. Replicas bought for it stay
  at least that long anyway (they cannot be ready sooner), so draining over ``L`` is the rate that pays for
  exactly the backlog.
"""

from __future__ import annotations

from collections.abc import Mapping

from pdscale.controller.core.capacity import Correction, Workload
from pdscale.controller.core.protocols import CapacityModel, PolicyContext
from pdscale.controller.core.types import DataState, PoolRole, Signal

__all__ = ["decode_backlog", "prefill_backlog", "upstream_rate"]


def decode_backlog(
    ctx: PolicyContext,
    pool: str,
    model: CapacityModel,
    w: Workload,
    corr: Correction,
    demand: Mapping[Signal, float],
    upstream_rate_per_s: float | None = None,
    step_vouched: bool = True,
) -> tuple[dict[Signal, float], str]:
    """The decode concurrency to size for once the queue is a backlog and running sequences are counted at the
    sizing batch's speed; and a note for the reason ("" when nothing changed).

    ``upstream_rate_per_s`` is the request rate the prefill pools of the same model will hand over once sized
    (their arrivals plus their backlog's drain rate): while prefill is short, decode sees only what prefill
    serves, and sizing on that alone orders decode a cold start late.

    ``step_vouched`` says whether the predicted step at the sizing batch rests on evidence; when it does not, the
    count is only ever lowered (for sequences observed slower than that step), never raised on a step time the
    model cannot vouch for.
    """
    out = dict(demand)
    conc = demand.get(Signal.DECODE_CONCURRENCY)
    obs = ctx.observations.get(pool)
    if not conc or obs is None or obs.state is not DataState.OK:
        return out, ""
    s = obs.signals
    lead_s = ctx.lead_time_s(pool)
    b = model.decode_batch(ctx.slo.itl_ms, w, corr)
    if lead_s <= 0 or b < 1:
        return out, ""
    step_ms = model.predict_itl_ms(1, float(b), w, corr)
    notes: list[str] = []
    cut = 0.0
    waiting = s.waiting_requests or 0.0
    seq_s = w.osl_mean_tokens * step_ms / 1e3
    keep = min(1.0, seq_s / lead_s)
    if waiting > 0 and keep < 1.0:
        cut += waiting * (1.0 - keep)
        notes.append(
            f"{waiting:.0f} queued drain in {lead_s:.0f} s on {waiting * keep:.1f} slots "
            f"({w.osl_mean_tokens:.0f} tok x {step_ms:.0f} ms)"
        )
    itl = s.itl_mean_ms
    running = max(0.0, conc - waiting)  # the forecast's running part
    if running and itl and step_ms > 0 and abs(itl - step_ms) > 0.05 * step_ms and (step_vouched or itl > step_ms):
        cut += running * (1.0 - step_ms / itl)  # > 0: slowed past the sizing step; < 0: faster than it
        notes.append(
            f"{running:.0f} running at ITL {itl:.0f} ms hold {running * step_ms / itl:.0f} slots at the sizing "
            f"batch's {step_ms:.0f} ms"
        )
    settled = max(0.0, conc - min(cut, conc))
    arriving = s.demand(Signal.REQUEST_RATE)
    if upstream_rate_per_s and arriving and upstream_rate_per_s > arriving:
        ratio = upstream_rate_per_s / arriving
        settled *= ratio
        notes.append(
            f"prefill will hand over {upstream_rate_per_s:.1f} req/s, decode receives {arriving:.1f}: x{ratio:.2f}"
        )
    if not notes:
        return out, ""
    out[Signal.DECODE_CONCURRENCY] = settled
    return out, "; ".join(notes)


def prefill_backlog(
    ctx: PolicyContext,
    pool: str,
    model: CapacityModel,
    w: Workload,
    corr: Correction,
    demand: Mapping[Signal, float],
) -> tuple[dict[Signal, float], str]:
    """The prefill demand raised by the rate that drains the queued prompts within one lead time; and a note."""
    out = dict(demand)
    obs = ctx.observations.get(pool)
    if obs is None or obs.state is not DataState.OK:
        return out, ""
    waiting = obs.signals.waiting_requests or 0.0
    lead_s = ctx.lead_time_s(pool)
    ready = ctx.states[pool].ready
    rate = demand.get(Signal.REQUEST_RATE)
    if rate is None:
        tps = demand.get(Signal.PREFILL_TPS)
        rate = None if tps is None else tps / max(1.0, w.isl_mean_tokens)
    if waiting <= 0 or lead_s <= 0 or not rate:
        return out, ""
    arriving = obs.signals.demand(Signal.REQUEST_RATE) or 0.0
    if ready < 1:
        return out, ""
    capacity = 1.0 / model.predict_prefill_busy_share(ready, {Signal.REQUEST_RATE: 1.0}, w, corr)  # req/s
    growth = max(0.0, arriving - capacity)  # arrivals the ready replicas cannot serve, per second
    spare = capacity - arriving
    # A queue the ready replicas clear within the TTFT target is the queueing model's business, not a backlog.
    if growth <= 0 and spare > 0 and waiting / spare <= ctx.slo.ttft_ms / 1e3:
        return out, ""
    projected = waiting + growth * lead_s
    extra = projected / lead_s
    scale = (rate + extra) / rate
    for sig in (Signal.REQUEST_RATE, Signal.PREFILL_TPS):
        if sig in out:
            out[sig] = out[sig] * scale
    note = f"{waiting:.0f} queued prompts"
    if growth > 0:
        note += f" (+{growth:.1f}/s while {ready} ready are short)"
    return out, f"{note} drain within {lead_s:.0f} s: +{extra:.2f} req/s"


def upstream_rate(
    ctx: PolicyContext, decode_pool: str, model: CapacityModel, w: Workload, corr: Correction
) -> float | None:
    """The request rate the prefill pools serving ``decode_pool``'s model will send once sized: their observed
    arrivals raised by their backlog's drain rate (``prefill_backlog``). None while no prefill pool is short
    (decode then receives what arrives), without an OK prefill observation, or when several decode pools share
    the model (which of them gets the flow is the router's choice)."""
    spec = ctx.pools[decode_pool]
    decode_pools = [n for n, p in ctx.pools.items() if p.role is PoolRole.DECODE and p.model == spec.model]
    if len(decode_pools) != 1:
        return None
    total, short = 0.0, False
    for name, p in ctx.pools.items():
        obs = ctx.observations.get(name)
        if p.role is not PoolRole.PREFILL or p.model != spec.model or obs is None or obs.state is not DataState.OK:
            continue
        arriving = obs.signals.demand(Signal.REQUEST_RATE)
        if arriving is None:
            continue
        scaled, note = prefill_backlog(ctx, name, model, w, corr, {Signal.REQUEST_RATE: arriving})
        total += scaled[Signal.REQUEST_RATE]
        short |= bool(note)
    return total if short else None
