#!/usr/bin/env bash
# Self-test of the VM harness: boots the VM, runs tests/vm/selftest.sh in it and
# checks, on the host, that the captured files hold the counter frames in order.
# Usage: tests/vm/selftest-host.sh [vm.sh options...]   (e.g. --timeout 120)
# Exit status: 0 pass; 1 capture check failed; else vm.sh's status.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd -P)

OUT=$(mktemp -d "${TMPDIR:-/tmp}/rdmix-vm-selftest.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

# 1 s of S16_LE 48 kHz stereo: left = frame & 0x7fff, right = 0x7fff - left
# (so frame 0 is not silence).
python3 - "$OUT/counter.raw" <<'EOF'
import struct, sys
with open(sys.argv[1], "wb") as f:
    f.write(b"".join(struct.pack("<hh", n & 0x7fff, 0x7fff - (n & 0x7fff)) for n in range(48000)))
EOF

rc=0
"$HERE/vm.sh" --share "$OUT" --share "$REPO" --env "SELFTEST_REPO=$REPO" "$@" "$HERE/selftest.sh" || rc=$?
if (( rc != 0 )); then
    echo "selftest-host: vm.sh exited with $rc" >&2
    exit "$rc"
fi

# Host-side check. Strict for the plain loopback; for dmix the known start race
# (vm-testing.md §8.3) may drop up to 1024 head/tail frames and replay lost head
# frames one buffer (4096 frames) later, summed on top: those are tolerated and reported.
python3 - "$OUT/cap-hw.raw" strict "$OUT/cap-dmix.raw" dmix <<'EOF'
import struct, sys

N, BUF, SLACK = 48000, 4096, 1024

def frame(n):
    l = n & 0x7fff
    return (l, 0x7fff - l)

def sat(v):
    return max(-32768, min(32767, v))

def check(path, mode):
    data = open(path, "rb").read()
    if len(data) % 4:
        return [f"size {len(data)} not a whole number of frames"], ""
    fr = list(struct.iter_unpack("<hh", data))
    nz = [i for i, f in enumerate(fr) if f != (0, 0)]
    if not nz:
        return ["capture is all silence"], ""
    first, last = nz[0], nz[-1]
    head = fr[first][0]                      # index of the first frame heard
    slack = 0 if mode == "strict" else SLACK
    errs, ghosts = [], 0
    if fr[first] != frame(head) or head > slack:
        errs.append(f"first non-silent frame {fr[first]} at {first} is not counter frame 0..{slack}")
        return errs, ""
    n = head
    for i in range(first, last + 1):
        exp = frame(n)
        got = fr[i]
        if got != exp:
            g = n - BUF                      # ghost of a lost head frame, one buffer later
            if mode != "strict" and 0 <= g < head and got == tuple(sat(a + b) for a, b in zip(exp, frame(g))):
                ghosts += 1
            else:
                errs.append(f"frame at {i}: got {got}, expected counter frame {n} {exp}")
                if len(errs) >= 5:
                    break
        n += 1
    tail_lost = N - n
    if tail_lost < 0:
        errs.append(f"{-tail_lost} frames more than the {N} played")
    elif tail_lost > slack:
        errs.append(f"only {n - head} of {N} frames (tail lost {tail_lost})")
    info = (f"{len(fr)} frames captured, counter frames {head}..{n - 1} in order at offset {first}"
            f"; head lost {head}, tail lost {max(tail_lost, 0)}, head replayed one buffer later: {ghosts} frames")
    return errs, info

failed = False
args = sys.argv[1:]
for path, mode in zip(args[::2], args[1::2]):
    name = path.rsplit("/", 1)[-1]
    try:
        errs, info = check(path, mode)
    except OSError as e:
        errs, info = [str(e)], ""
    if errs:
        failed = True
        print(f"selftest-host: FAIL {name} ({mode}): " + "; ".join(errs))
    else:
        print(f"selftest-host: ok {name} ({mode}): {info}")
sys.exit(1 if failed else 0)
EOF
echo "selftest-host: PASS"
