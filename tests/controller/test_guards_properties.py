"""Property tests of the guarded decision step (pdscale.controller.core.decide.decide) over random inputs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.decide import DecideInput, decide
from pdscale.controller.core.guards import GuardSettings, GuardState, PoolGuardState, budget_cost_gpus
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import (
    SLO,
    DataState,
    Forecast,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    Signal,
    Signals,
)
from pdscale.controller.policies.slo import SloPolicy
from tests.helpers.capacity_profiles import small_profile

NAMES = ("prefill", "decode")


@dataclass(frozen=True, slots=True)
class FixedPolicy:
    """Proposes the given targets, whatever the context."""

    targets: dict[str, int]
    name: str = "fixed"

    def decide(self, ctx: PolicyContext) -> Proposal:
        return Proposal(targets=self.targets)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DecideInput, FixedPolicy]:
    now = draw(st.floats(1000.0, 1e6))
    specs: dict[str, PoolSpec] = {}
    states: dict[str, PoolState] = {}
    observations: dict[str, PoolObservation] = {}
    proposals: dict[str, int] = {}
    memory: dict[str, PoolGuardState] = {}
    for i, name in enumerate(NAMES):
        lo = draw(st.integers(0, 3))
        hi = draw(st.integers(max(lo, 1), 20))
        specs[name] = PoolSpec(name, (PoolRole.PREFILL, PoolRole.DECODE)[i], draw(st.integers(1, 8)), lo, hi)
        target = draw(st.integers(lo, hi))
        ready = draw(st.integers(0, target))
        starting = target - ready
        states[name] = PoolState(name, target, ready, starting, draw(st.integers(0, 3)))
        kind = draw(st.sampled_from(["ok", "missing", "stale", "old"]))
        sig = Signals(
            request_rate_per_s=draw(st.floats(0.0, 100.0)),
            running_requests=draw(st.floats(0.0, 500.0)),
            waiting_requests=draw(st.floats(0.0, 50.0)),
        )
        if kind == "ok":
            observations[name] = PoolObservation(name, DataState.OK, sig, sample_time_s=now)
        elif kind == "old":
            observations[name] = PoolObservation(name, DataState.OK, sig, sample_time_s=now - 500.0)
        elif kind == "stale":
            observations[name] = PoolObservation(name, DataState.STALE, sig, sample_time_s=now - 500.0)
        else:
            observations[name] = PoolObservation.missing(name, "no data")
        proposals[name] = draw(st.integers(0, 40))
        past = draw(st.lists(st.tuples(st.floats(now - 600.0, now), st.integers(0, 40)), max_size=5))
        memory[name] = PoolGuardState(history=tuple(sorted(past)))
    paid = sum(budget_cost_gpus(specs[n], states[n], states[n].target) for n in NAMES)
    budget = draw(st.one_of(st.none(), st.integers(paid, paid + 64)))
    ctx = PolicyContext(
        now_s=now,
        tick_s=30.0,
        pools=specs,
        states=states,
        observations=observations,
        forecasts={},
        slo=SLO(1000.0, 50.0),
        budget_gpus=budget,
    )
    guard_settings = GuardSettings(
        max_step_up=draw(st.integers(1, 8)),
        max_step_down=draw(st.integers(1, 4)),
        scale_down_window_s=draw(st.sampled_from([0.0, 300.0])),
    )
    return DecideInput(ctx, guard_settings, GuardState(pools=memory)), FixedPolicy(proposals)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_budget_never_exceeded_mid_rebalance(case: tuple[DecideInput, FixedPolicy]) -> None:
    """With draining replicas still paid, the GPUs held right after this step never exceed the budget."""
    inp, policy = case
    out = decide(policy, inp)
    ctx = inp.ctx
    if ctx.budget_gpus is None:
        return
    cost = sum(budget_cost_gpus(ctx.pools[n], ctx.states[n], t) for n, t in out.decision.targets().items())
    assert cost <= ctx.budget_gpus


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_below_minimum(case: tuple[DecideInput, FixedPolicy]) -> None:
    """No target goes below its pool's minimum."""
    inp, policy = case
    out = decide(policy, inp)
    for name, target in out.decision.targets().items():
        assert target >= inp.ctx.pools[name].min_replicas


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_scale_down_on_stale_or_missing_data(case: tuple[DecideInput, FixedPolicy]) -> None:
    """A pool whose metrics are missing, stale or too old never scales down."""
    inp, policy = case
    out = decide(policy, inp)
    for name, d in out.decision.pools.items():
        obs = inp.ctx.observations[name]
        age = obs.staleness_s(inp.ctx.now_s)
        bad = obs.state is not DataState.OK or (age is not None and age > inp.guard_settings.stale_after_s)
        if bad:
            assert d.target >= inp.ctx.states[name].target


def _forecast(v: float) -> Forecast:
    return Forecast(mean=v, quantiles={0.5: v, 0.9: v, 0.99: v})


def test_constant_load_does_not_flap() -> None:
    """Under constant load near a 1 <-> 2 replica boundary, slo policy + guards settle and stay put."""
    model = ProfileCapacityModel(small_profile())
    specs = {
        "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 8, cold_start_s=60.0),
        "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 8, cold_start_s=60.0),
    }
    policy = SloPolicy({"calibrate": False})
    slo = SLO(1000.0, 50.0)
    # Pick a load that needs exactly two decode replicas (and is within a hair of one).
    b = model.decode_batch(slo.itl_ms, model.workload({Signal.PREFILL_TPS: 1000.0, Signal.REQUEST_RATE: 1.0}))
    conc = b * 1.02
    targets = {"prefill": 2, "decode": 1}
    history: list[dict[str, int]] = []
    policy_state: object = {}
    guard_state = GuardState()
    for k in range(200):
        now = 1000.0 + 30.0 * k
        states = {n: PoolState(n, t, t) for n, t in targets.items()}
        sig = Signals(
            request_rate_per_s=1.0,
            prompt_tokens_per_s=1000.0,
            running_requests=conc,
            waiting_requests=0.0,
            isl_mean_tokens=1000.0,
            osl_mean_tokens=200.0,
        )
        obs = {n: PoolObservation(n, DataState.OK, sig, sample_time_s=now) for n in specs}
        fc = {
            "prefill": {Signal.PREFILL_TPS: _forecast(1000.0), Signal.REQUEST_RATE: _forecast(1.0)},
            "decode": {Signal.DECODE_CONCURRENCY: _forecast(conc), Signal.REQUEST_RATE: _forecast(1.0)},
        }
        ctx = PolicyContext(
            now_s=now,
            tick_s=30.0,
            pools=specs,
            states=states,
            observations=obs,
            forecasts=fc,
            slo=slo,
            capacity=model,
            state=policy_state,  # type: ignore[arg-type]
        )
        out = decide(policy, DecideInput(ctx, GuardSettings(), guard_state))
        policy_state, guard_state = out.policy_state, out.guard_state
        targets = out.decision.targets()
        history.append(dict(targets))
    changes = sum(1 for a, c in itertools.pairwise(history) if a != c)
    assert history[-1]["decode"] == 2
    assert changes <= 2
