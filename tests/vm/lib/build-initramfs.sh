#!/usr/bin/env bash
# Build the base initramfs (uncompressed newc cpio) of the rdmix test VM.
# Usage: build-initramfs.sh KERNEL_TREE ABI OUT_CPIO
#   KERNEL_TREE: dpkg-deb -x'ed (possibly pruned) kernel package, depmod'ed.
# Everything comes from the host (Debian 12): static busybox, alsa-utils,
# strace, chrt, sox, alsa-lib and its config, glibc. vm.sh hashes this file (and
# lib/init) into the cache key, so editing it triggers a rebuild.
set -euo pipefail

KDIR=$1 ABI=$2 OUT=$3
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Modules to load, in this order, with their dependency closure; and their parameters.
MODULES=(snd-aloop snd-dummy snd-hrtimer 9p 9pnet_virtio virtio_pci)
declare -A MODPARAMS=([snd-aloop]="pcm_substreams=8" [snd-dummy]="")

# Required and optional executables (ldd closure is copied too).
BINS=(aplay arecord speaker-test amixer alsactl strace chrt script)
OPT_BINS=(alsaloop sox soxi)
# Libraries that must be there even if nothing above links them (host-built
# Rust binaries and alsa-lib plugins need libgcc_s; glibc's small companions).
EXTRA_LIBS=(libgcc_s.so.1 libasound.so.2 libatopology.so.2 libm.so.6 libpthread.so.0
            libdl.so.2 librt.so.1 libresolv.so.2 libutil.so.1)
MULTIARCH=x86_64-linux-gnu

die() { printf '[vm] build-initramfs: %s\n' "$*" >&2; exit 1; }

SRC=()   # host files copied (vm.sh fingerprints them to decide on rebuilds)
ROOT=$(mktemp -d "${OUT}.root.XXXXXX")
chmod 0755 "$ROOT"
trap 'rm -rf "$ROOT"' EXIT

# Merged-/usr layout, as on Debian 12.
mkdir -p "$ROOT"/usr/{bin,sbin,lib/$MULTIARCH,lib64,share} \
         "$ROOT"/{dev,proc,sys,tmp,run,mnt,etc/rdmix-vm,var/tmp,home/alice,home/bob,rdmix}
install -d -m 0700 "$ROOT/root"
ln -s usr/bin "$ROOT/bin"
ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"

# Copy host path $1 to the same path under $ROOT, recreating any symlink chain.
copy_path() {
    local p=$1 t
    while :; do
        [[ -e $ROOT$p || -L $ROOT$p ]] && return 0
        mkdir -p "$ROOT$(dirname "$p")"
        if [[ -L $p ]]; then
            t=$(readlink "$p")
            ln -s "$t" "$ROOT$p"
            [[ $t == /* ]] || t=$(dirname "$p")/$t
            p=$t
        elif [[ -f $p ]]; then
            cp -p "$p" "$ROOT$p"
            SRC+=("$p")
            return 0
        else
            die "cannot copy $p"
        fi
    done
}

# Copy a binary or shared object and its ldd closure.
copy_with_libs() {
    local f=$1 lib out
    copy_path "$f"
    out=$(LC_ALL=C ldd "$f" 2>&1) || return 0   # static: "not a dynamic executable"
    while read -r lib; do
        [[ -n $lib ]] && copy_path "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out")
    if grep -q 'not found' <<<"$out"; then
        die "$f: unresolved libraries: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
    fi
}

find_lib() {
    local d
    for d in /usr/lib/$MULTIARCH /lib/$MULTIARCH; do
        [[ -e $d/$1 ]] && { echo "$d/$1"; return 0; }
    done
    return 1
}

# --- static busybox and its applets
BB=
for c in /bin/busybox /usr/bin/busybox; do
    [[ -x $c ]] || continue
    out=$(LC_ALL=C ldd "$c" 2>&1 || true)
    if [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]]; then BB=$c; break; fi
done
[[ -n $BB ]] || die "no static busybox found (install busybox-static)"
cp -p "$BB" "$ROOT/usr/bin/busybox"
SRC+=("$BB")
while read -r applet; do
    [[ -n $applet && $applet != usr/bin/busybox ]] || continue
    [[ -e $ROOT/$applet || -L $ROOT/$applet ]] && continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -s /usr/bin/busybox "$ROOT/$applet"
done < <("$ROOT/usr/bin/busybox" --list-full)

# --- ALSA / debugging tools. They go to /usr/bin (real files win over busybox applets).
place_bin() {
    local b=$1 p
    p=$(command -v "$b") || return 1
    p=$(readlink -f "$p")
    copy_with_libs "$p"
    # Make sure it is reachable as /usr/bin/<name> even if the host keeps it elsewhere.
    if [[ $p != /usr/bin/$b && $p != /bin/$b ]]; then
        ln -sf "$p" "$ROOT/usr/bin/$b"
    fi
    return 0
}
for b in "${BINS[@]}"; do
    # Replace a busybox applet symlink of the same name, if any.
    [[ -L $ROOT/usr/bin/$b ]] && rm -f "$ROOT/usr/bin/$b"
    place_bin "$b" || die "missing host binary: $b"
done
for b in "${OPT_BINS[@]}"; do
    [[ -L $ROOT/usr/bin/$b ]] && rm -f "$ROOT/usr/bin/$b"
    place_bin "$b" || printf '[vm] build-initramfs: optional %s not on host, skipped\n' "$b" >&2
done
for l in "${EXTRA_LIBS[@]}"; do
    if p=$(find_lib "$l"); then copy_with_libs "$p"; else
        [[ $l == libatopology.so.2 ]] || die "missing host library: $l"
    fi
done

# dlopen'ed code is invisible to ldd: alsa-lib's plugin directory (whole) and
# sox's ALSA driver (only that one; the other sox format plugins are big).
if [[ -d /usr/lib/$MULTIARCH/alsa-lib ]]; then
    while IFS= read -r -d '' f; do copy_with_libs "$f"; done \
        < <(find /usr/lib/$MULTIARCH/alsa-lib \( -type f -o -type l \) -print0)
fi
if [[ -e /usr/lib/$MULTIARCH/sox/libsox_fmt_alsa.so ]]; then
    copy_with_libs /usr/lib/$MULTIARCH/sox/libsox_fmt_alsa.so
fi

# --- opt-in application set (RDMIX_VM_APPS=1; tests/apps.rs, the application matrix): alsabat, sox play,
# mpg123 (+ its dlopen'ed ALSA output module), ffmpeg, python3 with only the stdlib modules the
# matrix's script imports, and pyalsaaudio. ffmpeg alone pulls 213 libraries (~250 MB), so this is
# a separate image (vm.sh caches it as base-<abi>.apps.cpio); the default image is unchanged.
if [[ ${RDMIX_VM_APPS:-} == 1 ]]; then
    for b in alsabat mpg123 ffmpeg python3 play; do
        [[ -L $ROOT/usr/bin/$b ]] && rm -f "$ROOT/usr/bin/$b"
        place_bin "$b" || die "missing host binary for RDMIX_VM_APPS: $b"
    done
    for f in /usr/lib/$MULTIARCH/mpg123/output_alsa.so /usr/lib/$MULTIARCH/mpg123/output_dummy.so; do
        if [[ -e $f ]]; then copy_with_libs "$f"; fi
    done
    PY=$(readlink -f "$(command -v python3)")
    # Every file the interpreter loads for these imports (site included), and their .pyc.
    pyfiles=$(env -i "$PY" -c '
import sys, struct, array, math, alsaaudio, importlib.util as u, os
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if not f:
        continue
    print(f)
    if f.endswith(".py"):
        c = u.cache_from_source(f)
        if os.path.exists(c):
            print(c)
') || die "python3 module closure failed (is python3-alsaaudio installed?)"
    while IFS= read -r f; do
        [[ -n $f ]] || continue
        if [[ $f == *.so ]]; then copy_with_libs "$f"; else copy_path "$f"; fi
    done <<<"$pyfiles"
    mkdir -p "$ROOT/usr/lib/python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')/lib-dynload"
fi

# --- ALSA configuration (without the large UCM trees)
if [[ -d /usr/share/alsa ]]; then
    cp -a /usr/share/alsa "$ROOT/usr/share/alsa"
    rm -rf "$ROOT/usr/share/alsa/ucm" "$ROOT/usr/share/alsa/ucm2"
fi
[[ -d /etc/alsa ]] && cp -a /etc/alsa "$ROOT/etc/alsa"

# --- users
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:alice:/home/alice:/bin/sh
bob:x:1001:1001:bob:/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
tty:x:5:
audio:x:29:alice,bob
alice:x:1000:
bob:x:1001:
nogroup:x:65534:
EOF
cat >"$ROOT/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
alice:*:19000:0:99999:7:::
bob:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
chmod 0640 "$ROOT/etc/shadow"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost rdmix-vm\n::1 localhost\n' >"$ROOT/etc/hosts"
echo rdmix-vm >"$ROOT/etc/hostname"
: >"$ROOT/etc/fstab"

# --- kernel modules: closure via the host's kmod, once per module (see vm-testing.md)
MODDIR=/lib/modules/$ABI
[[ -f $KDIR$MODDIR/modules.dep ]] || die "$KDIR$MODDIR/modules.dep missing (depmod not run?)"
declare -A seen=()
order=()
for m in "${MODULES[@]}"; do
    out=$(modprobe -C /dev/null -d "$KDIR" -S "$ABI" --show-depends "$m") \
        || die "modprobe --show-depends $m failed"
    while read -r verb path _; do
        [[ $verb == insmod ]] || continue
        [[ -n ${seen[$path]-} ]] && continue
        seen[$path]=1
        order+=("$path")
    done <<<"$out"
done
: >"$ROOT/etc/rdmix-vm/modules"
for path in "${order[@]}"; do
    rel=${path#"$KDIR"}
    [[ $rel == "$MODDIR"/* ]] || die "unexpected module path $path"
    dst=$ROOT${rel%.xz}; dst=${dst%.zst}
    mkdir -p "$(dirname "$dst")"
    case $path in
        *.ko.xz) xz -dc "$path" >"$dst" ;;
        *.ko.zst) zstd -qdc "$path" >"$dst" ;;
        *) cp "$path" "$dst" ;;
    esac
    name=$(basename "$dst" .ko)
    printf '%s %s\n' "${dst#"$ROOT"}" "${MODPARAMS[$name]-}" >>"$ROOT/etc/rdmix-vm/modules"
done
echo "$ABI" >"$ROOT/etc/rdmix-vm/kernel"

# --- /init
install -m 0755 "$HERE/init" "$ROOT/init"

# --- pack
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$OUT.tmp"
printf '%s\n' "${SRC[@]}" | sort -u >"$OUT.files"
mv -f "$OUT.tmp" "$OUT"
printf '[vm] build-initramfs: %s: %s bytes, %s entries, %s modules\n' \
    "$(basename "$OUT")" "$(stat -c %s "$OUT")" "$(cd "$ROOT" && find . | wc -l)" "${#order[@]}" >&2
