#!/usr/bin/env bash
# Print the container engine that works here (podman, else docker), or explain why there is none.
set -euo pipefail
source "$(dirname "$0")/common.sh"
container_engine
