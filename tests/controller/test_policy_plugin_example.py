"""The example policy plugin installs as a package and loads through the entry-point registry."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import SLO, DataState, PoolObservation, PoolRole, PoolSpec, PoolState, Signals
from pdscale.controller.runtime.plugins import PluginError, PluginGroup, Registry

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "policy-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example into a temporary target on sys.path; removed afterwards."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(PLUGIN)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("pdscale_example_policy", None)
        importlib.invalidate_caches()


@pytest.mark.slow
def test_registry_lists_and_builds_plugin(installed: Path) -> None:
    """After install, the registry finds 'fixed-ratio' from its distribution and builds it with params."""
    reg = Registry()
    assert ("fixed-ratio", "pdscale_example_policy:FixedRatioPolicy", "pdscale-example-policy") in reg.describe(
        PluginGroup.POLICIES
    )
    policy = reg.create(PluginGroup.POLICIES, "fixed-ratio", {"ratio": 3.0, "prefill_tps_per_replica": 1000.0})
    pools = {
        "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 10),
        "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 10),
    }
    obs = PoolObservation("prefill", DataState.OK, Signals(prompt_tokens_per_s=2500.0), sample_time_s=0.0)
    ctx = PolicyContext(
        now_s=0.0,
        tick_s=30.0,
        pools=pools,
        states={n: PoolState(n, 1, 1) for n in pools},
        observations={"prefill": obs},
        forecasts={},
        slo=SLO(1000.0, 50.0),
    )
    assert policy.decide(ctx).targets == {"prefill": 3, "decode": 9}


@pytest.mark.slow
def test_plugin_rejects_unknown_params(installed: Path) -> None:
    """The plugin's own parameter validation surfaces as a PluginError naming the parameter."""
    with pytest.raises(PluginError, match="bogus"):
        Registry().create(PluginGroup.POLICIES, "fixed-ratio", {"bogus": 1})
