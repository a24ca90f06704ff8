#!/usr/bin/env bash
# Install the Debian host packages rdmix needs to build and to run its VM tests (idempotent).
# Silent and fast (one dpkg-query) when everything is already installed.
set -euo pipefail

PKGS=(qemu-system-x86 busybox-static alsa-utils sox cpio kmod xz-utils zstd strace libasound2-dev
      pkg-config gcc libc6-dev binutils cbindgen)
# The application matrix's programs (tests/apps.rs), only for the image that has them.
if [[ ${RDMIX_VM_APPS:-} == 1 ]]; then PKGS+=(mpg123 ffmpeg python3 python3-alsaaudio); fi

declare -A ok=()
while IFS=' ' read -r pkg status; do
    if [[ $status == installed ]]; then ok[$pkg]=1; fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${PKGS[@]}"; do
    [[ -n ${ok[$p]-} ]] || missing+=("$p")
done
(( ${#missing[@]} == 0 )) && exit 0

log() { printf '[vm] setup-host: %s\n' "$*" >&2; }

SUDO=()
if (( EUID != 0 )); then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "missing packages: ${missing[*]}; need root (or passwordless sudo) to install them"
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -q -y -o DPkg::Lock::Timeout=600)

update() { log "apt-get update"; "${APT[@]}" update >&2; }
install() { "${APT[@]}" install --no-install-recommends "${missing[@]}" >&2; }

log "installing: ${missing[*]}"
# No package lists at all: update first.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    update
fi
if ! install; then
    log "install failed; apt-get update and retry once"
    update
    install
fi
log "done"
