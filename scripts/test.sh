#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine and runs every check:
# ruff, mypy (strict), import-linter, then pytest (all markers, integration tests included).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  log "installing Debian's prometheus (real server for integration tests, promtool for rule tests)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start its own service on :9090; the tests start theirs on free ports. Stop that service
  # through its service manager (never by process name: a developer's other Prometheus servers stay up).
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
  elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi

log "installing pdscale with every extra and the test tools"
python -m pip install -q --disable-pip-version-check -e '.[all,test]'

log "ruff"
ruff check .
ruff format --check .

log "mypy --strict (the pdscale package: controller, forecasting, actuators, simulator)"
mypy

log "import-linter"
lint-imports

log "pytest"
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
