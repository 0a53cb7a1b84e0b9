#!/usr/bin/env bash
# Make sure podman, runc and debootstrap are here and podman works (for `make test-container`).
# Installs the missing ones from Debian with apt-get (needs root), without recommends: podman runs as root with
# its native overlay driver, host networking and runc, so uidmap, fuse-overlayfs, slirp4netns, buildah and the CNI
# plugins are not needed.
set -euo pipefail

# catatonit: the pause process of the pods `podman kube play` makes.
bash "$(dirname "$0")/../debian-packages.sh" podman:podman runc:runc debootstrap:debootstrap catatonit:catatonit
if ! out=$(podman info 2>&1); then
    echo "ensure-podman: error: \`podman info\` fails:" >&2
    echo "$out" >&2
    exit 1
fi
echo "== $(podman --version), $(runc --version | head -n 1), debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null)"
