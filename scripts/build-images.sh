#!/usr/bin/env bash
# Builds AIDA's images: localhost/aida-{gateway,orchestrator,worker,aggregator}.
#
#   scripts/build-images.sh registry   # compile in docker.io/library/rust:1-bookworm,
#                                      # run on docker.io/library/debian:bookworm-slim
#   scripts/build-images.sh offline    # no registry: release binaries built on this
#                                      # host, on a local Debian base made with
#                                      # debootstrap; also builds the Redis image
#                                      # the pod uses (docker.io/library/redis:7-bookworm)
#
# Environment: BUILDER_IMAGE, BASE_IMAGE (override the Containerfiles'
# defaults; offline, BASE_IMAGE defaults to localhost/aida-base:bookworm),
# IMAGE_TAG (latest), CARGO (cargo), CARGO_TARGET_DIR (respected),
# CONTAINERS_CONF (passed on to podman).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-registry}"
tag="${IMAGE_TAG:-latest}"
services=(gateway orchestrator worker aggregator)
redis_image="docker.io/library/redis:7-bookworm"

if ! command -v podman >/dev/null 2>&1; then
    echo "build-images: podman is missing (on Debian: scripts/install-podman.sh, or apt-get install podman)" >&2
    exit 1
fi

build() { # service, context, extra podman build arguments...
    local service="$1" context="$2"
    shift 2
    echo "build-images: localhost/aida-$service:$tag" >&2
    podman build --format docker "$@" -f "Containerfile.$service" -t "localhost/aida-$service:$tag" "$context"
}

case "$mode" in
registry)
    args=(--build-arg BINARIES=builder)
    [ -n "${BUILDER_IMAGE:-}" ] && args+=(--build-arg "BUILDER_IMAGE=$BUILDER_IMAGE")
    [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    for service in "${services[@]}"; do
        build "$service" . "${args[@]}" || {
            echo "build-images: building localhost/aida-$service from the registry's images failed;" \
                "without a registry, use make build-images-offline" >&2
            exit 1
        }
    done
    ;;
offline)
    cargo="${CARGO:-cargo}"
    base="${BASE_IMAGE:-localhost/aida-base:bookworm}"
    # The base image (debootstrap, mostly download) while cargo compiles.
    base_log="$(mktemp)"
    scripts/build-base-image.sh "$base" >"$base_log" 2>&1 &
    base_pid=$!
    echo "build-images: building the release binaries on the host" >&2
    "$cargo" build --release --workspace --bins
    if ! wait "$base_pid"; then
        cat "$base_log" >&2
        rm -f "$base_log"
        exit 1
    fi
    cat "$base_log" >&2
    rm -f "$base_log"
    target_dir="$("$cargo" metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    [ -n "$target_dir" ] || { echo "build-images: cannot find cargo's target directory" >&2; exit 1; }

    # The build context of the prebuilt mode: the binaries, the CLI (the
    # orchestrator's image carries it for `aida admin ...`) and the probe.
    context=build/prebuilt
    rm -rf "$context"
    mkdir -p "$context"
    for service in "${services[@]}"; do
        cp "$target_dir/release/aida-$service" "$context/"
    done
    cp "$target_dir/release/aida" "$context/"
    cp deploy/container/aida-probe "$context/"

    for service in "${services[@]}"; do
        build "$service" "$context" --build-arg BINARIES=prebuilt --build-arg "BASE_IMAGE=$base"
    done

    if podman image exists "$redis_image"; then
        echo "build-images: $redis_image exists, keeping it" >&2
    else
        echo "build-images: $redis_image from Debian's redis-server on $base" >&2
        podman build --format docker --build-arg "BASE_IMAGE=$base" \
            -f deploy/podman/Containerfile.redis -t "$redis_image" deploy/podman
    fi
    ;;
*)
    echo "usage: scripts/build-images.sh registry|offline" >&2
    exit 2
    ;;
esac
podman images --filter reference='localhost/aida-*' --format '{{.Repository}}:{{.Tag}}  {{.Size}}' >&2
