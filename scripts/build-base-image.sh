#!/usr/bin/env bash
# Builds the offline base image for AIDA's containers: Debian bookworm
# (minbase) with git and CA certificates, made with debootstrap from Debian's
# package mirror and imported into Podman. Used when no container registry
# is reachable (see README, "Offline build"). Does nothing if the image
# exists already.
#
#   scripts/build-base-image.sh [IMAGE]     # default localhost/aida-base:bookworm
#
# Needs root (debootstrap), debootstrap and podman. DEBIAN_MIRROR overrides
# the mirror (default http://deb.debian.org/debian).
set -euo pipefail

image="${1:-localhost/aida-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$image"; then
    echo "build-base-image: $image exists, keeping it" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-base-image: debootstrap needs root; run as root (or sudo) or build with a registry (make build-images)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-base-image: debootstrap is missing (apt-get install debootstrap, or scripts/install-podman.sh)" >&2
    exit 1
fi

rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/aida-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

echo "build-base-image: debootstrap bookworm into $rootfs (about a minute)" >&2
debootstrap --variant=minbase --include=ca-certificates,git bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    echo "build-base-image: debootstrap failed (full log: $rootfs.log)" >&2
    exit 1
}
rm -f "$rootfs.log"
# Smaller image: no package lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

tar -C "$rootfs" -c . | podman import --quiet \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$image" >/dev/null
echo "build-base-image: built $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)" >&2
