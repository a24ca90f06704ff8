#!/bin/sh
# Guest side of tests/skeleton.rs (runs under busybox sh inside the test VM).
# Env: OUT (output dir, shared with the host), SO (plugin .so), SERVER (rdmix-server).
# Every step writes its artifacts and exit status into $OUT; the host checks them.
set -u
cd "$OUT" || exit 90

cat > asound.conf <<CONF
pcm_type.rdmix { lib "$SO" }
pcm.rdmix {
    type rdmix
    server "$SERVER"
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
pcm.dmixref {
    type dmix
    ipc_key 5678
    ipc_perm 0666
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
pcm.rdmixbad {
    type rdmix
    server "$SERVER"
    slave "hw:Loopback,0,0"
    bogus_key 1
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf

servers() { pidof rdmix-server || true; }

# play NAME CAPTURE_SECONDS APLAY_ARGS...: capture from the loopback while aplay plays.
play() {
    name=$1; secs=$2; shift 2
    arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d "$secs" "cap_$name.raw" 2>"arecord_$name.log" &
    rec=$!
    sleep 0.4
    "$@" >"play_$name.log" 2>&1
    echo $? > "status_$name"
    wait $rec
    echo $? > "status_arecord_$name"
    sleep 0.3
    echo "$(servers)" > "servers_after_$name"
    echo "step $name: status $(cat status_$name)"
}

play rw 4 aplay -v -D rdmix sig.wav
play mmap 4 aplay -v -M -D rdmix sig.wav
play nonblock 4 aplay -N -D rdmix sig.wav
play dmix 4 aplay -D dmixref sig.wav

# speaker-test: one loop of 2 channels.
speaker-test -D rdmix -c 2 -l 1 -t sine >speaker.log 2>&1
echo $? > status_speaker
echo "step speaker: status $(cat status_speaker)"

# strace the client: its socket must see no traffic after the handshake.
arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 4 cap_strace.raw 2>/dev/null &
rec=$!
sleep 0.4
strace -f -tt -o strace.txt aplay -D rdmix sig.wav >play_strace.log 2>&1
echo $? > status_strace
wait $rec
echo "step strace: status $(cat status_strace)"

# Kill a client mid-stream: the server must go away, and the next open must work.
sleep 0.5
aplay -D rdmix sig.wav >play_killed.log 2>&1 &
victim=$!
sleep 1
kill -9 $victim
wait $victim 2>/dev/null
sleep 1
echo "$(servers)" > servers_after_kill
ls -a /dev/shm > shm_after_kill
play afterkill 4 aplay -D rdmix sig.wav

# A wrong configuration key is refused with a message naming it.
aplay -D rdmixbad sig.wav >play_bad.log 2>&1
echo $? > status_bad
echo "step bad: status $(cat status_bad)"

sleep 0.5
echo "$(servers)" > servers_at_end
exit 0
