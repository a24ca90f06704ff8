#!/bin/sh
# Guest side of tests/soak/churn.sh (busybox sh in the test VM, as root).
# Env: OUT (shared with the host), SO, SERVER, RDMIX, MINUTES.
#
# One long-lived client (the keeper, playing silence) keeps one rdmix-server alive for the whole
# soak. Meanwhile batches of 1-3 concurrent clients start and stop without pause: each plays for
# a random time and then ends normally (aplay -s), or is stopped by SIGTERM or by SIGKILL; some
# use MMAP access. The server's pid, fd count and VmRSS are sampled at the start, every few
# minutes and at the end. At the end the mixer's slot count must equal the live client count
# (the keeper), and once the keeper is gone nothing may remain: no server, no socket, nothing
# in /dev/shm. Prints a summary; exits non-zero if a check failed.
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix
cp "$SO" "$SERVER" "$RDMIX" /tmp/rdmix/ || exit 91
RDMIX=/tmp/rdmix/$(basename "$RDMIX")
cat > /tmp/rdmix/asound.conf <<CONF
pcm_type.rdmix { lib "/tmp/rdmix/$(basename "$SO")" }
pcm.rdmix {
    type rdmix
    server "/tmp/rdmix/rdmix-server"
    slave { pcm "hw:Loopback,0,0" format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 4096 }
}
CONF
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:/tmp/rdmix/asound.conf
RAW="-q -t raw -f S16_LE -r 48000 -c 2"
mkdir -p logs
fail=0
bad() { echo "churn: FAIL: $*"; fail=1; }

now() { cut -d. -f1 /proc/uptime; }
# rnd N: a random number in 0..N-1
rnd() { echo $(( $(od -An -N2 -tu2 /dev/urandom) % $1 )); }
sample() { # sample LABEL: the server's pid, fd count and VmRSS
    p=$(pidof rdmix-server)
    fds=$(ls /proc/$p/fd 2>/dev/null | wc -l)
    rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$p/status 2>/dev/null)
    echo "$1 t=$(now) server_pid=$p fds=$fds rss_kb=$rss runs=$runs" | tee -a samples
}

runs=0 normal=0 term=0 killed=0 mmap=0 open_fail=0
: > samples

aplay -D rdmix $RAW /dev/zero > logs/keeper.log 2>&1 &
keeper=$!
n=0
until grep -q '@rdmix/' /proc/net/unix || [ $n -ge 100 ]; do usleep 100000; n=$((n + 1)); done
usleep 500000
srv0=$(pidof rdmix-server)
[ -n "$srv0" ] || { bad "no server after the keeper started: $(cat logs/keeper.log)"; exit 1; }
sample start

# one_client I: one churn client (run in the background)
one_client() {
    i=$1
    mode=$(rnd 3)
    extra=""
    [ "$(rnd 4)" = 0 ] && extra="-M"
    ms=$((100 + $(rnd 2900)))
    usleep $(( $(rnd 300) * 1000 ))
    case $mode in
    0)  # plays ms worth of frames and ends by itself
        aplay -D rdmix $RAW $extra -s $((ms * 48)) /dev/zero > "logs/c$i.log" 2>&1
        echo "normal $? $extra" > "logs/c$i.st" ;;
    *)  aplay -D rdmix $RAW $extra /dev/zero > "logs/c$i.log" 2>&1 &
        p=$!
        usleep $((ms * 1000))
        # (the shell's "Killed" notice goes to /dev/null)
        { if [ $mode = 1 ]; then kill -TERM $p; else kill -KILL $p; fi; wait $p; } 2>/dev/null
        st=$?
        how=kill
        [ $mode = 1 ] && how=term
        echo "$how $st $extra" > "logs/c$i.st" ;;
    esac
}

end=$(( $(now) + MINUTES * 60 ))
next_sample=$(( $(now) + 300 ))
while [ "$(now)" -lt $end ]; do
    k=$((1 + $(rnd 3)))
    pids=""
    j=0
    while [ $j -lt $k ]; do
        one_client $((runs + j)) &
        pids="$pids $!"
        j=$((j + 1))
    done
    for p in $pids; do wait $p; done
    j=0
    while [ $j -lt $k ]; do
        i=$((runs + j))
        read -r how st ex < "logs/c$i.st"
        case $how in
        normal) normal=$((normal + 1))
            if [ "$st" != 0 ]; then
                open_fail=$((open_fail + 1))
                [ $open_fail -le 5 ] && echo "churn: client $i (normal end) exited $st: $(head -c 300 logs/c$i.log)"
            fi ;;
        term) term=$((term + 1)) ;;
        kill) killed=$((killed + 1)) ;;
        esac
        [ -n "$ex" ] && mmap=$((mmap + 1))
        # Keep the logs of failures only.
        if [ "$how" = normal ] && [ "$st" != 0 ]; then :; else rm -f "logs/c$i.log"; fi
        rm -f "logs/c$i.st"
        j=$((j + 1))
    done
    runs=$((runs + k))
    if [ "$(now)" -ge $next_sample ]; then
        sample periodic
        next_sample=$(( $(now) + 300 ))
    fi
done

# Let the server notice the last connections close.
sleep 1
sample end
srv1=$(pidof rdmix-server)
[ "$srv1" = "$srv0" ] || bad "the server changed during the soak: $srv0 -> $srv1"
kill -0 $keeper 2>/dev/null || bad "the keeper died: $(cat logs/keeper.log)"
live=$(pidof aplay | wc -w)
"$RDMIX" status --json > status_end.json 2>&1
slots=$(sed -n 's/.*"live_clients":\([0-9]*\).*/\1/p' status_end.json)
listed=$(grep -o '"pid":[0-9]*' status_end.json | wc -l)
echo "end: live aplay clients $live, live_clients $slots, slots listed $listed"
[ "$slots" = "$live" ] && [ "$listed" = "$live" ] || bad "slot count $slots (listed $listed) != live clients $live: $(cat status_end.json)"
grep -q "\"pid\":$keeper[,}]" status_end.json || bad "the keeper ($keeper) is not listed: $(cat status_end.json)"

kill -TERM $keeper
wait $keeper
n=0
while pidof rdmix-server > /dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
left_srv=$(pidof rdmix-server || true)
left_sock=$(grep '@rdmix/' /proc/net/unix || true)
left_shm=$(ls -A /dev/shm)
[ -z "$left_srv" ] || bad "rdmix-server still running after the keeper left: $left_srv"
[ -z "$left_sock" ] || bad "rdmix sockets left: $left_sock"
[ -z "$left_shm" ] || bad "files left in /dev/shm: $left_shm"

s0=$(head -n 1 samples)
s1=$(tail -n 1 samples)
cat > summary <<SUM
churn soak: $MINUTES min, $runs client runs ($normal normal ends, $term SIGTERM, $killed SIGKILL; $mmap with MMAP access); normal ends that failed: $open_fail
server pid $srv0 throughout: $([ "$srv1" = "$srv0" ] && echo yes || echo "NO ($srv1)")
server at start: $(echo "$s0" | sed 's/.*\(fds=[0-9]* rss_kb=[0-9]*\).*/\1/')
server at end:   $(echo "$s1" | sed 's/.*\(fds=[0-9]* rss_kb=[0-9]*\).*/\1/')
end: live clients $live, mixer slots $slots; after the keeper left: server ${left_srv:-none}, sockets ${left_sock:-none}, /dev/shm ${left_shm:-empty}
result: $([ $fail = 0 ] && echo PASS || echo FAIL)
SUM
echo "---- samples ----"
cat samples
echo "---- summary ----"
cat summary
[ $open_fail = 0 ] || fail=1
exit $fail
