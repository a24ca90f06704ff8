#!/bin/sh
# Guest side of tests/c_reader.rs (busybox sh in the test VM).
# Env: OUT (shared output dir), SO, SERVER, RDMIX_CLI (the `rdmix` command), READER (the C
# reader examples/rdmix_read.c, built on the host against include/rdmix.h).
# Three aplay play through rdmix on hw:Loopback,0,0; while they play, the C reader and
# `rdmix status --json` read the mixer in turn (C, Rust, C, Rust, C); the host compares them.
set -u
cd "$OUT" || exit 90

mkdir -p /tmp/rdmix
cp "$SO" "$SERVER" "$RDMIX_CLI" "$READER" /tmp/rdmix/ || exit 91
SO=/tmp/rdmix/$(basename "$SO")
SERVER=/tmp/rdmix/$(basename "$SERVER")
CLI=/tmp/rdmix/$(basename "$RDMIX_CLI")
READER=/tmp/rdmix/$(basename "$READER")
cp sig.wav /tmp/sig.wav || exit 92

cat > asound.conf <<CONF
pcm_type.rdmix { lib "$SO" }
pcm.rdmix {
    type rdmix
    server "$SERVER"
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
export RDMIX_SERVER_LOG=$OUT/server.log

# Nothing running yet: the reader must say so and fail.
$READER >reader_none.txt 2>&1
echo $? > status_reader_none

: > players
# SCHED_FIFO, as audio programs run (at normal priority on two emulated CPUs they underrun,
# which restarts their frames-mixed count); chrt execs aplay, so $! is aplay's pid.
for i in 1 2 3; do
    chrt -f 1 aplay -q -D rdmix /tmp/sig.wav >play_$i.log 2>&1 &
    echo $! >> players
done

# Wait (at most 10 s) until the mixer counts all three.
n=0
while [ $n -lt 100 ]; do
    $CLI status --json > status_wait.json 2>/dev/null
    [ "$(grep -o '"pid":' status_wait.json | wc -l)" -ge 3 ] && break
    sleep 0.1
    n=$((n + 1))
done
echo $n > wait_polls
: > player_comms
for p in $(cat players); do
    cat /proc/$p/comm >> player_comms 2>/dev/null || echo gone >> player_comms
done

# The socket name as /proc/net/unix shows it (with '@'), for the reader's argument.
grep -o '@rdmix/[^ ]*' /proc/net/unix | sort -u > sockets

# C, Rust, C, Rust, C: each reading's frames_mixed must lie between its neighbours'.
$READER "$(head -n 1 sockets)" > reader_1.txt 2> reader_1.err; echo $? > status_reader_1
$CLI status --json > status_1.json 2> status_1.err; echo $? > status_status_1
sleep 0.3
$READER > reader_2.txt 2> reader_2.err; echo $? > status_reader_2
$CLI status --json > status_2.json 2> status_2.err; echo $? > status_status_2
sleep 0.3
$READER "$(head -n 1 sockets | sed 's/^@//')" > reader_3.txt 2> reader_3.err; echo $? > status_reader_3

# `rdmix top` in a terminal (script gives it a pty): two frames, redrawn with meters.
script -qec "$CLI top --count 2 --interval 200" /dev/null > top.txt 2> top.err
echo $? > status_top

# The players were alive through all of it.
: > alive_after
for p in $(cat players); do
    [ -d /proc/$p ] && echo "$p" >> alive_after
done

: > player_status
for p in $(cat players); do
    wait $p
    echo $? >> player_status
done
exit 0
