#!/bin/sh
# Guest side of tests/apps.rs, the application matrix (busybox sh in the test VM booted with
# RDMIX_VM_APPS=1). Every program plays through -D rdmix while arecord captures the loopback;
# each row leaves cap_<row>.raw, log_<row>.txt, status_<row> and secs_<row> in $OUT and the host
# checks them.
# Env: OUT, SO, SERVER, ALSA_PLAY, CPAL_PLAY (the two examples).
set -u
cd "$OUT" || exit 90

mkdir -p /tmp/rdmix /tmp/bin
cp "$SO" "$SERVER" /tmp/rdmix/ || exit 91
SO=/tmp/rdmix/$(basename "$SO")
SERVER=/tmp/rdmix/$(basename "$SERVER")
cp "$ALSA_PLAY" "$CPAL_PLAY" /tmp/bin/ || exit 92
# Inputs on tmpfs: reading them over 9p under TCG can make a player fall behind real time.
cp ./*.wav noise.mp3 /tmp/ || exit 93

cat > asound.conf <<CONF
pcm_type.rdmix { lib "$SO" }
pcm.rdmix {
    type rdmix
    server "$SERVER"
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
    hint.description "rdmix (application matrix)"
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf

up() { cut -d' ' -f1 /proc/uptime; }
T0=$(up)

# row NAME CMD...: capture the loopback from 0.4 s before CMD until 0.5 s after it ends.
row() {
    name=$1; shift
    arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw "cap_$name.raw" 2>"arecord_$name.log" &
    rec=$!
    sleep 0.4
    t=$(up)
    "$@" >"log_$name.txt" 2>&1
    echo $? > "status_$name"
    echo "$t $(up)" | awk '{printf "%.2f\n", $2 - $1}' > "secs_$name"
    sleep 0.5
    kill -INT $rec
    wait $rec
    echo "row $name: status $(cat status_$name), $(cat secs_$name) s"
}

cat > /tmp/py_play.py <<'PY'
# Plays tests/common's self-indexing signal (frame n encodes n) through pyalsaaudio.
import struct, sys
import alsaaudio
dev, salt, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def frame(n):
    lo, hi = n & 0xFFFF, n >> 16
    rot = ((lo << 5) | (lo >> 11)) & 0xFFFF
    return struct.pack("<HH", lo, hi ^ 0x5A5A ^ salt ^ rot)
data = b"".join(frame(n) for n in range(frames)) + bytes(4 * 24000)  # + 0.5 s of silence
pcm = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, alsaaudio.PCM_NORMAL, device=dev)
pcm.setchannels(2)
pcm.setrate(48000)
pcm.setformat(alsaaudio.PCM_FORMAT_S16_LE)
pcm.setperiodsize(1024)
period = 1024 * 4
off = 0
while off < len(data):
    n = pcm.write(data[off:off + period])
    if n < 0:
        sys.exit("pcm.write failed: %d" % n)
    off += n * 4
print("python: %d frames written to %s" % (frames, dev))
PY

row aplay_rw aplay -D rdmix /tmp/sig_rw.wav
row aplay_mmap aplay -v -M -D rdmix /tmp/sig_mmap.wav
row aplay_nonblock aplay -N -D rdmix /tmp/sig_nonblock.wav
row sox_play env AUDIODEV=rdmix play -q /tmp/sig_sox.wav
row ffmpeg_wav ffmpeg -nostdin -hide_banner -loglevel error -i /tmp/sig_ffmpeg.wav -f alsa rdmix
# mp3: mpg123's own decode to a file first, then the same decode played.
mpg123 -q -e s16 -w dec_mpg123.wav /tmp/noise.mp3 >log_mpg123_dec.txt 2>&1
echo $? > status_mpg123_dec
row mpg123 mpg123 -q -e s16 -o alsa -a rdmix /tmp/noise.mp3
# ffmpeg decodes once and writes the decode both to a WAV file and to rdmix.
row ffmpeg_mp3 ffmpeg -nostdin -hide_banner -loglevel error -i /tmp/noise.mp3 \
    -c:a pcm_s16le -f wav dec_ffmpeg.wav -c:a pcm_s16le -f alsa rdmix
row speaker_test speaker-test -D rdmix -c 2 -r 48000 -F S16_LE -t sine -f 1000 -s 1 -l 1
row python python3 /tmp/py_play.py rdmix 20 48000
row alsa_play /tmp/bin/alsa_play rdmix 1
row cpal_play /tmp/bin/cpal_play rdmix 1

# alsabat plays its own sine through rdmix and captures the loopback itself (no arecord here:
# it holds the capture substream), then analyses what it captured.
t=$(up)
alsabat -P rdmix -C hw:Loopback,1,0 -c 2 -r 48000 -f S16_LE -F 1000 -n 48000 >log_alsabat.txt 2>&1
echo $? > status_alsabat
echo "$t $(up)" | awk '{printf "%.2f\n", $2 - $1}' > secs_alsabat
echo "row alsabat: status $(cat status_alsabat), $(cat secs_alsabat) s"

sleep 0.3
pidof rdmix-server > servers_at_end || true
echo "$T0 $(up)" | awk '{printf "%.2f\n", $2 - $1}' > secs_total
echo "matrix took $(cat secs_total) s of guest time"
exit 0
