#!/bin/sh
# Guest side of tests/access.rs (busybox sh in the test VM, as root): who may join whose mixer.
# Users: alice (1000) and bob (1001), both in audio (29); carol (1002, created here) is not.
# Env: OUT (shared with the host: signals in, captures and logs out), SO, SERVER, PROBE (the
# socket_probe example), RDMIX (the rdmix tool).
#
#   squat_private  bob claims alice's private socket name first; alice's client must refuse to
#                  talk to his fake server (no Hello sent, EACCES naming the impostor)
#   squat_shared   carol (not in audio) claims the shared name; alice's shared client refuses
#   private        alice plays; bob's Hello and Query at her socket get EACCES naming ipc_perm;
#                  alice's own probes are served (the control); bob's aplay fails at once with a
#                  message naming alice's mixer and ipc_perm; alice's capture stays exact
#   shared         ipc_perm 0660 + ipc_gid audio: alice and bob play at once into one server;
#                  `rdmix status --json` by each lists both; carol's Hello, Query and aplay are
#                  refused with EACCES
#
# The shared PCM names the card by number: carol, not in audio, cannot open the control device
# that resolving "hw:Loopback" needs, and should be stopped by the mixer, not by that.
#
# Users' commands run through su; their output is redirected by this (root) shell, so nothing
# written on the share needs the users' permissions.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix /tmp/sigs
cp "$SO" "$SERVER" "$PROBE" "$RDMIX" /tmp/rdmix/ || exit 91
cp alice_private.wav alice_shared.raw bob_shared.raw /tmp/sigs/ || exit 92
chmod 755 /tmp/rdmix /tmp/sigs /tmp/rdmix/*
chmod 644 /tmp/sigs/*
PROBE=/tmp/rdmix/$(basename "$PROBE")
RDMIX=/tmp/rdmix/$(basename "$RDMIX")

grep -q '^carol:' /etc/passwd || {
    echo 'carol:x:1002:1002:carol:/tmp:/bin/sh' >> /etc/passwd
    echo 'carol:x:1002:' >> /etc/group
    echo 'carol:*:19000:0:99999:7:::' >> /etc/shadow
}
for u in alice bob carol; do echo "$u: $(su $u -c id 2>&1)"; done > ids.txt

card=$(awk '/\[Loopback/ { print $1; exit }' /proc/asound/cards)
echo "$card" > card
SLAVE='slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }'
CONFP=/tmp/rdmix/asound.conf
cat > $CONFP <<CONF
pcm_type.rdmix { lib "/tmp/rdmix/$(basename "$SO")" }
pcm.rdmix { type rdmix server "/tmp/rdmix/rdmix-server" $SLAVE }
pcm.rdmix_shared {
    type rdmix
    server "/tmp/rdmix/rdmix-server"
    ipc_perm 0660
    ipc_gid audio
    slave { pcm { type hw card $card device 0 subdevice 0 } format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
CONF
chmod 644 $CONFP
cp $CONFP asound.conf
A="ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$CONFP"

PRIV=rdmix/u1000/c${card}d0s0/k0
SHARED=rdmix/shared/c${card}d0s0/k0
echo "$PRIV" > sock_private
echo "$SHARED" > sock_shared

now() { cut -d' ' -f1 /proc/uptime; }
servers() { pidof rdmix-server || true; }
uid_of() { awk '/^Uid:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
sockets() { awk '$NF ~ /^@rdmix\// { print $NF }' /proc/net/unix; }
# wait_sock NAME: until a server listens on @NAME (up to 5 s)
wait_sock() {
    n=0
    until sockets | grep -qx "@$1" || [ $n -ge 50 ]; do usleep 100000; n=$((n + 1)); done
}
# probe STEP USER KIND NAME: socket_probe as USER; stdout to probe_STEP.txt, status too
probe() {
    su "$2" -c "$PROBE $3 $4" > "probe_$1.txt" 2>&1
    echo $? > "status_probe_$1"
    echo "probe $1 ($2 $3): $(cat probe_$1.txt)"
}
settle() {
    n=0
    while [ -n "$(servers)" ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
}

# ---------------------------------------------------------------- squatters
t0=$(now)
su bob -c "$PROBE squat $PRIV 3" > squat_private.txt 2>&1 &
sq=$!
usleep 500000
su alice -c "$A aplay -D rdmix /tmp/sigs/alice_private.wav" > play_squat_private.log 2>&1
echo $? > status_squat_private
wait $sq
echo "squat private: aplay status $(cat status_squat_private) in $(awk "BEGIN { print $(now) - $t0 - 0.5 }")s; $(tail -n 1 squat_private.txt)"

su carol -c "$PROBE squat $SHARED 3" > squat_shared.txt 2>&1 &
sq=$!
usleep 500000
su alice -c "$A aplay -D rdmix_shared -t raw -f S16_LE -r 48000 -c 2 /tmp/sigs/alice_shared.raw" > play_squat_shared.log 2>&1
echo $? > status_squat_shared
wait $sq
echo "squat shared: aplay status $(cat status_squat_shared); $(tail -n 1 squat_shared.txt)"
settle

# ---------------------------------------------------------------- private (the default)
chrt -f 2 arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 8 cap_private.raw 2> arecord_private.log &
rec=$!
usleep 400000
chrt -f 1 su alice -c "$A aplay -D rdmix /tmp/sigs/alice_private.wav" > play_alice_private.log 2>&1 &
alice=$!
wait_sock "$PRIV"
srv=$(servers)
echo "$srv" > servers_private
echo "$(uid_of "$srv")" > server_uid_private
sockets > sockets_private
probe bob_hello_private bob hello "$PRIV"
probe bob_query_private bob query "$PRIV"
probe alice_query_private alice query "$PRIV"
probe alice_hello_private alice hello "$PRIV"
t0=$(now)
su bob -c "$A aplay -D rdmix /tmp/sigs/alice_private.wav" > play_bob_private.log 2>&1
echo $? > status_bob_private
awk "BEGIN { print $(now) - $t0 }" > secs_bob_private
echo "bob's aplay: status $(cat status_bob_private) after $(cat secs_bob_private)s"
echo "$(servers)" > servers_after_bob
wait $alice
echo $? > status_alice_private
wait $rec
echo "private: alice's aplay status $(cat status_alice_private)"
settle

# ---------------------------------------------------------------- shared (ipc_perm 0660, audio)
chrt -f 2 arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -d 8 cap_shared.raw 2> arecord_shared.log &
rec=$!
usleep 400000
RAW="-t raw -f S16_LE -r 48000 -c 2"
chrt -f 1 su alice -c "$A aplay -D rdmix_shared $RAW /tmp/sigs/alice_shared.raw" > play_alice_shared.log 2>&1 &
alice=$!
wait_sock "$SHARED"
usleep 300000
chrt -f 1 su bob -c "$A aplay -D rdmix_shared $RAW /tmp/sigs/bob_shared.raw" > play_bob_shared.log 2>&1 &
bob=$!
# Until the mixer counts both clients (up to 4 s).
n=0
until su alice -c "$RDMIX status --json" 2>/dev/null | grep -q '"live_clients":2' || [ $n -ge 20 ]; do
    usleep 200000; n=$((n + 1))
done
su alice -c "$RDMIX status --json" > status_json_alice 2>&1
su bob -c "$RDMIX status --json" > status_json_bob 2>&1
# Each client the mixer lists: pid, uid, program.
for p in $(grep -o '"pid":[0-9]*' status_json_alice | cut -d: -f2); do
    echo "$p $(uid_of $p) $(cat /proc/$p/comm)"
done > clients_shared
srv=$(servers)
echo "$srv" > servers_shared
echo "$(uid_of "$srv")" > server_uid_shared
sockets > sockets_shared
probe carol_hello_shared carol hello "$SHARED"
probe carol_query_shared carol query "$SHARED"
probe bob_query_shared bob query "$SHARED"
su carol -c "$A aplay -D rdmix_shared $RAW /tmp/sigs/bob_shared.raw" > play_carol_shared.log 2>&1
echo $? > status_carol_shared
wait $alice
echo $? > status_alice_shared
wait $bob
echo $? > status_bob_shared
wait $rec
echo "shared: alice $(cat status_alice_shared), bob $(cat status_bob_shared), carol $(cat status_carol_shared)"

settle
echo "$(servers)" > servers_at_end
sockets > sockets_at_end
ls -A /dev/shm > shm_at_end
exit 0
