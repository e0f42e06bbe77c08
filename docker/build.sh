#!/usr/bin/env bash
# Build the stack's two images from the base image (docker/base.sh makes it when missing):
#   depthsweep:latest           the sweep, the Ray nodes and the MLflow tracking server
#   depthsweep-postgres:latest  PostgreSQL 15 for the Optuna study and the MLflow store
# Environment: DEPTHSWEEP_BASE (base tag), DEPTHSWEEP_BASE_FROM (pull | mmdebstrap: how base.sh
# makes a missing base), EXTRA_CA_DIR (extra CA certificates for pip behind a TLS-inspecting proxy,
# default /usr/local/share/ca-certificates), TORCH_INDEX_URL (e.g. a CPU-only torch index).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${DEPTHSWEEP_BASE:-depthsweep-base:bookworm}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  docker/base.sh "${DEPTHSWEEP_BASE_FROM:-pull}" "$base"
fi
ca=""
for cert in "${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"/*.crt; do
  if [ -r "$cert" ]; then ca+="$(cat "$cert")"$'\n'; fi
done
docker build --quiet -f docker/Dockerfile --build-arg BASE="$base" --build-arg EXTRA_CA_CERTS="$ca" \
  --build-arg TORCH_INDEX_URL="${TORCH_INDEX_URL:-}" -t depthsweep:latest .
docker build --quiet -f docker/postgres.Dockerfile --build-arg BASE="$base" -t depthsweep-postgres:latest .
