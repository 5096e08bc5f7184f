#!/usr/bin/env sh
# Regenerate controller/admin/_gen from protos/ (needs grpcio-tools).
set -eu
cd "$(dirname "$0")/.."
exec python -m pdscale.controller.admin.protogen "$@"
