#!/usr/bin/env bash
# Run a shell script inside a throw-away qemu VM with real ALSA kernel drivers
# (snd-aloop, snd-dummy) on Debian 12's own kernel. See tests/vm/README.md and
# /work/shared/reference/vm-testing.md.
#
# Usage: tests/vm/vm.sh [--timeout SECS] [--share DIR]... [--env K=V]... GUEST_SCRIPT [ARGS...]
#
# Exit status: the guest script's status; 124 timeout; 125 the guest never
# reported a status (panic, crash, boot failure); 126 host-side setup failure.
set -euo pipefail
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILDER=$HERE/lib/build-initramfs.sh
GUEST_INIT=$HERE/lib/init

now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "${t#0}"; }
T0=$(now_us)
fmt_s() { local d=$1; printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }
since() { fmt_s $(( $(now_us) - $1 )); }
log() { printf '[vm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 126; }
on_err() { local rc=$? line=$1 cmd=$2; log "error: host-side setup failed (line $line, status $rc): $cmd"; exit 126; }
set -E
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

usage() {
    sed -n 's/^# \{0,1\}//; 6,9p' "${BASH_SOURCE[0]}" >&2
    cat >&2 <<'EOF'

Environment:
  RDMIX_VM_CACHE        cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/rdmix-vm)
  RDMIX_VM_KERNEL_ABI   pin the kernel ABI, e.g. 6.1.0-56-amd64 (default: linux-image-amd64's)
  RDMIX_VM_ACCEL        auto (default) | tcg | kvm
  RDMIX_VM_MEM          guest RAM in MiB (default 1024)
  RDMIX_VM_SMP          guest vCPUs (default 2)
  RDMIX_VM_APPEND       extra kernel command-line arguments
  RDMIX_VM_APPS         1: boot the larger image with alsabat, mpg123, ffmpeg, python3
  RDMIX_VM_RUN_LOCK     a file: hold an exclusive flock on it while the VM runs, so that VMs
                        started by several developers or jobs on one machine run one at a time
EOF
}

# ---------------------------------------------------------------- arguments
TIMEOUT=600
SHARES=()
ENVS=()
while (( $# )); do
    case $1 in
        --timeout) (( $# >= 2 )) || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --share) (( $# >= 2 )) || die "--share needs a directory"; SHARES+=("$2"); shift 2 ;;
        --share=*) SHARES+=("${1#*=}"); shift ;;
        --env) (( $# >= 2 )) || die "--env needs K=V"; ENVS+=("$2"); shift 2 ;;
        --env=*) ENVS+=("${1#*=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage; die "unknown option: $1" ;;
        *) break ;;
    esac
done
(( $# >= 1 )) || { usage; die "missing GUEST_SCRIPT"; }
SCRIPT=$1; shift
ARGS=("$@")
[[ -f $SCRIPT && -r $SCRIPT ]] || die "guest script not found: $SCRIPT"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "bad --timeout: $TIMEOUT"
for kv in "${ENVS[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "bad --env (want K=V): $kv"
done
SHARE_PATHS=()
for d in "${SHARES[@]}"; do
    [[ -d $d ]] || die "--share: not a directory: $d"
    p=$(realpath -e -- "$d")
    [[ $p != *$'\n'* ]] || die "--share: newline in path: $d"
    case $p in
        /|/usr|/usr/bin|/usr/sbin|/usr/lib|/bin|/sbin|/lib|/lib64|/etc|/rdmix|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*)
            die "--share: cannot share $p (it would shadow guest system directories)" ;;
    esac
    SHARE_PATHS+=("$p")
done

# ---------------------------------------------------------------- host packages
t=$(now_us)
"$HERE/setup-host.sh" || die "setup-host.sh failed"
log "host packages ok ($(since "$t")s)"

# ---------------------------------------------------------------- cache + lock
CACHE=${RDMIX_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rdmix-vm}
mkdir -p "$CACHE/kernel" "$CACHE/initramfs" "$CACHE/run"
RUN=$(mktemp -d "$CACHE/run/run.XXXXXX")
QPID=
cleanup() {
    if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
        kill -TERM "$QPID" 2>/dev/null || true
        wait "$QPID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Stale run dirs of killed runs.
find "$CACHE/run" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true

exec 9>"$CACHE/lock"
if ! flock -n 9; then
    t=$(now_us); log "waiting for cache lock $CACHE/lock"; flock 9; log "got cache lock ($(since "$t")s)"
fi

# ---------------------------------------------------------------- kernel
APT_LOG=$RUN/apt.log
apt_update() {
    local sudo=()
    if (( EUID != 0 )); then
        sudo -n true 2>/dev/null || return 1
        sudo=(sudo -n)
    fi
    log "apt-get update"
    "${sudo[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >>"$APT_LOG" 2>&1
}
# ABI that linux-image-amd64 currently depends on (empty if unknown).
apt_abi() {
    local out re='Depends: linux-image-([0-9][^[:space:]]*)'
    out=$(apt-cache depends linux-image-amd64 2>/dev/null) || return 0
    [[ $out =~ $re ]] && echo "${BASH_REMATCH[1]}"
    return 0
}
# apt-cache takes ~1 s when apt's binary cache is disabled (Docker-style images),
# so remember the answer until the package lists change.
apt_abi_cached() {   # [fresh]: ignore the remembered answer
    local sig s a
    sig=$( { stat -c '%n %Y %s' /var/lib/apt/lists/*_Packages* 2>/dev/null || true; } | sha256sum | cut -c1-16)
    if [[ -z ${1-} && -f $CACHE/abi.resolved ]] && read -r s a <"$CACHE/abi.resolved" && [[ $s == "$sig" && -n $a ]]; then
        echo "$a"; return 0
    fi
    a=$(apt_abi)
    if [[ -n $a ]]; then printf '%s %s\n' "$sig" "$a" >"$CACHE/abi.resolved"; echo "$a"; fi
    return 0
}
deb_of() {
    local f=()
    mapfile -t f < <(compgen -G "$CACHE/kernel/$1/linux-image-$1_*_amd64.deb" || true)
    (( ${#f[@]} )) && printf '%s\n' "${f[@]}" | sort -V | tail -n 1
    return 0
}
newest_cached_abi() {
    local d best=
    for d in "$CACHE"/kernel/*/; do
        d=${d%/}; d=${d##*/}
        [[ -n $(deb_of "$d") ]] && best+="$d"$'\n'
    done
    [[ -n $best ]] && printf '%s' "$best" | sort -V | tail -n 1
    return 0
}
download_deb() {
    local abi=$1 dir=$CACHE/kernel/$1 tmp
    mkdir -p "$dir"
    tmp=$(mktemp -d "$dir/dl.XXXXXX")
    log "downloading linux-image-$abi"
    if (cd "$tmp" && apt-get -q download "linux-image-$abi") >>"$APT_LOG" 2>&1 \
            && compgen -G "$tmp/*.deb" >/dev/null; then
        mv "$tmp"/*.deb "$dir/"
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    rmdir "$dir" 2>/dev/null || true
    return 1
}

t=$(now_us)
PINNED=${RDMIX_VM_KERNEL_ABI:-}
if [[ -n $PINNED ]]; then
    ABI=$PINNED
else
    ABI=$(apt_abi_cached)
    if [[ -z $ABI ]]; then apt_update || true; ABI=$(apt_abi_cached fresh); fi
fi
if [[ -n $ABI && -z $(deb_of "$ABI") ]]; then
    if ! download_deb "$ABI"; then
        apt_update || true
        if [[ -z $PINNED ]]; then n=$(apt_abi_cached fresh); [[ -n $n ]] && ABI=$n; fi
        [[ -n $(deb_of "$ABI") ]] || download_deb "$ABI" || true
    fi
fi
if [[ -z $ABI || -z $(deb_of "$ABI") ]]; then
    fb=
    [[ -z $PINNED ]] && fb=$(newest_cached_abi)
    if [[ -n $fb ]]; then
        log "warning: kernel ${ABI:-(unresolved)} not downloadable; using cached $fb"
        ABI=$fb
    else
        [[ -s $APT_LOG ]] && sed 's/^/[vm] apt: /' "$APT_LOG" >&2
        die "cannot get kernel package linux-image-${ABI:-<abi>} (pin one with RDMIX_VM_KERNEL_ABI)"
    fi
fi
KD=$CACHE/kernel/$ABI
DEB=$(deb_of "$ABI")

# Unpacked tree: only what module resolution and booting need (~85 MB instead of 436).
KEEP=("./boot/*" "./lib/modules/$ABI/modules.*"
      "./lib/modules/$ABI/kernel/sound" "./lib/modules/$ABI/kernel/fs/9p"
      "./lib/modules/$ABI/kernel/fs/netfs" "./lib/modules/$ABI/kernel/fs/fscache"
      "./lib/modules/$ABI/kernel/net/9p" "./lib/modules/$ABI/kernel/drivers/virtio"
      "./lib/modules/$ABI/kernel/lib" "./lib/modules/$ABI/kernel/crypto")
TREE_KEY="$(basename "$DEB") ${KEEP[*]}"
if [[ ! -f $KD/tree.ok || $(<"$KD/tree.ok") != "$TREE_KEY" ]]; then
    t2=$(now_us)
    rm -rf "$KD/tree" "$KD/tree.new" "$KD/tree.ok" "$KD/vmlinux" "$KD/vmlinux.ok"
    mkdir "$KD/tree.new"
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$KD/tree.new" --wildcards "${KEEP[@]}"
    depmod -b "$KD/tree.new" "$ABI"
    mv "$KD/tree.new" "$KD/tree"
    printf '%s' "$TREE_KEY" >"$KD/tree.ok"
    log "unpacked kernel tree + depmod ($(since "$t2")s)"
fi

# ELF vmlinux for the PVH entry point (halves the TCG boot time); else the bzImage.
extract_vmlinux() {
    local bz=$1 out=$2 off magic
    off=$(grep -obUaP -m1 '\xfd7zXZ(?=\x00)' "$bz") || return 1
    off=${off%%$'\n'*}; off=${off%%:*}
    [[ $off =~ ^[0-9]+$ ]] || return 1
    { tail -c +$((off + 1)) "$bz" || true; } | xz -dc --single-stream >"$out" 2>/dev/null || return 1
    magic=$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n') || return 1
    [[ $magic == 7f454c46 ]]
}
BZ=$KD/tree/boot/vmlinuz-$ABI
[[ -f $BZ ]] || die "no $BZ in the kernel package"
if [[ ! -f $KD/vmlinux.ok ]]; then
    t2=$(now_us)
    if extract_vmlinux "$BZ" "$KD/vmlinux.new"; then
        mv "$KD/vmlinux.new" "$KD/vmlinux"; echo elf >"$KD/vmlinux.ok"
        log "extracted vmlinux ($(since "$t2")s)"
    else
        rm -f "$KD/vmlinux.new"; echo bzimage >"$KD/vmlinux.ok"
        log "warning: could not extract an ELF vmlinux; booting the bzImage (slower)"
    fi
fi
if [[ $(<"$KD/vmlinux.ok") == elf && -f $KD/vmlinux ]]; then
    KIMG=$KD/vmlinux KIMG_KIND="vmlinux/PVH"
else
    KIMG=$BZ KIMG_KIND=bzImage
fi
log "kernel $ABI ready ($(since "$t")s)"

# Other ABIs: drop regenerable parts; keep only the newest other .deb (mirror fallback).
if [[ -z $PINNED ]]; then
    others=()
    for d in "$CACHE"/kernel/*/; do
        d=${d%/}; d=${d##*/}
        [[ $d == "$ABI" ]] && continue
        others+=("$d")
        rm -rf "$CACHE/kernel/$d/tree" "$CACHE/kernel/$d/tree.ok" "$CACHE/kernel/$d/vmlinux" \
               "$CACHE/kernel/$d/vmlinux.ok" "$CACHE/kernel/$d"/dl.* "$CACHE/initramfs/base-$d".*
    done
    if (( ${#others[@]} > 1 )); then
        keep=$(printf '%s\n' "${others[@]}" | sort -V | tail -n 1)
        for d in "${others[@]}"; do [[ $d == "$keep" ]] || rm -rf "${CACHE:?}/kernel/$d"; done
    fi
fi

# ---------------------------------------------------------------- base initramfs
t=$(now_us)
BASE=$CACHE/initramfs/base-$ABI.cpio
KEY_PKGS=(busybox-static alsa-utils libasound2 libasound2-data sox libsox3 libsox-fmt-alsa
          strace libc6 libgcc-s1 kmod)
# RDMIX_VM_APPS=1: the larger image with the application matrix's programs (build-initramfs.sh).
if [[ ${RDMIX_VM_APPS:-} == 1 ]]; then
    BASE=$CACHE/initramfs/base-$ABI.apps.cpio
    KEY_PKGS+=(mpg123 ffmpeg python3.11-minimal libpython3.11-minimal python3-alsaaudio)
fi
key1=$( {
    echo "apps=${RDMIX_VM_APPS:-}"
    sha256sum "$BUILDER" "$GUEST_INIT" | cut -d' ' -f1
    echo "$ABI $(basename "$DEB")"
    dpkg-query -W -f='${Package}:${Architecture}=${Version}\n' "${KEY_PKGS[@]}" 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)
# Fingerprint of every host file the builder copied (catches non-package changes, e.g. alsa-lib plugins).
fingerprint() {
    local files=()
    [[ -f $BASE.files ]] || { echo none; return 0; }
    mapfile -t files <"$BASE.files"
    { stat -L -c '%n %s %Y' -- "${files[@]}" 2>&1 || true
      find /usr/share/alsa /etc/alsa "/usr/lib/x86_64-linux-gnu/alsa-lib" -printf '%p %s %T@\n' 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}
if [[ ! -f $BASE || ! -f $BASE.key || $(<"$BASE.key") != "$key1 $(fingerprint)" ]]; then
    log "building base initramfs"
    rm -f "$BASE" "$BASE.key" "$BASE.files"
    "$BUILDER" "$KD/tree" "$ABI" "$BASE" || die "initramfs build failed"
    printf '%s %s' "$key1" "$(fingerprint)" >"$BASE.key"
    log "base initramfs built ($(since "$t")s, $(( $(stat -c %s "$BASE") / 1024 )) KiB)"
fi

# ---------------------------------------------------------------- per-run overlay
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
NONCE=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
OV=$RUN/overlay
mkdir -p "$OV/rdmix/script"
SNAME=$(basename "$SCRIPT")
install -m 0755 "$SCRIPT" "$OV/rdmix/script/$SNAME"
{
    echo "RDMIX_NONCE=$NONCE"
    printf 'RDMIX_SHARES='
    shares_txt=
    for i in "${!SHARE_PATHS[@]}"; do shares_txt+="s$i ${SHARE_PATHS[$i]}"$'\n'; done
    q "$shares_txt"; echo
} >"$OV/rdmix/config"
CWD=/
(( ${#SHARE_PATHS[@]} )) && CWD=${SHARE_PATHS[0]}
{
    echo "cd $(q "$CWD") || exit 126"
    for kv in "${ENVS[@]}"; do echo "export ${kv%%=*}=$(q "${kv#*=}")"; done
    printf 'exec /bin/sh %s' "$(q "/rdmix/script/$SNAME")"
    for a in "${ARGS[@]}"; do printf ' %s' "$(q "$a")"; done
    echo
} >"$OV/rdmix/run"
(cd "$OV" && find . -mindepth 1 | sort | cpio -o -H newc --owner=0:0 --quiet) >"$RUN/overlay.cpio"
cat "$BASE" "$RUN/overlay.cpio" >"$RUN/initrd"
ln "$KIMG" "$RUN/kernel" 2>/dev/null || cp "$KIMG" "$RUN/kernel"
log "initramfs ready ($(since "$t")s)"
flock -u 9
exec 9>&-

# ---------------------------------------------------------------- qemu
ACCEL_MODE=${RDMIX_VM_ACCEL:-auto}
kvm_usable() {
    [[ -r /dev/kvm && -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo && [[ ! -e /sys/module/kvm_pvm ]]
}
case $ACCEL_MODE in
    auto) if kvm_usable; then ACCEL_MODE=kvm; else ACCEL_MODE=tcg; fi ;;
    kvm|tcg) ;;
    *) die "bad RDMIX_VM_ACCEL: $ACCEL_MODE" ;;
esac
# shellcheck disable=SC2054
if [[ $ACCEL_MODE == kvm ]]; then ACCEL=(-enable-kvm -cpu host); else ACCEL=(-accel tcg,thread=multi -cpu max); fi
MEM=${RDMIX_VM_MEM:-1024} SMP=${RDMIX_VM_SMP:-2}
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init tsc=reliable${RDMIX_VM_APPEND:+ $RDMIX_VM_APPEND}"
QEMU=(qemu-system-x86_64 -nographic -no-reboot -m "$MEM" -smp "$SMP" -nic none "${ACCEL[@]}"
      -kernel "$RUN/kernel" -initrd "$RUN/initrd" -append "$APPEND")
for i in "${!SHARE_PATHS[@]}"; do
    QEMU+=(-virtfs "local,path=${SHARE_PATHS[$i]//,/,,},mount_tag=s$i,security_model=none,multidevs=remap,id=s$i")
done
mkfifo "$RUN/console"

# Optional machine-wide run lock: real-time audio in two TCG guests on the same cores would
# starve each other, so concurrent jobs can queue here instead (fd 8, released at exit).
if [[ -n ${RDMIX_VM_RUN_LOCK:-} ]]; then
    exec 8>>"$RDMIX_VM_RUN_LOCK" || die "cannot open RDMIX_VM_RUN_LOCK $RDMIX_VM_RUN_LOCK"
    if ! flock -n 8; then
        t=$(now_us); log "waiting for run lock $RDMIX_VM_RUN_LOCK"; flock 8; log "got run lock ($(since "$t")s)"
    fi
fi

trap - ERR
set +eE
log "setup done ($(since "$T0")s); booting $ABI ($KIMG_KIND, ${ACCEL_MODE^^}, smp $SMP, ${MEM}M), timeout ${TIMEOUT}s"
TQ=$(now_us)
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$RUN/console" 2>"$RUN/qemu.err" &
QPID=$!

MARK="@@RDMIXVM-$NONCE@@"
state=boot GUEST_ST='' TS=''
early=()
# Strip escape sequences (SeaBIOS clears the screen; markers arrive glued to them) and CRs.
while :; do
    if [[ $state == finished ]]; then
        # The script is done; don't let a guest that fails to power off eat the whole timeout.
        IFS= read -r -t 20 line; r=$?
        if (( r > 128 )); then
            log "warning: guest did not power off within 20s; stopping qemu"
            kill -TERM "$QPID" 2>/dev/null
            break
        fi
    else
        IFS= read -r line; r=$?
    fi
    (( r == 0 )) || [[ -n $line ]] || break
    if [[ $line == *"$MARK"* ]]; then
        pre=${line%%"$MARK"*} rest=${line#*"$MARK"}
        if [[ -n $pre ]]; then
            if [[ $state == run ]]; then printf '%s\n' "$pre"; else early+=("$pre"); fi
        fi
        case $rest in
            INIT*) state=init; log "guest /init started at +$(since "$TQ")s (guest uptime ${rest#INIT }s)" ;;
            READY*) state=run; TS=$(now_us); log "guest ready at +$(since "$TQ")s (guest uptime ${rest#READY }s)" ;;
            EXIT*)
                v=${rest#EXIT }; v=${v%%[!0-9]*}
                [[ -n $v ]] && GUEST_ST=$v
                state=finished
                log "guest script exited with status ${GUEST_ST:-?} after $(since "${TS:-$TQ}")s (+$(since "$TQ")s)" ;;
        esac
        continue
    fi
    case $state in
        boot) early+=("$line") ;;
        init) early+=("$line"); [[ -n $line ]] && log "guest: $line" ;;
        run) printf '%s\n' "$line" ;;
        finished) [[ -z $line || $line == *"reboot: Power down"* ]] || log "guest: $line" ;;
    esac
done < <(sed -u -E 's/\x1b\[[0-?]*[ -\/]*[@-~]//g; s/\x1b[()][0-9A-Za-z]//g; s/\x1b.?//g; s/[\x01-\x08\x0b-\x1f\x7f]//g' <"$RUN/console")

wait "$QPID"; QRC=$?
QPID=
if [[ -s $RUN/qemu.err ]]; then sed 's/^/[vm] qemu: /' "$RUN/qemu.err" >&2; fi
dump_early() {
    log "---- early console (before /init was ready) ----"
    local l
    for l in "${early[@]}"; do printf '[vm] console: %s\n' "$l" >&2; done
    log "---- end of early console ----"
}
if [[ -n $GUEST_ST ]]; then
    RC=$GUEST_ST
    (( QRC == 0 )) || log "warning: qemu exit status $QRC after the script finished"
elif (( QRC == 124 || QRC == 137 )); then
    RC=124
    log "timeout after ${TIMEOUT}s (guest state: $state)"
    [[ $state == run ]] || dump_early
else
    RC=125
    log "guest never reported a status (qemu exit $QRC, guest state: $state)"
    dump_early
fi
log "total $(since "$T0")s, exit status $RC"
exit "$RC"
