#!/usr/bin/env bash
# Make the stack's secrets once: docker/.secrets/pg_password and docker/.secrets/ray_token (random,
# readable by the containers' users, kept out of git). An existing file is kept.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/.secrets"
mkdir -p "$dir" && chmod 700 "$dir"
for name in pg_password ray_token; do
  if [ ! -s "$dir/$name" ]; then
    (umask 022; python3 -c "import secrets; print(secrets.token_hex(32))" > "$dir/$name")
  fi
done
echo "$dir"
