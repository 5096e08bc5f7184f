"""Property-based fuzzing of admin request fields: no crash, only the allowed status codes, no change on refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.convert import dict_to_struct
from tests.controller.test_admin_api import AUTH, TOKEN, Harness, _settings

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
names = st.one_of(st.sampled_from(["", "prefill", "decode", "*"]), st.text(max_size=20))
numbers = st.floats(allow_nan=True, allow_infinity=True)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
params = st.dictionaries(st.sampled_from(["replicas", "x", ""]) | st.text(max_size=6), json_values, max_size=3)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, pb_grpc.AdminServiceStub]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), Path(tmp_path_factory.mktemp("fuzz")))
    h.tick()
    with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
        yield h, pb_grpc.AdminServiceStub(ch)
    h.close()
    mp.undo()


def _status(call: object, request: object) -> grpc.StatusCode:
    try:
        call(request, metadata=AUTH, timeout=5)  # type: ignore[operator]
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(pool=names, mode=st.integers(0, 5), replicas=ints, ttl=st.none() | numbers, reason=st.text(max_size=40))
def test_set_override_fields(
    fuzz: tuple[Harness, pb_grpc.AdminServiceStub], pool: str, mode: int, replicas: int, ttl: float | None, reason: str
) -> None:
    """SetOverride with arbitrary fields answers an allowed code; a refused one leaves overrides unchanged."""
    h, stub = fuzz
    before = dict(h.rec.overrides)
    req = pb.SetOverrideRequest(pool=pool, mode=mode, replicas=replicas, reason=reason)  # type: ignore[arg-type]
    if ttl is not None:
        req.ttl_s = ttl
    code = _status(stub.SetOverride, req)
    assert code in ALLOWED
    if code is not grpc.StatusCode.OK:
        assert h.rec.overrides == before
    h.rec.overrides.clear()


@FUZZ
@given(pool=names, size=ints, token=st.text(max_size=30), since=st.none() | numbers, until=st.none() | numbers)
def test_list_decisions_fields(
    fuzz: tuple[Harness, pb_grpc.AdminServiceStub],
    pool: str,
    size: int,
    token: str,
    since: float | None,
    until: float | None,
) -> None:
    """ListDecisions with arbitrary paging and ranges answers an allowed code."""
    _, stub = fuzz
    req = pb.ListDecisionsRequest(pool=pool, page_size=size, page_token=token)
    if since is not None:
        req.since_s = since
    if until is not None:
        req.until_s = until
    assert _status(stub.ListDecisions, req) in ALLOWED


@FUZZ
@given(ttft=st.none() | numbers, itl=st.none() | numbers, q=st.none() | numbers)
def test_update_slo_fields(
    fuzz: tuple[Harness, pb_grpc.AdminServiceStub], ttft: float | None, itl: float | None, q: float | None
) -> None:
    """UpdateSLO with arbitrary numbers answers an allowed code and never stores an invalid SLO."""
    h, stub = fuzz
    req = pb.UpdateSLORequest()
    for field, v in (("ttft_ms", ttft), ("itl_ms", itl), ("quantile", q)):
        if v is not None:
            setattr(req, field, v)
    assert _status(stub.UpdateSLO, req) in ALLOWED
    assert h.rec.slo.ttft_ms > 0
    assert 0.5 <= h.rec.slo.quantile < 1.0


@FUZZ
@given(name=st.sampled_from(["static", "nope", ""]) | st.text(max_size=10), p=params)
def test_set_policy_fields(fuzz: tuple[Harness, pb_grpc.AdminServiceStub], name: str, p: dict[str, object]) -> None:
    """SetPolicy with arbitrary names and parameters answers an allowed code."""
    _, stub = fuzz
    assert _status(stub.SetPolicy, pb.SetPolicyRequest(name=name, params=dict_to_struct(p))) in ALLOWED


@FUZZ
@given(
    policy=st.sampled_from(["", "static", "nope"]),
    p=st.none() | params,
    budget=st.none() | st.integers(-(2**40), 2**40),
    unlimited=st.booleans(),
    pool=names,
    mode=st.integers(0, 4),
    replicas=ints,
    clear=st.lists(names, max_size=2),
    ttft=st.none() | numbers,
)
def test_dry_run_fields(
    fuzz: tuple[Harness, pb_grpc.AdminServiceStub],
    policy: str,
    p: dict[str, object] | None,
    budget: int | None,
    unlimited: bool,
    pool: str,
    mode: int,
    replicas: int,
    clear: list[str],
    ttft: float | None,
) -> None:
    """DryRun with arbitrary changes answers an allowed code and acts on nothing."""
    h, stub = fuzz
    calls = len(h.actuator.calls)
    req = pb.DryRunRequest(policy=policy, unlimited_budget=unlimited, clear_overrides=clear)
    req.overrides.append(pb.Override(pool=pool, mode=mode, replicas=replicas))  # type: ignore[arg-type]
    if p is not None:
        req.policy_params.CopyFrom(dict_to_struct(p))
    if budget is not None:
        req.budget_gpus = budget
    if ttft is not None:
        req.ttft_ms = ttft
    assert _status(stub.DryRun, req) in ALLOWED
    assert len(h.actuator.calls) == calls


@FUZZ
@given(pool=names, reason=st.text(max_size=2000), resume=st.booleans())
def test_pause_fields(fuzz: tuple[Harness, pb_grpc.AdminServiceStub], pool: str, reason: str, resume: bool) -> None:
    """Pause/Resume with arbitrary pools and reasons answer an allowed code."""
    h, stub = fuzz
    if resume:
        assert _status(stub.Resume, pb.ResumeRequest(pool=pool)) in ALLOWED
    else:
        assert _status(stub.Pause, pb.PauseRequest(pool=pool, reason=reason)) in ALLOWED
    assert h.rec.paused <= {"*", "prefill", "decode"}
