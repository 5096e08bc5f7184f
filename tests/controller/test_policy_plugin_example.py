"""The example policy plugin installs as a package and loads through the entry-point registry."""

from __future__ import annotations

import ast
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


def test_example_imports_only_the_public_api() -> None:
    """Every pdscale import in the example plugin comes from pdscale.api, the one module plugins may use."""
    imported: list[str] = []
    for path in (PLUGIN / "pdscale_example_policy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.append(node.module)
            elif isinstance(node, ast.Import):
                imported.extend(a.name for a in node.names)
    ours = [m for m in imported if m.split(".")[0] == "pdscale"]
    assert ours
    assert set(ours) == {"pdscale.api"}


def test_public_api_names_resolve() -> None:
    """Every name pdscale.api exports exists (a rename behind it would break plugins at import)."""
    api = importlib.import_module("pdscale.api")
    assert [n for n in api.__all__ if not hasattr(api, n)] == []


@pytest.mark.slow
def test_bench_accepts_a_registered_plugin_policy(installed: Path) -> None:
    """``bench --policies`` takes any registered policy plugin, not a fixed list, and runs it."""
    from pdscale.controller.lab.bench import parse_policies, run_grid
    from pdscale.controller.lab.scenario import resolve_scenarios

    assert parse_policies("slo,fixed-ratio") == ["slo", "fixed-ratio"]
    assert "fixed-ratio" in parse_policies("all")
    scenario = resolve_scenarios("chat-hour")[0].quick()
    ((req, out),) = run_grid([scenario], ["fixed-ratio"])
    assert req.policy == "fixed-ratio"
    assert "error" not in out.row
    assert out.row["requests"] > 0
