#!/bin/sh
# Guest side of tests/install.rs (busybox sh in the test VM, as root).
# Env: OUT (shared output dir), SO, SERVER, RDMIX (the three built files).
# A clean install with `rdmix install`, `aplay -D rdmix` with no configuration of our own,
# `rdmix install --default` and a plain `aplay`, then `rdmix uninstall`; every step leaves its
# output and status in $OUT, the host checks them.
set -u
cd "$OUT" || exit 90

up() { cut -d' ' -f1 /proc/uptime; }
T0=$(up)
mark() { echo "$1 $(up)" >> timings; }
: > timings
mark start

# The build directory, on tmpfs (as skeleton.sh does): the three files side by side, which is
# where `rdmix install` takes the plugin and the server from ("next to itself").
mkdir -p /tmp/build
cp "$SO" "$SERVER" "$RDMIX" /tmp/build/ || exit 91
cp sig32.wav sig16.wav /tmp/ || exit 92
mark copied

# No configuration of our own anywhere alsa-lib looks, and nothing of rdmix installed (the
# distribution's own conf.d directories may exist: they are noted, not required absent).
{
    env | grep ALSA || echo "no ALSA_* variables"
    for f in /etc/asound.conf /root/.asoundrc; do
        [ -e "$f" ] && echo "exists $f" || echo "absent $f"
    done
    find /usr /etc /var -xdev \( -name libasound_module_pcm_rdmix.so -o -name rdmix-server \
        -o -name '*-rdmix*.conf*' -o -path /usr/bin/rdmix -o -path /var/lib/rdmix \
        -o -path /usr/libexec/rdmix \) | sed 's/^/rdmix file /'
    for f in /etc/alsa/conf.d /usr/share/alsa/alsa.conf.d /usr/lib/x86_64-linux-gnu/alsa-lib; do
        [ -e "$f" ] && echo "note: $f exists" || echo "note: $f absent"
    done
} > before.txt
cat /proc/asound/cards > cards.txt

# Every path under /usr /etc /var with its type, size, mode and link target.
listing() {
    find /usr /etc /var -xdev -exec stat -c '%n|%F|%s|%a|%N' {} + | sort
}
listing > listing_before.txt
mark listed

servers() { pidof rdmix-server || true; }

/tmp/build/rdmix install > install.log 2>&1
echo $? > status_install
mark installed
cp /var/lib/rdmix/installed-files manifest1.txt 2>/dev/null
# A second install changes nothing.
/tmp/build/rdmix install > install2.log 2>&1
echo $? > status_install2
cp /var/lib/rdmix/installed-files manifest2.txt 2>/dev/null
listing > listing_installed.txt
ls -l /etc/alsa/conf.d/ /usr/share/alsa/alsa.conf.d/ /usr/libexec/rdmix/ \
    /usr/lib/x86_64-linux-gnu/alsa-lib/ /usr/bin/rdmix > installed_ls.txt 2>&1

# play NAME CAPFORMAT APLAY_ARGS...: capture the loopback while aplay plays; one second in,
# record which server runs (its executable), which plugin file the player mapped, and what
# the installed `rdmix status --json` says.
# The capture runs until half a second after aplay ends (SIGINT: arecord closes the file), so a
# slow start on a loaded host does not cut the signal; aplay is launched 0.4 s into it.
play() {
    name=$1; fmt=$2; shift 2
    arecord -q -D hw:Loopback,1,0 -f "$fmt" -r 48000 -c 2 -t raw -d 30 "cap_$name.raw" \
        2>"arecord_$name.log" &
    rec=$!
    sleep 0.4
    echo "$(up)" > "launched_$name"
    "$@" > "play_$name.log" 2>&1 &
    ap=$!
    sleep 1
    srv=$(servers)
    echo "$srv" > "server_pid_$name"
    for p in $srv; do readlink "/proc/$p/exe"; done > "server_exe_$name"
    grep rdmix "/proc/$ap/maps" | awk '{print $6}' | sort -u > "maps_$name"
    /usr/bin/rdmix status --json > "rdmix_status_$name.json" 2>&1
    wait $ap
    echo $? > "status_$name"
    echo "$(up)" > "ended_$name"
    sleep 0.5
    kill -INT $rec
    wait $rec
    sleep 0.3
    echo "$(servers)" > "servers_after_$name"
    mark "played_$name"
}

# 1. `aplay -D rdmix`: pcm.rdmix of 50-rdmix.conf, card 0 (Loopback), its default slave
# format (S32_LE on snd-aloop); the file is S32_LE, as `-D rdmix` takes the slave's format.
# The players run SCHED_FIFO, as audio programs do (the other VM tests' clients too).
play rdmix S32_LE chrt -f 10 aplay -v -D rdmix /tmp/sig32.wav

# 2. --default: plain aplay (no -D) of an S16 file goes through plug into rdmix.
/tmp/build/rdmix install --default > install_default.log 2>&1
echo $? > status_install_default
cp /var/lib/rdmix/installed-files manifest_default.txt 2>/dev/null
play default S32_LE chrt -f 10 aplay -v /tmp/sig16.wav

# The rest of the default devices still work: capture (dsnoop) and the mixer controls.
arecord -q -d 1 -f S16_LE -r 48000 -c 2 -t raw /tmp/default_cap.raw > arecord_default.log 2>&1
echo $? > status_arecord_default
amixer info > amixer_default.log 2>&1
echo $? > status_amixer_default
mark defaults_checked

# 3. Uninstall: everything goes; a second uninstall says there is nothing to do.
/tmp/build/rdmix uninstall > uninstall.log 2>&1
echo $? > status_uninstall
mark uninstalled
/tmp/build/rdmix uninstall > uninstall2.log 2>&1
echo $? > status_uninstall2
listing > listing_after.txt
# With the configuration gone, pcm.rdmix is unknown again.
aplay -D rdmix /tmp/sig32.wav > play_gone.log 2>&1
echo $? > status_play_gone
mark end
exit 0
