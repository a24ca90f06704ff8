#!/bin/sh
# Guest side of tests/states.rs (busybox sh in the test VM).
# Env: OUT, SO, SERVER, STATE_PLAY, RDMIX_CLI, SCENARIOS (space-separated list).
#
# For each scenario: capture hw:Loopback,1,0 (S16_LE stereo) while a partner client plays a
# plain counter on the right channel (rdmix_r) for the whole time and examples/state_play runs
# the scenario on the left channel (rdmix_l). Leaves cap_S.raw, out_S.txt, err_S.txt,
# status_S (scenario client), pstatus_S (partner) in $OUT.
# Then `disconnect`: unbind snd-aloop's platform device while a client plays.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix
cp "$SO" "$SERVER" "$STATE_PLAY" "$RDMIX_CLI" /tmp/rdmix/ || exit 91
SP=/tmp/rdmix/state_play
CLI=/tmp/rdmix/rdmix
cat > asound.conf <<CONF
pcm_type.rdmix { lib "/tmp/rdmix/$(basename "$SO")" }
pcm.rdmix_l {
    type rdmix
    server "/tmp/rdmix/rdmix-server"
    bindings { 0 0 }
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 8192 }
}
pcm.rdmix_r {
    type rdmix
    server "/tmp/rdmix/rdmix-server"
    bindings { 0 1 }
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 8192 }
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
export RDMIX_STATS=1
TRACE=${RDMIX_TRACE:-}
export RDMIX_TRACE=""

settle() {
    n=0
    while pidof rdmix-server >/dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
}

for s in $SCENARIOS; do
    settle
    chrt -f 2 arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 5 "cap_$s.raw" 2>"arecord_$s.log" &
    rec=$!
    usleep 300000
    export RDMIX_SERVER_LOG=$OUT/server_$s.log
    chrt -f 1 $SP rdmix_r plain 192000 --buffer 6144 >"pout_$s.txt" 2>"perr_$s.txt" &
    partner=$!
    # Start the scenario once the partner is being mixed (its start-up time varies under TCG).
    n=0
    until $CLI status --json 2>/dev/null | grep -q '"frames_mixed":[1-9]' || [ $n -ge 100 ]; do
        usleep 20000; n=$((n+1))
    done
    usleep 200000
    RDMIX_TRACE=$TRACE chrt -f 1 $SP rdmix_l "$s" 72000 >"out_$s.txt" 2>"err_$s.txt"
    echo $? >"status_$s"
    wait $partner
    echo $? >"pstatus_$s"
    wait $rec
    echo "states: $s done (status $(cat status_$s), partner $(cat pstatus_$s))"
done

# Disconnect: the card goes away under a playing client.
settle
dev=$(ls -d /sys/bus/platform/devices/snd_aloop.* 2>/dev/null | head -1)
if [ -n "$dev" ]; then
    chrt -f 1 $SP rdmix_l plain 480000 >out_disconnect.txt 2>err_disconnect.txt &
    p=$!
    usleep 1500000
    pidof rdmix-server >server_before_disconnect.txt
    read t0 _ </proc/uptime
    echo "$(basename "$dev")" > /sys/bus/platform/drivers/snd_aloop/unbind
    echo $? > unbind_status
    n=0
    while kill -0 $p 2>/dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
    read t1 _ </proc/uptime
    if kill -0 $p 2>/dev/null; then echo still-running > status_disconnect; kill -9 $p; else wait $p; echo $? > status_disconnect; fi
    awk "BEGIN { print int(($t1 - $t0) * 1000) }" > disconnect_ms
    usleep 500000
    (pidof rdmix-server || echo none) > server_after_disconnect.txt
    grep -c '@rdmix/' /proc/net/unix > sockets_after_disconnect.txt
    echo "$(basename "$dev")" > /sys/bus/platform/drivers/snd_aloop/bind
    echo "states: disconnect done (status $(cat status_disconnect), $(cat disconnect_ms) ms)"
else
    echo none > status_disconnect
fi
echo "states: all done"
