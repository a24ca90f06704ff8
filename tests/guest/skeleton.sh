#!/bin/sh
# Guest side of tests/skeleton.rs (runs under busybox sh inside the test VM).
# Env: OUT (output dir, shared with the host), SO (plugin .so), SERVER (rdmix-server).
# Every step writes its artifacts and exit status into $OUT; the host checks them.
set -u
cd "$OUT" || exit 90

# Run the plugin and server from local tmpfs, as an installed copy would be: executing them
# from the 9p share pages them in over the virtual wire, which takes seconds under TCG.
mkdir -p /tmp/rdmix
cp "$SO" "$SERVER" /tmp/rdmix/ || exit 91
SO=/tmp/rdmix/$(basename "$SO")
SERVER=/tmp/rdmix/$(basename "$SERVER")

# The signal too: reading it over 9p costs each aplay loop a round trip, enough under TCG to
# make a client that reads and writes one period at a time fall behind real time.
cp sig.wav /tmp/sig.wav || exit 92

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
pcm.bad_rate { type rdmix slave { pcm "hw:Loopback,0,0" rate "fast" } }
pcm.bad_period { type rdmix slave { pcm "hw:Loopback,0,0" period_size 1024 period_time 20000 } }
pcm.bad_periods { type rdmix slave { pcm "hw:Loopback,0,0" periods 4 buffer_size 4096 } }
pcm.bad_align { type rdmix hw_ptr_alignment sideways slave "hw:Loopback,0,0" }
pcm.bad_perm { type rdmix ipc_perm 0660 ipc_key_add_uid yes slave "hw:Loopback,0,0" }
pcm.bad_gid { type rdmix ipc_gid audio slave "hw:Loopback,0,0" }
pcm.bad_bindings { type rdmix bindings { 0 7 } slave "hw:Loopback,0,0" }
pcm.bad_slave { type rdmix slave "null" }
pcm.bad_slowptr { type rdmix slowptr maybe slave "hw:Loopback,0,0" }
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

play rw 5 aplay -v -D rdmix /tmp/sig.wav
play mmap 5 aplay -v -M -D rdmix /tmp/sig.wav
play nonblock 5 aplay -N -D rdmix /tmp/sig.wav
play dmix 5 aplay -D dmixref /tmp/sig.wav

# speaker-test: one loop of 2 channels.
speaker-test -D rdmix -c 2 -l 1 -t sine >speaker.log 2>&1
echo $? > status_speaker
echo "step speaker: status $(cat status_speaker)"

# strace the client: its socket must see no traffic after the handshake.
arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 5 cap_strace.raw 2>/dev/null &
rec=$!
sleep 0.4
strace -f -tt -o strace.txt aplay -D rdmix /tmp/sig.wav >play_strace.log 2>&1
echo $? > status_strace
wait $rec
echo "step strace: status $(cat status_strace)"

# Kill a client mid-stream: the server must go away, and the next open must work.
sleep 0.5
aplay -D rdmix /tmp/sig.wav >play_killed.log 2>&1 &
victim=$!
sleep 1
kill -9 $victim
wait $victim 2>/dev/null
sleep 1
echo "$(servers)" > servers_after_kill
ls -a /dev/shm > shm_after_kill
play afterkill 5 aplay -D rdmix /tmp/sig.wav

# The shipped alsa-conf/50-rdmix.conf, with the plugin found through ALSA_PLUGIN_DIR and the
# server next to it (no lib/server keys), default slave parameters (the loopback then runs
# S32_LE), and alsa-lib's plug converting the S16 file.
arecord -q -D hw:Loopback,1,0 -f S32_LE -r 48000 -c 2 -t raw -d 5 cap_conf.raw 2>arecord_conf.log &
rec=$!
sleep 0.4
ALSA_PLUGIN_DIR=/tmp/rdmix ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$CONF \
    aplay -v -D "plug:'rdmix:CARD=Loopback,DEV=0'" /tmp/sig.wav >play_conf.log 2>&1
echo $? > status_conf
wait $rec
sleep 0.3
echo "$(servers)" > servers_after_conf
echo "step conf: status $(cat status_conf)"

# A wrong configuration key is refused with a message naming it.
aplay -D rdmixbad /tmp/sig.wav >play_bad.log 2>&1
echo $? > status_bad
echo "step bad: status $(cat status_bad)"

# Each wrong or contradictory setting is refused with a message naming it.
for pcm in bad_rate bad_period bad_periods bad_align bad_perm bad_gid bad_bindings bad_slave bad_slowptr; do
    aplay -D $pcm /tmp/sig.wav >play_$pcm.log 2>&1
    echo $? > status_$pcm
done

sleep 0.5
echo "$(servers)" > servers_at_end
exit 0
