"""Hostile admin inputs that used to answer INTERNAL or a wrong refusal: NaN params, forged page tokens, auth."""

from __future__ import annotations

import base64

import grpc
import pytest
from google.protobuf import struct_pb2

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.auth import MUTATING_METHODS, READ_METHODS, SERVICE, TokenAuthInterceptor
from tests.controller.test_admin_api import AUTH, Harness, _code, harness, stub  # noqa: F401  (fixtures)


def _struct(value: float) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update({"replicas": {"prefill": value}})
    return s


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_policy_params_are_invalid(
    harness: Harness,  # noqa: F811
    stub: pb_grpc.AdminServiceStub,  # noqa: F811
    value: float,
) -> None:
    """SetPolicy and DryRun with a NaN or infinite parameter are INVALID_ARGUMENT and change nothing."""
    harness.tick()
    before = harness.rec.policy
    req = pb.SetPolicyRequest(name="static", params=_struct(value))
    assert _code(lambda: stub.SetPolicy(req, metadata=AUTH)) is grpc.StatusCode.INVALID_ARGUMENT
    dry = pb.DryRunRequest(policy="static", policy_params=_struct(value))
    assert _code(lambda: stub.DryRun(dry)) is grpc.StatusCode.INVALID_ARGUMENT
    assert harness.rec.policy is before


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        _token("before:" + "9" * 30),
        _token("before:" + "9" * 5000),
        _token("before:-5"),
        _token("before:0"),
        "A" * 10**5,
    ],
)
def test_forged_page_tokens_are_invalid(stub: pb_grpc.AdminServiceStub, token: str) -> None:  # noqa: F811
    """A page token no server could have issued (too large for an id, negative, huge) is INVALID_ARGUMENT."""
    req = pb.ListDecisionsRequest(page_token=token)
    assert _code(lambda: stub.ListDecisions(req)) is grpc.StatusCode.INVALID_ARGUMENT


def test_every_rpc_is_classified_read_or_write() -> None:
    """Each AdminService method is in exactly one of READ_METHODS and MUTATING_METHODS."""
    methods = set(pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)
    assert methods == READ_METHODS | MUTATING_METHODS
    assert not READ_METHODS & MUTATING_METHODS


def test_read_refusal_says_it_is_a_read() -> None:
    """With auth_read_only and no token, GetStatus is refused as a read needing a token, not as a change."""
    guard = TokenAuthInterceptor(None, auth_read_only=True, allow_without_token=False)
    refused = guard.check(f"/{SERVICE}/GetStatus", ())
    assert refused is not None
    code, message = refused
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "changes the daemon" not in message
    assert "auth_read_only" in message


def test_unclassified_method_is_treated_as_a_write() -> None:
    """A method in neither set needs the token (fail closed)."""
    guard = TokenAuthInterceptor("t0ken", allow_without_token=True)
    refused = guard.check(f"/{SERVICE}/DeleteEverything", ())
    assert refused is not None
    assert refused[0] is grpc.StatusCode.UNAUTHENTICATED
    assert guard.check(f"/{SERVICE}/GetStatus", ()) is None
