#!/usr/bin/env bash
# Churn soak (not part of CI): `tests/soak/churn.sh [MINUTES]` (default 30).
#
# Boots the test VM and, for MINUTES, keeps one rdmix-server alive with a long-lived client
# while other clients start and stop without pause (random lengths; normal ends, SIGTERM,
# SIGKILL; 1-3 at a time; some with MMAP access). Reports the server's fd count and VmRSS at
# the start, every 5 minutes and at the end, and the number of client runs; at the end checks
# that the mixer's slot count equals the live client count and that, once every client has
# exited, no server, socket or /dev/shm file remains. The guest side is churn-guest.sh; its
# files land in target/soak-out/. Exit status: 0 if every check passed.
#
# It takes the VM for the whole time: run it with low priority (nice -n 19) when nothing else
# needs the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
MINUTES=${1:-30}
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || { echo "usage: tests/soak/churn.sh [MINUTES]" >&2; exit 2; }

cargo build --quiet --lib --bins
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=$TARGET/debug
for f in libasound_module_pcm_rdmix.so rdmix-server rdmix; do
    [[ -f $DIR/$f ]] || { echo "churn.sh: $DIR/$f was not built" >&2; exit 1; }
done
case $(realpath "$DIR") in
    "$ROOT"/*) ;;
    *) echo "churn.sh: the build ($DIR) must be inside the project, which the VM shares" >&2; exit 1 ;;
esac
OUT=$ROOT/target/soak-out
rm -rf "$OUT"
mkdir -p "$OUT"

echo "churn soak: $MINUTES minutes, started $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
set +e
tests/vm/vm.sh --timeout $((MINUTES * 60 + 600)) --share "$ROOT" \
    --env OUT="$OUT" --env MINUTES="$MINUTES" \
    --env SO="$DIR/libasound_module_pcm_rdmix.so" --env SERVER="$DIR/rdmix-server" \
    --env RDMIX="$DIR/rdmix" \
    tests/soak/churn-guest.sh
rc=$?
set -e
echo "churn soak: ended $(date -u '+%Y-%m-%d %H:%M:%S') UTC, guest status $rc"
exit $rc
