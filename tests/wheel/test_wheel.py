"""The wheel is the product: built from this checkout, installed into a fresh venv, run from elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (so no build/ leftovers of the working tree leak into it)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=COPY_IGNORE)
    out = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        cwd=root,
    )
    (built,) = out.glob("pdscale-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (dependencies from this interpreter's site-packages) with only the wheel installed."""
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    return env_dir


def _run(venv: Path, cwd: Path, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def test_wheel_top_level_is_pdscale_only(wheel: Path) -> None:
    """The wheel installs one import name, pdscale, and no top-level controller/forecasting/... packages."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"pdscale"}


def test_wheel_registers_no_test_double(wheel: Path) -> None:
    """The wheel's entry points name no test double: a settings file cannot pick the fake actuator by mistake."""
    archive = zipfile.ZipFile(wheel)
    (eps,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = archive.read(eps).decode()
    assert "pdscale.controller.policies.slo:SloPolicy" in text
    assert "pdscale.testing" not in text


def test_wheel_ships_bundled_configs_scenarios_and_data(wheel: Path) -> None:
    """The demo settings, every bench scenario, the perf parameters and the traces are package data."""
    names = set(zipfile.ZipFile(wheel).namelist())
    scenarios = sorted(p.name for p in (REPO / "controller" / "bundled" / "scenarios").glob("*.yaml"))
    data = sorted(p.relative_to(REPO / "simulator").as_posix() for p in (REPO / "simulator" / "data").rglob("*"))
    assert scenarios
    expected = {"pdscale/controller/bundled/demo.yaml"}
    expected |= {f"pdscale/controller/bundled/scenarios/{s}" for s in scenarios}
    expected |= {
        f"pdscale/controller/bundled/scenarios/data/{p.name}"
        for p in (REPO / "controller" / "bundled" / "scenarios" / "data").glob("*.csv")
    }
    expected |= {
        f"pdscale/controller/bundled/scenarios/hardware/{p.name}"
        for p in (REPO / "controller" / "bundled" / "scenarios" / "hardware").glob("*.json")
    }
    expected |= {f"pdscale/simulator/{d}" for d in data if (REPO / "simulator" / d).is_file()}
    assert expected - names == set()


def test_installed_wheel_imports_from_the_venv(venv: Path, tmp_path: Path) -> None:
    """From a directory outside the checkout, ``import pdscale`` resolves to the venv, not the source tree."""
    proc = _run(venv, tmp_path, "python", "-c", "import pdscale.api, pdscale.controller; print(pdscale.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(venv)


def test_installed_demo_runs_from_another_directory(venv: Path, tmp_path: Path) -> None:
    """``pdscale demo`` with its bundled settings runs a short simulated window and prints its summary."""
    proc = _run(
        venv, tmp_path, "pdscale", "demo", "--duration", "900", "--speedup", "600", "--plot", "",
        "--admin-listen", "127.0.0.1:0", "--telemetry-listen", "127.0.0.1:0", "--json", "summary.json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "summary.json").stat().st_size > 0


def test_installed_bench_runs_bundled_scenario(venv: Path, tmp_path: Path) -> None:
    """``pdscale bench --quick`` finds the bundled chat-hour scenario and runs slo and oracle on it."""
    proc = _run(
        venv, tmp_path, "pdscale", "bench", "--quick", "--scenarios", "chat-hour", "--policies", "slo,oracle",
        "--json", "rows.json", "--no-timelines",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    policies = sorted(r["policy"] for r in (rows["rows"] if isinstance(rows, dict) else rows))
    assert policies == ["oracle", "slo"]
