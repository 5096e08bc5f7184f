"""The systemd unit for VM fleets: verified by systemd-analyze, hardened, reloadable, graceful."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import DEPLOY

UNIT = DEPLOY / "systemd" / "pdscale.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
# systemd-analyze security's exposure scale runs 0.0 (locked down) to 10.0; 2.0 is still "OK".
MAX_EXPOSURE_TENTHS = 20


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse a unit file into section -> [(key, value)], keeping repeated keys in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def _service() -> dict[str, str]:
    """The [Service] section, last value per key (as systemd applies single-valued settings)."""
    return dict(unit_entries(UNIT.read_text(encoding="utf-8"))["Service"])


def _fake_root(tmp_path: Path) -> Path:
    """A root with the unit, systemd's own units and a stub pdscale, so verify checks only this unit."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    stub = root / "usr/local/bin/pdscale"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy(shutil.which("kill") or "/bin/kill", root / "bin/kill")
    return root


class TestSystemdAnalyze:
    @needs_systemd_analyze
    def test_verify_reports_nothing(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` accepts the unit with no warning (unknown keys, bad values)."""
        if not Path("/usr/lib/systemd/system/multi-user.target").exists():
            pytest.skip("systemd's own unit files are not installed")
        assert SYSTEMD_ANALYZE is not None
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={_fake_root(tmp_path)}", UNIT.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == ""

    @needs_systemd_analyze
    def test_security_exposure_is_low(self) -> None:
        """`systemd-analyze security --offline` rates the unit's exposure at most 2.0 of 10."""
        assert SYSTEMD_ANALYZE is not None
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE_TENTHS}", str(UNIT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr


class TestUnitContent:
    def test_parser_keeps_repeated_keys(self) -> None:
        """Repeated keys such as SystemCallFilter stay as separate entries."""
        parsed = unit_entries("[Service]\nA=1\n# c\nA=~2\n")
        assert parsed == {"Service": [("A", "1"), ("A", "~2")]}

    def test_runs_the_daemon_with_its_config(self) -> None:
        """ExecStart is `pdscale serve --config /etc/pdscale/config.yaml`."""
        assert _service()["ExecStart"].split()[1:] == ["serve", "--config", "/etc/pdscale/config.yaml"]
        assert _service()["ExecStart"].split()[0].endswith("/pdscale")

    def test_restarts_on_failure_and_reloads_with_sighup(self) -> None:
        """Restart=on-failure; reload sends SIGHUP to the main process."""
        service = _service()
        assert service["Restart"] == "on-failure"
        assert service["ExecReload"].split()[1:] == ["-HUP", "$MAINPID"]

    def test_stops_gracefully(self) -> None:
        """SIGTERM first, with a stop timeout longer than the daemon's tick wind-down."""
        service = _service()
        assert service["KillSignal"] == "SIGTERM"
        assert service["TimeoutStopSec"].removesuffix("s").isdigit()
        assert int(service["TimeoutStopSec"].removesuffix("s")) >= 30

    def test_unprivileged_and_hardened(self) -> None:
        """Non-root user, no capabilities, no new privileges, read-only system, private tmp and devices."""
        service = _service()
        assert service.get("DynamicUser") == "yes" or service.get("User") not in {None, "root", "0"}
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "CapabilityBoundingSet": "",
            "AmbientCapabilities": "",
        }.items():
            assert service[key] == value, key

    def test_state_directory_holds_the_state_database(self) -> None:
        """StateDirectory gives the daemon /var/lib/pdscale, where the config keeps state.db."""
        config = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "config.yaml").read_text(encoding="utf-8"))
        assert Path("/var/lib") / _service()["StateDirectory"] == Path(config["state"]["path"]).parent

    def test_admin_token_is_a_credential_not_an_environment_value(self) -> None:
        """The token is loaded with LoadCredential, and the env example sets no token."""
        assert _service()["LoadCredential"].startswith("admin-token:")
        env = (DEPLOY / "systemd" / "pdscale.env.example").read_text(encoding="utf-8")
        assignments = [line for line in env.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert all("=" in line for line in assignments)
        assert not [line for line in assignments if line.startswith("PDSCALE_ADMIN_TOKEN")]

    def test_sysusers_creates_the_service_user(self) -> None:
        """The sysusers.d snippet creates the user the unit runs as."""
        line = (DEPLOY / "systemd" / "pdscale.sysusers.conf").read_text(encoding="utf-8").splitlines()[-1]
        assert line.split()[:2] == ["u", _service()["User"]]
