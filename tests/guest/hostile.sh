#!/bin/sh
# Guest side of tests/hostile.rs (busybox sh in the test VM): two clients play known signals
# through one rdmix server while examples/hostile attacks that server's socket.
# Env: OUT (shared dir, holds sig_a.raw, sig_b.raw), SO, SERVER, HOSTILE (binaries),
#      MESSAGES (hostile packets to send), CAPTURE_FRAMES.
# Leaves in $OUT: cap.raw, status_a, status_b, status_hostile, hostile.log, server_pid_before,
# server_pid_after, server_fds_before, server_fds_after (+ fd listings), alive_after_hostile.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix /tmp/sig
cp "$SO" "$SERVER" "$HOSTILE" /tmp/rdmix/ || exit 91
cp sig_a.raw sig_b.raw /tmp/sig/ || exit 92
cat > asound.conf <<CONF
pcm_type.rdmix { lib "/tmp/rdmix/$(basename "$SO")" }
pcm.rdmix {
    type rdmix
    server "/tmp/rdmix/rdmix-server"
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 8192 }
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$OUT/asound.conf
export RDMIX_STATS=1

# The capture goes to tmpfs, with a 2 s buffer: written to the 9p share under this load, a write
# once blocked arecord for longer than its default 0.5 s buffer and the capture lost 24000
# frames (an overrun, which -q would hide).
chrt -f 2 arecord -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -B 2000000 -s "$CAPTURE_FRAMES" /tmp/cap.raw 2>arecord.log &
rec=$!
usleep 300000
# Both players open their PCM first and block on a FIFO; the data is then released at once.
rm -f /tmp/fifo_a /tmp/fifo_b && mkfifo /tmp/fifo_a /tmp/fifo_b
chrt -f 1 aplay -q -D rdmix -t raw -f S16_LE -r 48000 -c 2 /tmp/fifo_a >log_a 2>&1 &
pa=$!
chrt -f 1 aplay -q -D rdmix -t raw -f S16_LE -r 48000 -c 2 /tmp/fifo_b >log_b 2>&1 &
pb=$!

# The server's socket name, from the kernel's table of unix sockets (abstract: '@' + name).
sock=""
n=0
while [ -z "$sock" ] && [ $n -lt 100 ]; do
    sock=$(grep -o '@rdmix/[^ ]*' /proc/net/unix | head -n 1)
    [ -z "$sock" ] && usleep 100000
    n=$((n + 1))
done
echo "$sock" > socket_name
# Wait until the server counts both clients (each query retries for up to 3 s).
n=0
until /tmp/rdmix/hostile --socket "$sock" --messages 0 --expect-clients 2 >/dev/null 2>&1; do
    n=$((n + 1))
    [ $n -ge 10 ] && break
done
# The feeders run SCHED_FIFO like the players: at normal priority they compete with the attack
# (and the server, which inherits the first player's SCHED_FIFO) and may leave a player's FIFO
# empty long enough for an underrun.
chrt -f 1 cat /tmp/sig/sig_a.raw > /tmp/fifo_a &
chrt -f 1 cat /tmp/sig/sig_b.raw > /tmp/fifo_b &
usleep 500000

pid=$(pidof rdmix-server)
echo "$pid" > server_pid_before
{ chrt -p "$pid"; chrt -p $pa; } > sched 2>&1
ls -l /proc/"$pid"/fd > server_fd_list_before 2>&1
ls /proc/"$pid"/fd | wc -l > server_fds_before
echo "attacking $sock (server pid $pid, $(cat server_fds_before) fds) with $MESSAGES messages"
start=$(cut -d' ' -f1 /proc/uptime)
/tmp/rdmix/hostile --socket "$sock" --messages "$MESSAGES" --expect-clients 2 --verbose >hostile.log 2>hostile.err
echo $? > status_hostile
end=$(cut -d' ' -f1 /proc/uptime)
echo "$start $end" > hostile_uptime
alive=0
kill -0 $pa 2>/dev/null && alive=$((alive + 1))
kill -0 $pb 2>/dev/null && alive=$((alive + 1))
echo $alive > alive_after_hostile
cat hostile.log
# Silent connections expire after 2 s; then the fd table must be as before.
sleep 3
pidof rdmix-server > server_pid_after
ls -l /proc/"$pid"/fd > server_fd_list_after 2>&1
ls /proc/"$pid"/fd | wc -l > server_fds_after
echo "hostile status $(cat status_hostile), uptime $start -> $end, clients alive after: $alive, server fds $(cat server_fds_before) -> $(cat server_fds_after)"

wait $pa; echo $? > status_a
wait $pb; echo $? > status_b
wait $rec
echo $? > status_arecord
cp /tmp/cap.raw cap.raw
echo "clients: $(cat status_a) $(cat status_b)"
exit 0
