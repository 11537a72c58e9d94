#!/usr/bin/env bash
# Installs what the pod test needs besides the test dependencies: podman,
# runc (our machines' kernel needs it: crun refuses its cgroup layout) and
# debootstrap (the offline base image). Debian's packages; installs only
# what is missing and says clearly what it cannot install.
set -euo pipefail

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-podman: please install ${need[*]} with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "install-podman: need root (or sudo) to apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
echo "install-podman: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
