#!/usr/bin/env bash
# rdmix's main job on a machine without a sound card: two `aplay -D rdmix_demo` play at once
# through rdmix into the server's virtual device, whose mix goes to a WAV file; then the WAV is
# checked to be the exact (saturated) sum of the two inputs at the frames where the server says
# each client started, and a summary is printed.
#
# Usage: tests/demo.sh [OUTDIR]        (default: target/demo)
# Sets up what it needs (Debian packages via tests/vm/setup-host.sh), builds, runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/demo}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

tests/vm/setup-host.sh
if ! command -v cargo >/dev/null; then
    echo "tests/demo.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
cargo build --quiet --lib --bins --example wav_mix_check
TARGET=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET/debug

rm -f "$OUT"/mix.wav "$OUT"/mix.wav.txt
# Two distinct signals, loud enough that their sum clips now and then (saturation is part of
# the exact check).
sox -q -n -r 48000 -c 2 -b 16 "$OUT/a.wav" synth 3 sine 440 sine 550 vol 0.6
sox -q -n -r 48000 -c 2 -b 16 "$OUT/b.wav" synth 2 sine 660 sine 330 vol 0.6

# The plugin from the build tree, and a PCM on the virtual device writing to mix.wav. The
# system's configuration is read first, so everything else still works. A 16384-frame ring
# (341 ms) lets aplay ride out a busy machine: a client that underruns restarts at a new
# position, and the summary records only its last start.
cat > "$OUT/asound.conf" <<EOF
pcm_type.rdmix { lib "$BIN/libasound_module_pcm_rdmix.so" }
pcm.rdmix_demo {
    type rdmix
    server "$BIN/rdmix-server"
    virtual { sink wav file "$OUT/mix.wav" }
    slave { format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 16384 }
}
EOF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf

echo "rdmix demo: two aplay at once through the virtual device into $OUT/mix.wav"
aplay -q -D rdmix_demo "$OUT/a.wav" &
pa=$!
sleep 0.5
aplay -q -D rdmix_demo "$OUT/b.wav" &
pb=$!
sleep 0.5
"$BIN/rdmix" status || true
wait "$pa"
wait "$pb"
# The server writes the WAV's final sizes and the summary when its last client has gone.
for _ in $(seq 100); do
    [[ -s $OUT/mix.wav.txt ]] && break
    sleep 0.05
done
echo
cat "$OUT/mix.wav.txt"
echo
"$BIN/examples/wav_mix_check" "$OUT/mix.wav" "$OUT/mix.wav.txt" "$pa=$OUT/a.wav" "$pb=$OUT/b.wav"
