#!/usr/bin/env bash
# Make the base image every depthsweep image builds FROM: Debian bookworm (its Python 3.11 is the
# project's). Usage: docker/base.sh [pull|mmdebstrap] [TAG]
#   pull        (default) tag the registry's debian:bookworm-slim as TAG
#   mmdebstrap  build it from Debian packages with mmdebstrap and `docker import` (no container
#               registry needed; reads the host's apt sources' Debian mirror, deb.debian.org by default)
# TAG defaults to $DEPTHSWEEP_BASE, else depthsweep-base:bookworm.
set -euo pipefail
mode=${1:-pull}
tag=${2:-${DEPTHSWEEP_BASE:-depthsweep-base:bookworm}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

case "$mode" in
  pull)
    docker pull debian:bookworm-slim
    docker tag debian:bookworm-slim "$tag"
    ;;
  mmdebstrap)
    # minbase: apt and dpkg, no documentation; the images install what they need with apt-get.
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      bookworm - "deb $mirror bookworm main" "deb ${mirror%/debian}/debian-security bookworm-security main" \
      | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
    ;;
  *)
    echo "usage: $0 [pull|mmdebstrap] [TAG]" >&2
    exit 2
    ;;
esac
echo "$tag"
