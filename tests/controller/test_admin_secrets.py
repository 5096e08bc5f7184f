"""Credentials in plugin params never leave the daemon: not in GetStatus, decisions, Explain, answers or logs."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import text_format

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.convert import dict_to_struct
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.runtime.logconfig import configure_logging
from pdscale.controller.runtime.plugins import PluginGroup
from tests.controller.test_admin_api import AUTH, TOKEN, Harness, _settings

SECRETS = ("pa55word", "tok-SECRET-1", "SECRETBEARER9", "hunter2x")
PARAMS = {
    "url": "http://alice:pa55word@hook.internal/decide",
    "token": "tok-SECRET-1",
    "headers": {"Authorization": "Bearer SECRETBEARER9"},
    "retries": 3,
}


class HookPolicy:
    """A policy plugin that (carelessly) repeats its params in its reasons and its errors."""

    name = "hook"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        if "password" in self.params:
            raise ValueError(f"hook: password={self.params['password']} rejected by {self.params.get('url')}")

    def decide(self, ctx: PolicyContext) -> Proposal:
        why = f"asked {self.params.get('url')} with token={self.params.get('token')}"
        return Proposal(targets=dict.fromkeys(ctx.pools, 2), reasons=dict.fromkeys(ctx.pools, why))


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's own log configuration (JSON lines), writing to a buffer instead of stderr."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    handlers = list(logging.getLogger().handlers)
    configure_logging("debug", "json")
    yield buffer
    structlog.reset_defaults()
    for h in logging.getLogger().handlers:
        if h not in handlers:
            logging.getLogger().removeHandler(h)


def _text(msg: Any) -> str:
    return str(text_format.MessageToString(msg))


def test_secrets_masked_in_every_answer_and_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: io.StringIO
) -> None:
    """After SetPolicy with credentials and a tick, no answer and no log line contains any of them."""
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), tmp_path)
    h.controls.registry.register(PluginGroup.POLICIES, "hook", HookPolicy)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
            stub = pb_grpc.AdminServiceStub(ch)
            answers = [stub.SetPolicy(pb.SetPolicyRequest(name="hook", params=dict_to_struct(PARAMS)), metadata=AUTH)]
            h.tick()
            answers += [
                stub.GetStatus(pb.GetStatusRequest()),
                stub.ListDecisions(pb.ListDecisionsRequest()),
                stub.ExplainDecision(pb.ExplainDecisionRequest()),
                stub.DryRun(pb.DryRunRequest()),
            ]
            bad = pb.SetPolicyRequest(name="hook", params=dict_to_struct({**PARAMS, "password": "hunter2x"}))
            with pytest.raises(grpc.RpcError) as info:
                stub.SetPolicy(bad, metadata=AUTH)
            refusal = info.value.details() or ""
    finally:
        h.close()
    shown = "\n".join(_text(a) for a in answers) + refusal
    assert "hook.internal" in shown  # the answers do carry the params and reasons, only masked
    assert h.rec.policy_params["token"] == "tok-SECRET-1"  # the plugin itself still gets the real value
    logs = logged.getvalue()
    assert "admin_policy_set" in logs
    assert "scale_decision" in logs
    for secret in SECRETS:
        assert secret not in shown, secret
        assert secret not in logs, secret
