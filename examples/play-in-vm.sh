#!/usr/bin/env bash
# rdmix's main job, on a machine without a sound card: build rdmix, boot the test VM (Debian's
# kernel with the snd-aloop loopback card, under qemu), play a tone with `aplay -D rdmix` into
# hw:Loopback,0,0, record what comes out of hw:Loopback,1,0, and compare the two.
# Everything it needs is installed on first use (Debian packages, the kernel, an initramfs).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/setup-host.sh
cargo build --release --lib --bins
out=$PWD/target/rdmix-demo
rm -rf "$out" && mkdir -p "$out"
sox -q -n -r 48000 -c 2 -b 16 "$out/tone.wav" synth 3 sine 440 sine 660 gain -6

cat > "$out/guest.sh" <<'GUEST'
#!/bin/sh
set -u
cd "$OUT"
mkdir -p /tmp/rdmix
cp "$REL/libasound_module_pcm_rdmix.so" "$REL/rdmix-server" tone.wav /tmp/rdmix/
cat > asound.conf <<CONF
pcm.rdmix {
    type rdmix
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
CONF
export ALSA_PLUGIN_DIR=/tmp/rdmix ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -d 5 capture.wav &
rec=$!
sleep 0.4
aplay -D rdmix /tmp/rdmix/tone.wav
st=$?
wait $rec
exit $st
GUEST
chmod +x "$out/guest.sh"

tests/vm/vm.sh --share "$PWD" --env OUT="$out" --env REL="$PWD/target/release" "$out/guest.sh"

python3 - "$out/tone.wav" "$out/capture.wav" <<'PY'
import sys, wave
def frames(p):
    with wave.open(p) as w:
        return w.readframes(w.getnframes())
played, heard = frames(sys.argv[1]), frames(sys.argv[2])
def first_sound(b):
    return next((i for i in range(0, len(b), 4) if b[i:i+4] != b"\0\0\0\0"), None)
n = len(played) // 4
h0, p0 = first_sound(heard), first_sound(played)
if h0 is None:
    sys.exit("rdmix demo: the capture is silent")
start = h0 - p0  # the tone itself starts with silent frames (sin 0 = 0)
same = heard[start:start + len(played)] == played
rest = heard[start + len(played):].strip(b"\0") == b""
print(f"rdmix demo: played {n} frames (3 s) through rdmix; the loopback heard them "
      f"{'bit-exact' if same and rest else 'NOT bit-exact'}, starting {start // 4} frames into the capture")
print(f"  files: {sys.argv[1]}, {sys.argv[2]}")
sys.exit(0 if same and rest else 1)
PY
