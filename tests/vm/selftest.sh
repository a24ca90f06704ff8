#!/bin/sh
# Guest half of the VM harness self-test (runs under busybox sh inside the VM).
# Run it through tests/vm/selftest-host.sh, which generates counter.raw into the
# output share (the cwd here), runs this, and then checks the captures on the host.
#   (a) /proc/asound/cards shows Loopback and Dummy
#   (b) aplay -> hw:Loopback,0,0, arecord <- hw:Loopback,1,0  => cap-hw.raw
#   (c) the same through alsa-lib's dmix on hw:Loopback,0,0    => cap-dmix.raw
#   (d) strace -f works
#   (e) users/groups: alice can use the sound devices
set -u
fail=0
ok() { echo "selftest: ok: $*"; }
bad() { echo "selftest: FAIL: $*"; fail=1; }

echo "selftest: kernel $(uname -r), cwd $(pwd), uptime $(cut -d' ' -f1 /proc/uptime)s"
[ -f counter.raw ] || { bad "counter.raw missing in $(pwd)"; exit 1; }

# The repo share is mounted at its host path too.
if [ -n "${SELFTEST_REPO:-}" ]; then
    if [ -f "$SELFTEST_REPO/tests/vm/selftest.sh" ]; then ok "repo visible at $SELFTEST_REPO"
    else bad "repo not visible at $SELFTEST_REPO"; fi
fi

# (a) cards
cat /proc/asound/cards
if grep -q ']: Loopback' /proc/asound/cards && grep -q ']: Dummy' /proc/asound/cards; then
    ok "cards: Loopback and Dummy"
else
    bad "cards: Loopback/Dummy missing"
fi
grep -q 'Loopback PCM.*: playback 8 : capture 8' /proc/asound/pcm && ok "aloop has 8 substreams" \
    || bad "aloop substreams: $(grep Loopback /proc/asound/pcm | head -n 1)"

FMT="-f S16_LE -r 48000 -c 2"
PB="--period-size=1024 --buffer-size=4096"

# capture OUTFILE LOG -- PLAYER ARGS... : capture 2 s from hw:Loopback,1,0 while playing.
capture_while() {
    out=$1 name=$2; shift 2
    # shellcheck disable=SC2086
    arecord -D hw:Loopback,1,0 $FMT $PB -t raw -d 2 "$out" 2>"/tmp/$name-arecord.log" &
    rec=$!
    sleep 0.3
    "$@" 2>"/tmp/$name-aplay.log"
    pst=$?
    wait $rec
    rst=$?
    if [ $pst -eq 0 ] && [ $rst -eq 0 ]; then ok "$name: aplay and arecord exited 0"
    else bad "$name: aplay status $pst, arecord status $rst"; cat "/tmp/$name-aplay.log" "/tmp/$name-arecord.log"; fi
    if grep -qiE 'xrun|underrun|overrun' "/tmp/$name-aplay.log" "/tmp/$name-arecord.log"; then
        bad "$name: xrun reported"; cat "/tmp/$name-aplay.log" "/tmp/$name-arecord.log"
    fi
    echo "selftest: $name: captured $(wc -c <"$out") bytes"
}

# (b) straight through the loopback. The stream is followed by 2 buffers of
# silence: snd-aloop mangles the last ~200-800 frames before a playback stream
# stops (lost frames, and stale ring-buffer data copied past the end) unless
# what precedes the stop is silence. dmix needs no padding (its slave keeps running).
play_hw() {
    # shellcheck disable=SC2086
    { cat counter.raw; head -c 32768 /dev/zero; } | aplay -D hw:Loopback,0,0 -t raw $FMT $PB -
}
capture_while cap-hw.raw hw play_hw

# (c) through alsa-lib's dmix
cat >/tmp/test.conf <<'EOF'
pcm.mix {
    type dmix
    ipc_key 5678
    ipc_perm 0666
    slave {
        pcm "hw:Loopback,0,0"
        format S16_LE
        rate 48000
        channels 2
        period_size 1024
        buffer_size 4096
    }
}
EOF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:/tmp/test.conf
# shellcheck disable=SC2086
capture_while cap-dmix.raw dmix aplay -v -D mix -t raw $FMT counter.raw
grep -q 'Direct Stream Mixing' /tmp/dmix-aplay.log && ok "dmix: aplay went through dmix" \
    || { bad "dmix: aplay did not use dmix"; cat /tmp/dmix-aplay.log; }
unset ALSA_CONFIG_PATH

# (d) strace
if strace -f -o /tmp/x true && grep -q 'execve(' /tmp/x; then ok "strace -f works ($(wc -l </tmp/x) lines)"
else bad "strace -f"; cat /tmp/x; fi

# (e) users: alice is in the audio group and can open a sound device
idline=$(su alice -c id 2>&1)
echo "selftest: su alice: $idline"
case $idline in *"29(audio)"*) ok "alice is in audio" ;; *) bad "alice not in audio" ;; esac
if su alice -c 'aplay -q -D hw:Dummy,0,0 -t raw -f S16_LE -r 48000 -c 2 -d 1 /dev/zero' 2>/tmp/alice.log; then
    ok "alice can play to hw:Dummy"
else
    bad "alice cannot play: $(cat /tmp/alice.log)"
fi
[ "$(stat -c %a /dev/shm)" = 1777 ] && ok "/dev/shm is 1777" || bad "/dev/shm mode $(stat -c %a /dev/shm)"

echo "selftest: guest part done, fail=$fail"
exit $fail
