#!/bin/sh
# The compose stack's one-shot sweep: join the Ray cluster as a node that runs no trials (the
# driver), then run `python -m sweep.run SPEC [ARGS...]` on it. Everything the sweep writes goes to
# the shared volume: the search spaces are copied to /shared/project, so a spec's relative paths
# (../data, ../runs) land there too, where every worker reads the data and Ray's storage is
# /shared/ray. The Optuna study goes to $OPTUNA_STORAGE (PostgreSQL) when it is set.
set -eu
mkdir -p /shared/project /shared/ray
cp -rn /src/search_spaces /src/configs /shared/project/
cd /shared/project
ray start --address="${RAY_HEAD:-ray-head:6379}" --num-cpus=0 --num-gpus=0 --disable-usage-stats >/dev/null
trap 'ray stop >/dev/null 2>&1 || true' EXIT
storage=""
if [ -n "${OPTUNA_STORAGE:-}" ]; then storage="--set study.storage=$OPTUNA_STORAGE"; fi
# shellcheck disable=SC2086  # $storage is two words or none
python -m sweep.run "$@" $storage --address auto --storage-path /shared/ray
