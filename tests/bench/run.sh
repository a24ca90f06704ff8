#!/usr/bin/env bash
# rdmix against alsa-lib's dmix, side by side, in one boot of the test VM; writes BENCHMARKS.md's
# side-by-side section and tests/bench/client-cpu.svg (issue 5).
#
#   tests/bench/run.sh           the full run (about 15 minutes under TCG)
#   tests/bench/run.sh smoke     one N, two seconds of audio, three pair starts; writes into
#                                target/bench-out/smoke/ only (CI: tests/bench_smoke.rs)
#
# Steps: build (release), the mix kernels on the host (callgrind + timing; full run only), the
# guest script tests/bench/guest.sh in one VM boot, then examples/bench_report turns the raw
# results into the tables. Installs what it needs on first use, like tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${1:-full}
case $MODE in full|smoke) ;; *) echo "usage: $0 [full|smoke]" >&2; exit 2 ;; esac
log() { printf '[bench] %s\n' "$*" >&2; }

tests/vm/setup-host.sh
if [[ $MODE == full ]] && ! command -v valgrind >/dev/null; then
    log "installing valgrind (callgrind counts the mix kernels' instructions)"
    sudo=(); (( EUID == 0 )) || sudo=(sudo -n)
    "${sudo[@]}" apt-get -q -y install --no-install-recommends valgrind >&2 || log "warning: no valgrind; instruction counts skipped"
fi

# RDMIX_BENCH_PROFILE=debug uses the test profile's build (CI's smoke test; opt-level 2).
PROFILE=${RDMIX_BENCH_PROFILE:-release}
flags=(); [[ $PROFILE == release ]] && flags=(--release)
log "building ($PROFILE)"
cargo build "${flags[@]}" --quiet --lib --bins --example bench_client --example bench_report --example mix_bench
TD=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
REL=$TD/$PROFILE
OUT=$ROOT/target/bench-out/$MODE
rm -rf "$OUT"
mkdir -p "$OUT"
"$REL/examples/bench_report" prepare "$OUT" "$MODE"

SHARES=(--share "$ROOT")
case $(realpath "$REL")/ in "$ROOT"/*) ;; *) SHARES+=(--share "$REL") ;; esac

# ---- the machine
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "kernel: $(uname -r)"
    echo "qemu: $(qemu-system-x86_64 --version | head -n1)"
    dirty=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
    echo "code: commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')${dirty:+ plus uncommitted changes to ${dirty% }}"
} >"$OUT/host.txt"

# ---- 6. mix kernels on the host, natively
if [[ $MODE == full ]]; then
    log "mix kernels: timing"
    "$REL/examples/mix_bench" kernels >"$OUT/kernels.txt"
    if command -v valgrind >/dev/null; then
        log "mix kernels: callgrind"
        for f in $(awk '{print $2}' "$OUT/kernels.txt" | uniq) dmix-lockfree; do
            ir() {
                valgrind --tool=callgrind --callgrind-out-file=/dev/null "$REL/examples/mix_bench" count "$f" "$1" 2>&1 |
                    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
            }
            a=$(ir 20) b=$(ir 120)
            echo "ir $f $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / (100 * 1024 * 2) }')" >>"$OUT/kernels.txt"
        done
    fi
else
    "$REL/examples/mix_bench" count S16_LE 10 >/dev/null
fi

# ---- 1-5. the VM
log "booting the test VM ($MODE)"
timeout=2400; [[ $MODE == smoke ]] && timeout=240
set +e
tests/vm/vm.sh --timeout "$timeout" "${SHARES[@]}" --env "OUT=$OUT" --env "MODE=$MODE" \
    --env "SO=$REL/libasound_module_pcm_rdmix.so" --env "SERVER=$REL/rdmix-server" \
    --env "CLIENT=$REL/examples/bench_client" tests/bench/guest.sh 2> >(tee "$OUT/vm.log" >&2)
rc=$?
set -e
sleep 0.2
(( rc == 0 )) || { log "guest script failed (status $rc)"; exit 1; }
accel=$(sed -n 's/.*booting [^ ]* ([^,]*, \([A-Z]*\), smp \([0-9]*\), \([0-9]*M\)).*/\1, \2 vCPUs, \3 RAM/p' "$OUT/vm.log" | head -n1)
echo "accel: ${accel:-?}" >>"$OUT/host.txt"
echo "guest: Debian kernel $(sed -n 's/.*booting \([^ ]*\) (.*/\1/p' "$OUT/vm.log" | head -n1) in qemu" >>"$OUT/host.txt"

if [[ $MODE == full ]]; then
    md=BENCHMARKS.md svg=tests/bench/client-cpu.svg
else
    md=$OUT/BENCHMARKS.md svg=$OUT/client-cpu.svg
fi
"$REL/examples/bench_report" report "$OUT" --md "$md" --svg "$svg" \
    --chart-link tests/bench/client-cpu.svg --command "tests/bench/run.sh"
log "wrote $md and $svg"
