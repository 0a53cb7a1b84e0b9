#!/usr/bin/env bash
# Build the ovserve image from Containerfile with the engine that works here (scripts/container/common.sh).
#   IMAGE       tag (default localhost/ovserve:latest)
#   BASE_IMAGE  base of both stages (default: the Containerfile's, docker.io/library/python:3.11-slim)
#   CA_BUNDLE   CA certificates pip trusts inside the build (default: this host's bundle, when there is one),
#               for networks that intercept TLS; handed over as a build secret, not stored in the image
#   ENGINE      podman or docker, to skip detection
# Run from the repository root (the build context).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/container/common.sh

IMAGE=${IMAGE:-localhost/ovserve:latest}
BASE_IMAGE=${BASE_IMAGE:-}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
engine=$(container_engine)

args=(build -f Containerfile -t "$IMAGE")
[[ -n $BASE_IMAGE ]] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n $CA_BUNDLE && -s $CA_BUNDLE ]] && args+=(--secret "id=cacert,src=$CA_BUNDLE")
# Host networking: pip in the build stage reaches PyPI without a CNI bridge (podman here has no CNI plugins).
args+=(--network host)
if [[ $engine == docker ]]; then
    export DOCKER_BUILDKIT=1  # RUN --mount=type=secret needs BuildKit
fi

echo "== $engine ${args[*]} ."
start=$SECONDS
if ! "$engine" "${args[@]}" .; then
    echo "build-image: error: \`$engine build\` failed. Without access to the base image's registry, build on the" \
        "local Debian base instead: \`make test-container\` makes it, then" \
        "\`make image BASE_IMAGE=localhost/ovserve-base:bookworm\`." >&2
    exit 1
fi
size=$("$engine" image inspect --format '{{.Size}}' "$IMAGE")
echo "== built $IMAGE with $engine in $((SECONDS - start))s: $((size / 1000000)) MB"
