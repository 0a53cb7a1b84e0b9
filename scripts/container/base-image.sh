#!/usr/bin/env bash
# A local base image for the Containerfile when no image registry is reachable:
#   Debian bookworm (debootstrap --variant=minbase) with python3 (3.11) and python3-venv, imported into podman as
#   localhost/ovserve-base:bookworm.
# Usage: base-image.sh CACHE_DIR
# The rootfs tarball is kept in CACHE_DIR (with a stamp), so a second run only checks that the image exists and,
# if podman's storage lost it, imports the tarball again without debootstrap.
# Environment: BASE_TAG (default localhost/ovserve-base:bookworm); DEBIAN_MIRROR (default: this machine's
# Debian mirror from /etc/apt/sources.list*, else http://deb.debian.org/debian).
set -euo pipefail
source "$(dirname "$0")/common.sh"

CACHE=${1:?usage: base-image.sh CACHE_DIR}
TAG=${BASE_TAG:-localhost/ovserve-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv
TARBALL=$CACHE/ovserve-base-$SUITE.tar
STAMP=$CACHE/ovserve-base-$SUITE.stamp
WANT="$SUITE $PACKAGES"  # the stamp holds what the tarball was made of

mirror() {  # the first Debian archive (not -security) URI of this machine's apt sources
    local uri
    uri=$(
        {
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed 's/\[[^]]*\]//' | awk '{print $2}'
        } | grep -E '^https?://.*/debian/?$' | head -n 1
    )
    echo "${uri:-http://deb.debian.org/debian}"
}

if [[ -f $STAMP && $(cat "$STAMP") == "$WANT" && -s $TARBALL ]]; then
    if podman image exists "$TAG"; then
        echo "== base image $TAG: cached"
        exit 0
    fi
else
    MIRROR=${DEBIAN_MIRROR:-$(mirror)}
    echo "== debootstrap --variant=minbase $SUITE from $MIRROR, with $PACKAGES (a minute or two, once)"
    start=$SECONDS
    mkdir -p "$CACHE"
    rm -f "$STAMP"
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        echo "base-image: error: debootstrap failed; last lines of $CACHE/debootstrap.log:" >&2
        tail -n 20 "$CACHE/debootstrap.log" >&2
        exit 1
    fi
    # What an image does not need: package caches and lists, documentation, translations, this host's names.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/info/* \
        "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*
    rm -f "$ROOTFS"/etc/hostname "$ROOTFS"/etc/resolv.conf
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    echo "$WANT" >"$STAMP"
    echo "== debootstrap done in $((SECONDS - start))s: $(du -h "$TARBALL" | cut -f1) rootfs"
fi

podman rmi -f "$TAG" >/dev/null 2>&1 || true
podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$TAG" >/dev/null
# shellcheck disable=SC2046
echo "== imported $TAG: $(podman run --rm --runtime runc --network host $(container_ulimits) "$TAG" python3 --version)"
