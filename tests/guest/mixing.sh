#!/bin/sh
# Guest side of tests/mixing.rs (busybox sh in the test VM). Runs the scenarios of $OUT/plan:
#
#   mix NAME PCM CAPTURE_FORMAT CAPTURE_FRAMES STAGGER_MS CLIENT...
#       capture from hw:Loopback,1,0 while the clients play, started STAGGER_MS apart (0 = all
#       at once); CLIENT = FILE:FORMAT:PERIOD:BUFFER:CHANNELS:CPCM:PLAYER with PERIOD/BUFFER 0 =
#       the player's default, CPCM - = the scenario's PCM, PLAYER aplay or an access type for
#       play_raw (rw-i, rw-n, mmap-i, mmap-n).
#   pairs NAME PCM CAPTURE_FORMAT CAPTURE_FRAMES COUNT INTERVAL_MS PREFIX KEEPER
#       COUNT pairs of clients PREFIX<k>a / PREFIX<k>b (S16_LE), each pair started at the same
#       instant, INTERVAL_MS apart, in one capture. KEEPER=1 keeps the mixer running between
#       pairs with a client playing silence.
#
# Each scenario leaves cap_NAME.raw, status_NAME (one exit status per client) and logs in $OUT.
#
# Clients run with SCHED_FIFO priority 1 and the capture with priority 2, as audio programs
# do (rtkit, JACK, PipeWire clients): sixteen aplay processes starting at once on two emulated
# CPUs otherwise starve each other for longer than any start headroom or buffer, and the test
# would measure the scheduler, not the mixer. dmix runs under the same conditions.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix /tmp/sig
cp "$SO" "$SERVER" "$PLAY_RAW" /tmp/rdmix/ || exit 91
cp sig/* /tmp/sig/ || exit 92
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
export RDMIX_STATS=1

client_cmd() { # PCM CLIENT INPUT -> the command line that plays INPUT as CLIENT says
    IFS=: read -r f fmt per buf ch cpcm player <<ARGS
$2
ARGS
    in=$3
    [ "$cpcm" = - ] && cpcm=$1
    if [ "$player" = aplay ]; then
        a="aplay -D $cpcm -q -t raw -f $fmt -r 48000 -c $ch"
        [ "$per" != 0 ] && a="$a --period-size=$per"
        [ "$buf" != 0 ] && a="$a --buffer-size=$buf"
        echo "$a $in"
    else
        echo "/tmp/rdmix/play_raw $cpcm $player $fmt $ch 48000 $per $buf $in"
    fi
}

settle() { # wait until no rdmix-server is left (the previous mixer has closed)
    n=0
    while pidof rdmix-server >/dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
}

while read -r kind name pcm cfmt frames rest; do
    case "$kind" in
    mix)
        settle
        set -- $rest
        stagger=$1; shift
        chrt -f 2 arecord -q -D hw:Loopback,1,0 -f "$cfmt" -r 48000 -c 2 -t raw -s "$frames" "cap_$name.raw" 2>"arecord_$name.log" &
        rec=$!
        usleep 300000
        # Start every player on a FIFO first: each opens and configures its PCM, then blocks
        # reading. Releasing the data then starts the streams at the instant (or the interval)
        # the scenario asks for, without sixteen program start-ups competing for the CPU.
        pids=""
        i=0
        for c in "$@"; do
            rm -f "/tmp/fifo_$i" && mkfifo "/tmp/fifo_$i"
            chrt -f 1 $(client_cmd "$pcm" "$c" "/tmp/fifo_$i") >"log_${name}_$i" 2>&1 &
            pids="$pids $!"
            i=$((i + 1))
        done
        usleep $((300000 + 150000 * i))
        i=0
        for c in "$@"; do
            cat "/tmp/sig/${c%%:*}" > "/tmp/fifo_$i" &
            [ "$stagger" != 0 ] && usleep $((stagger * 1000))
            i=$((i + 1))
        done
        : > "status_$name"
        for p in $pids; do wait "$p"; echo $? >> "status_$name"; done
        wait $rec
        echo "scenario $name: client statuses $(tr '\n' ' ' < status_$name)"
        ;;
    pairs)
        settle
        set -- $rest
        count=$1 interval=$2 prefix=$3 keeper=$4
        chrt -f 2 arecord -q -D hw:Loopback,1,0 -f "$cfmt" -r 48000 -c 2 -t raw -s "$frames" "cap_$name.raw" 2>"arecord_$name.log" &
        rec=$!
        usleep 300000
        kp=""
        if [ "$keeper" = 1 ]; then
            chrt -f 1 aplay -q -D "$pcm" -t raw -f S16_LE -r 48000 -c 2 /dev/zero >"log_${name}_keeper" 2>&1 &
            kp=$!
            usleep 500000
        fi
        : > "status_$name"
        k=0
        while [ $k -lt "$count" ]; do
            chrt -f 1 aplay -D "$pcm" -q -t raw -f S16_LE -r 48000 -c 2 /tmp/sig/${prefix}${k}a >"log_${name}_${k}a" 2>&1 &
            a=$!
            chrt -f 1 aplay -D "$pcm" -q -t raw -f S16_LE -r 48000 -c 2 /tmp/sig/${prefix}${k}b >"log_${name}_${k}b" 2>&1 &
            b=$!
            usleep $((interval * 1000))
            wait $a; echo $? >> "status_$name"
            wait $b; echo $? >> "status_$name"
            k=$((k + 1))
        done
        [ -n "$kp" ] && kill "$kp" 2>/dev/null && wait "$kp" 2>/dev/null
        wait $rec
        echo "scenario $name: $(grep -vc '^0$' status_$name) failed clients of $((count * 2))"
        ;;
    esac
done < plan
settle
exit 0
