#!/usr/bin/env bash
# The pod's secrets, kept as Podman secrets (deploy/podman/pod.yaml reads
# them with `secretKeyRef`). Values are made from /dev/urandom, handed to
# `podman secret create` on stdin and kept in shell variables only: never
# printed, never on a command line, never in a file of this repository.
#
#   deploy/podman/secrets.sh create          # the missing ones (make secrets; make run calls it)
#   deploy/podman/secrets.sh set NAME        # NAME's value from stdin, replacing it
#                                            # (make webhook-secrets: aida-webhook-secrets,
#                                            #  make git-credentials: aida-git-credentials)
#   deploy/podman/secrets.sh remove          # all of them (make clean-secrets)
#   deploy/podman/secrets.sh list            # the names the pod uses, one a line
#
#   aida-jwt-secret          gateway: AIDA_JWT_SECRET, signs access tokens
#   aida-internal-token      every service: AIDA_INTERNAL_TOKEN (gRPC between them)
#   aida-internal-token-raw  the same value as a plain file, for workers added
#                            with `podman run --secret` (make scale-worker)
#   aida-redis-password      Redis's requirepass and the orchestrator's REDIS_PASSWORD
#   aida-webhook-secrets     optional: AIDA_WEBHOOK_SECRETS (comma-separated);
#                            never generated, set it with make webhook-secrets
#   aida-git-credentials     optional: the orchestrator's AIDA_GIT_CREDENTIALS
#                            (https://USER:TOKEN@HOST[/PATH], comma-separated);
#                            never generated, set it with make git-credentials
#
# Format: Podman 4.3 resolves `secretKeyRef` only for a secret holding a
# flat JSON object whose values are base64, so each secret is
# {"value": "<base64 of the value>"} and pod.yaml names `key: value`. The
# -raw secret holds the bare value (a file mount needs it so).
#
# Environment: CONTAINERS_CONF (passed on to podman).
set -euo pipefail

GENERATED=(aida-jwt-secret aida-internal-token aida-redis-password)
TOKEN=aida-internal-token
TOKEN_RAW=aida-internal-token-raw
OPTIONAL=(aida-webhook-secrets aida-git-credentials)
ALL=("${GENERATED[@]}" "$TOKEN_RAW" "${OPTIONAL[@]}")

exists() { podman secret inspect "$1" >/dev/null 2>&1; }

# 32 random bytes, hex: 64 characters, safe in any config file or URL.
random_value() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# create_json NAME VALUE: the secretKeyRef format. printf is the shell's
# own, so the value is on no command line.
create_json() {
    local b64
    b64="$(printf '%s' "$2" | base64 -w0)"
    printf '{"value":"%s"}' "$b64" | podman secret create "$1" - >/dev/null
}

create_raw() { printf '%s' "$2" | podman secret create "$1" - >/dev/null; }

cmd_create() {
    local name value made=()
    for name in aida-jwt-secret aida-redis-password; do
        if ! exists "$name"; then
            value="$(random_value)"
            create_json "$name" "$value"
            made+=("$name")
        fi
    done
    # The internal token twice (the pod's format and the raw file), from
    # one value: both or neither.
    if exists "$TOKEN" && exists "$TOKEN_RAW"; then
        :
    elif ! exists "$TOKEN" && ! exists "$TOKEN_RAW"; then
        value="$(random_value)"
        create_json "$TOKEN" "$value"
        create_raw "$TOKEN_RAW" "$value"
        made+=("$TOKEN" "$TOKEN_RAW")
    else
        echo "secrets: only one of $TOKEN and $TOKEN_RAW exists; they must hold the same value." >&2
        echo "secrets: stop the pod (make stop), remove both (make clean-secrets) and start again (make run)." >&2
        exit 1
    fi
    value=""
    if [ ${#made[@]} -gt 0 ]; then
        echo "secrets: created ${made[*]} (random values, not shown; podman secret ls)" >&2
    fi
}

cmd_set() {
    local name="${1:-}" value
    case " ${ALL[*]} " in
    *" $name "*) ;;
    *)
        echo "usage: secrets.sh set NAME  (one of: ${ALL[*]}), the value on stdin" >&2
        exit 2
        ;;
    esac
    if [ "$name" = "$TOKEN" ] || [ "$name" = "$TOKEN_RAW" ]; then
        echo "secrets: the internal token is two secrets of one value: make clean-secrets and make run make a new one" >&2
        exit 2
    fi
    [ -t 0 ] && echo "secrets: reading the value of $name from stdin (one line)" >&2
    IFS= read -r value || true
    if [ -z "$value" ]; then
        echo "secrets: no value on stdin; $name unchanged" >&2
        exit 1
    fi
    if exists "$name"; then podman secret rm "$name" >/dev/null; fi
    create_json "$name" "$value"
    value=""
    echo "secrets: $name set (restart the pod to use it: make stop run)" >&2
}

cmd_remove() {
    local name removed=()
    for name in "${ALL[@]}"; do
        if exists "$name"; then
            podman secret rm "$name" >/dev/null
            removed+=("$name")
        fi
    done
    if [ ${#removed[@]} -gt 0 ]; then
        echo "secrets: removed ${removed[*]}" >&2
    else
        echo "secrets: none to remove" >&2
    fi
}

case "${1:-}" in
create) cmd_create ;;
set) cmd_set "${2:-}" ;;
remove) cmd_remove ;;
list) printf '%s\n' "${ALL[@]}" ;;
*)
    echo "usage: deploy/podman/secrets.sh create | set NAME | remove | list" >&2
    exit 2
    ;;
esac
