#!/bin/sh
# Guest side of tests/crash.rs (busybox sh in the test VM).
# Env: OUT, SO, SERVER, STATE_PLAY, RDMIX_CLI, KILL_LOOPS, SERVER_LOOPS.
#
# One capture of hw:Loopback,1,0 (S16_LE stereo) runs over each phase. Counters share the
# channels without carries: survivors A (left) and B (right) play ((n % 2047) + 1) << 4, the
# victim K plays (n % 15) + 1 in the low four bits of both channels (examples/state_play).
#
# Phase 1, KILL_LOOPS times: A, B and K start together; K is SIGKILLed at a random moment;
# `rdmix status --json` then must count 2 clients. Phase 2, SERVER_LOOPS times: A and B play,
# the server is SIGKILLed; a new client C tries to join; A and B finish; then nothing may be
# left, and a fresh client D must play.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix
cp "$SO" "$SERVER" "$STATE_PLAY" "$RDMIX_CLI" /tmp/rdmix/ || exit 91
SP=/tmp/rdmix/state_play
CLI=/tmp/rdmix/rdmix
slave='slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 8192 }'
cat > asound.conf <<CONF
pcm_type.rdmix { lib "/tmp/rdmix/$(basename "$SO")" }
pcm.rdmix_l { type rdmix server "/tmp/rdmix/rdmix-server" bindings { 0 0 } $slave }
pcm.rdmix_r { type rdmix server "/tmp/rdmix/rdmix-server" bindings { 0 1 } $slave }
pcm.rdmix_k { type rdmix server "/tmp/rdmix/rdmix-server" $slave }
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
HI="--shift 4 --mod 2047"
LO="--mod 15 --channels 2"

export RDMIX_SERVER_LOG=$OUT/server.log

# waitfor PID SECONDS NAME: wait for a client; if it hangs, record what it and the device are
# doing (hang_NAME.txt), kill it and return 124.
waitfor() {
    n=0
    while kill -0 "$1" 2>/dev/null && [ $n -lt $(($2 * 10)) ]; do usleep 100000; n=$((n+1)); done
    if kill -0 "$1" 2>/dev/null; then
        {
            echo "== $3 (pid $1) hung"; cat /proc/$1/wchan 2>/dev/null; echo
            grep -E 'State|ctxt' /proc/$1/status 2>/dev/null; cat /proc/$1/stat 2>/dev/null; usleep 500000; cat /proc/$1/stat 2>/dev/null
            cat /proc/$1/stack 2>/dev/null
            echo "== ps"; ps
            echo "== rdmix status"; timeout 5 $CLI status 2>&1
            echo "== substreams"; cat /proc/asound/card*/pcm0p/sub0/status 2>&1
            echo "== server log"; cat "$RDMIX_SERVER_LOG" 2>&1 | tail -5
        } > "hang_$3.txt"
        kill -9 "$1"; wait "$1" 2>/dev/null
        return 124
    fi
    wait "$1"
}

# mixing N: wait (up to 10 s) until the mixer has N clients that have all mixed frames; prints
# the server's pid.
mixing() {
    n=0
    while [ $n -lt 200 ]; do
        j=$(timeout 5 $CLI status --json 2>/dev/null)
        if [ "$(echo "$j" | grep -o '"frames_mixed":[1-9]' | wc -l)" -ge "$1" ]; then
            echo "$j" | sed -n 's/.*"server_pid":\([0-9]*\).*/\1/p'
            return 0
        fi
        usleep 20000; n=$((n+1))
    done
    return 1
}

settle() {
    n=0
    while pidof rdmix-server >/dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
}
capture() { # NAME: start a long capture in the background ($rec)
    chrt -f 2 arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 900 "cap_$1.raw" 2>"arecord_$1.log" &
    rec=$!
    usleep 500000
}
stop_capture() {
    usleep 300000
    kill -INT $rec; wait $rec
}

# ---- phase 1: a client killed mid-stream
capture kill
i=0
: > kill.txt
while [ $i -lt "$KILL_LOOPS" ]; do
    settle
    chrt -f 1 $SP rdmix_k plain 96000 $LO --buffer 6144 >/dev/null 2>"k_err_$i.txt" &
    k=$!
    chrt -f 1 $SP rdmix_l plain 48000 $HI --buffer 6144 >/dev/null 2>"a_err_$i.txt" &
    a=$!
    chrt -f 1 $SP rdmix_r plain 48000 $HI --buffer 6144 >/dev/null 2>"b_err_$i.txt" &
    b=$!
    # All three playing, then the victim dies at a random moment within the next 300 ms.
    mixing 3 >/dev/null || echo "loop $i: the three clients never all played" >> kill_setup.txt
    delay=$(( (RANDOM * 32768 + RANDOM) % 300000 ))
    usleep $delay
    kill -9 $k
    waitfor $k 5 k$i
    usleep 150000
    alive() { n=0; for p in $a $b; do kill -0 $p 2>/dev/null && n=$((n+1)); done; echo $n; }
    before=$(alive)
    live=$(timeout 5 $CLI status --json 2>/dev/null | sed -n 's/.*"live_clients":\([0-9]*\).*/\1/p')
    after=$(alive)
    waitfor $a 20 a$i; sa=$?
    waitfor $b 20 b$i; sb=$?
    echo "loop=$i delay_us=$delay a=$sa b=$sb live_after_kill=${live:-none} alive_before=$before alive_after=$after" >> kill.txt
    i=$((i+1))
done
settle
stop_capture
echo "crash: kill loops done"

# ---- phase 2: the server killed under two players
capture server
i=0
: > server.txt
while [ $i -lt "$SERVER_LOOPS" ]; do
    settle
    chrt -f 1 $SP rdmix_l plain 57600 $HI --buffer 6144 >/dev/null 2>"sa_err_$i.txt" &
    a=$!
    chrt -f 1 $SP rdmix_r plain 57600 $HI --buffer 6144 >/dev/null 2>"sb_err_$i.txt" &
    b=$!
    # Both playing, then the server (the daemon that owns the socket) dies.
    srv=$(mixing 2) || echo "loop $i: the two players never both played" >> server_setup.txt
    usleep $(( (RANDOM * 32768 + RANDOM) % 200000 ))
    kill -9 $srv
    usleep 200000
    read t0 _ </proc/uptime
    chrt -f 1 $SP rdmix_k plain 24000 $LO >/dev/null 2>"c_err_$i.txt" &
    waitfor $! 20 c$i; sc=$?
    read t1 _ </proc/uptime
    waitfor $a 20 sa$i; sa=$?
    waitfor $b 20 sb$i; sb=$?
    usleep 300000
    left_srv=$(pidof rdmix-server | wc -w)
    left_sock=$(grep -c '@rdmix/' /proc/net/unix)
    chrt -f 1 $SP rdmix_k plain 4800 $LO >/dev/null 2>"d_err_$i.txt" &
    waitfor $! 20 d$i; sd=$?
    c_ms=$(awk "BEGIN { print int(($t1 - $t0) * 1000) }")
    echo "loop=$i killed=$srv a=$sa b=$sb c=$sc c_ms=$c_ms left_servers=$left_srv left_sockets=$left_sock d=$sd" >> server.txt
    i=$((i+1))
done
settle
stop_capture
echo "servers_at_end=$(pidof rdmix-server | wc -w) sockets_at_end=$(grep -c '@rdmix/' /proc/net/unix)" > end.txt
echo "crash: server loops done"
