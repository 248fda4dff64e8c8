#!/usr/bin/env bash
# Installs the Debian packages Dockyard needs when they are missing (idempotent, quiet when all present).
set -euo pipefail

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)          # the sandbox server's default backend
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)         # its docker backend
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)   # builds the sandbox image (no registry here)

if ((${#need[@]})); then
    echo "setup-system: installing ${need[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
