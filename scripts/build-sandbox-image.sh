#!/usr/bin/env bash
# Builds the sandbox server's Docker image, dockyard-sandbox:<tag>, when it is missing (idempotent).
#
# No registry is reachable, so the image is a Debian bookworm minbase rootfs made by debootstrap from the
# Debian mirror and imported with `docker import`. The tag is a hash of this script (the suite, the packages
# and the steps all live here), so changing the image means changing this file, and the old tag stays
# until removed (`docker rmi`). The rootfs tarball is cached under ${XDG_CACHE_HOME:-~/.cache}/dockyard, so
# rebuilding the image after `docker rmi`, on a fresh dockerd or after an edit that leaves the rootfs alone
# takes a second or two instead of the 40-90 s of debootstrap.
#
#   scripts/build-sandbox-image.sh            build if missing; quiet when the image is there
#   scripts/build-sandbox-image.sh --name     print the image name and exit
#   scripts/build-sandbox-image.sh --force    rebuild the rootfs and the image
#
# servers/sandbox/_docker.py computes the same name (sandbox_image_name()); keep the two in step.
set -euo pipefail

SUITE=bookworm
MIRROR=${DOCKYARD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3 (with its whole standard library: python3-minimal lacks json, asyncio, shutil, http...) runs the
# sandbox agent, servers/sandbox/_agent.py, at /usr/bin/python3; ca-certificates lets HTTPS through the
# egress proxy verify servers. minbase has coreutils, bash, sed, grep, findutils, tar and gzip already.
# Nothing else: every package is attack surface and start-up weight.
PACKAGES=python3,ca-certificates

# The rootfs tarball is cached by what debootstrap is given and by ROOTFS_VERSION: bump it when the rootfs
# steps below change. Any other edit of this file changes the image tag too, but only re-imports (~1 s).
ROOTFS_VERSION=1

self=$(readlink -f "${BASH_SOURCE[0]}")
tag=$(sha256sum "$self" | cut -c1-12)
image=dockyard-sandbox:$tag
rootfs_key=$(echo "$SUITE $PACKAGES $ROOTFS_VERSION $(uname -m)" | sha256sum | cut -c1-12)

case "${1:-}" in
    --name) echo "$image"; exit 0 ;;
    --force) force=1 ;;
    "") force=0 ;;
    *) echo "usage: $0 [--name | --force]" >&2; exit 2 ;;
esac

die() { echo "build-sandbox-image: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed (scripts/setup-system.sh installs docker.io)"
docker info >/dev/null 2>&1 || die "dockerd does not answer (scripts/start-dockerd.sh starts it): $(docker info 2>&1 | tail -1)"
if ((!force)) && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

cache=${DOCKYARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dockyard}
rootfs=$cache/sandbox-rootfs-$rootfs_key.tar
mkdir -p "$cache"
started=$SECONDS
if ((force)) || [[ ! -s $rootfs ]]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (scripts/setup-system.sh installs it)"
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run sudo $self"
    work=$(mktemp -d "$cache/build.XXXXXX")
    # A failed debootstrap can leave /proc, /sys or /dev mounted in the target: unmount, never cross them.
    cleanup() {
        for m in proc sys dev/pts dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$work"
    }
    trap cleanup EXIT
    echo "build-sandbox-image: building $image (debootstrap $SUITE from $MIRROR, about a minute)" >&2
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1; then
        tail -n 25 "$work/log" >&2
        die "debootstrap failed (whole log above, last lines); is $MIRROR reachable?"
    fi
    # Nothing the sandbox needs, and package caches would only grow the image.
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* \
        "$work/root/usr/share/doc/"* "$work/root/usr/share/man/"* "$work/root/usr/share/locale/"*
    # The workspace mount point, owned by the sandbox user (nobody, uid 65534, from base-passwd).
    mkdir -p "$work/root/workspace"
    chown 65534:65534 "$work/root/workspace"
    tar -C "$work/root" --numeric-owner --one-file-system -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$rootfs"  # atomic: a concurrent build never sees half a tarball
    cleanup
    trap - EXIT
fi
if ! out=$(docker import \
    --change 'USER 65534:65534' \
    --change 'WORKDIR /workspace' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME=/workspace' \
    --change 'CMD ["/bin/sh"]' \
    --message "dockyard sandbox image from scripts/build-sandbox-image.sh ($tag)" \
    "$rootfs" "$image" 2>&1); then
    die "docker import of $rootfs failed: $out"
fi
docker tag "$image" dockyard-sandbox:latest
echo "build-sandbox-image: built $image in $((SECONDS - started)) s" >&2
