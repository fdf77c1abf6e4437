#!/usr/bin/env bash
# Makes the base image the runtime stage uses (debian:bookworm-slim) on a
# machine with a Docker engine but no registry to pull it from: debootstrap
# a minimal Debian from the mirror apt is already set up with, then import
# it under that name. Does nothing if the image exists.
#
#   scripts/docker-base-image.sh            # as root (debootstrap needs it)
set -euo pipefail
IMAGE=${IMAGE:-debian:bookworm-slim}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is there"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# The mirror apt uses here (deb822 sources first, then sources.list).
mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "== debootstrap bookworm (minbase) from apt's mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "imported $IMAGE"
