#!/bin/sh
# Guest side of the side-by-side benchmark (tests/bench/run.sh; busybox sh in the test VM).
# Measures alsa-lib's dmix and rdmix on hw:Loopback,0,0 (S16_LE, 48 kHz, 2 ch) in this one boot
# and leaves raw results in $OUT (results.txt, strace_*.txt, cap_*.raw); the host turns them
# into BENCHMARKS.md.
#
# Env: OUT (shared dir, holds sig/ from `bench_report prepare`), SO, SERVER, CLIENT
# (examples/bench_client), MODE (full | smoke: one N, seconds of audio, for CI).
#
# Every client runs SCHED_FIFO priority 1 (arecord 2), as audio programs do and as the mixing
# test does; both mixers run under the same conditions. results.txt lines:
#   cpu MIXER PERIOD BUFFER N SECONDS busy=JIFFIES total=JIFFIES | CLIENT-LINE ...   (one per client)
#   open MIXER cold|join I CLIENT-LINE
#   floor MIXER PERIOD PERIODS LOAD STATUS CLIENT-LINE...
#   syscalls MIXER PERIOD BUFFER SECONDS CLIENT-LINE (the straced client; trace in strace_*.txt)
set -u
cd "$OUT" || exit 90
mkdir -p /tmp/rdmix /tmp/b
cp "$SO" "$SERVER" "$CLIENT" /tmp/rdmix/ || exit 91
cp -r sig /tmp/sig || exit 92
C=/tmp/rdmix/bench_client
R=$OUT/results.txt
: > "$R"
MODE=${MODE:-full}

# One PCM per slave geometry and mixer, same slave parameters for both.
conf=$OUT/asound.conf
echo 'pcm_type.rdmix { lib "/tmp/rdmix/libasound_module_pcm_rdmix.so" }' > "$conf"
key=7300
for pb in 64:128 64:256 128:256 128:512 256:512 256:1024 512:1024 512:2048 1024:4096; do
    p=${pb%:*} b=${pb#*:}
    slave="slave { pcm \"hw:Loopback,0,0\" format S16_LE rate 48000 channels 2 period_size $p buffer_size $b }"
    echo "pcm.rdmix_${p}_$b { type rdmix server \"/tmp/rdmix/rdmix-server\" $slave }" >> "$conf"
    echo "pcm.dmix_${p}_$b { type dmix ipc_key $key ipc_perm 0666 $slave }" >> "$conf"
    key=$((key + 1))
done
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$conf

echo "machine guest_kernel=$(uname -r) guest_cpus=$(grep -c ^processor /proc/cpuinfo) guest_cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//; s/ /_/g')" >> "$R"

settle() { # until no mixer of a previous step is left
    _s=0
    while pidof rdmix-server >/dev/null && [ $_s -lt 50 ]; do usleep 100000; _s=$((_s+1)); done
    # dmix: the segment goes with its last client; give the kernel a moment to close the PCM.
    usleep 200000
}

busy() { # jiffies busy and total, all CPUs, from /proc/stat
    read -r _ u n s i w q sq st _ < /proc/stat
    echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}

# group PCM PERIOD BUFFER N SECONDS EXTRA...: N clients opened on FIFOs, released together;
# leaves one result line per client in /tmp/b/res_*.
group() {
    pcm=$1 per=$2 buf=$3 n=$4 secs=$5; shift 5
    rm -f /tmp/b/*
    pids="" i=0
    while [ $i -lt "$n" ]; do
        mkfifo "/tmp/b/fifo_$i"
        chrt -f 1 $C "$pcm" "$per" "$buf" "$secs" --fifo "/tmp/b/fifo_$i" --out "/tmp/b/res_$i" "$@" 2>>"$OUT/client_errors.log" &
        pids="$pids $!"
        i=$((i + 1))
    done
    # Let every client open and configure its PCM (TCG: 64 start-ups take a while).
    usleep $((300000 + 60000 * n))
    i=0
    while [ $i -lt "$n" ]; do : > "/tmp/b/fifo_$i" & i=$((i + 1)); done
}

wait_group() { for p in $pids; do wait "$p"; done; }

client_lines() { for f in /tmp/b/res_*; do [ -f "$f" ] && printf ' | %s' "$(cat "$f")"; done; }

if [ "$MODE" = smoke ]; then
    CPU_CFG="256:1024"; NS="2"; SECS=2; OPEN_REPS=2; FLOOR_P="256"; FLOOR_K="4"; FLOOR_S=2
    FLOOR_LOADS="idle"; SYS_CFG="256:1024"
else
    CPU_CFG="256:1024 1024:4096"; NS="1 2 8 16 64"; SECS=8; OPEN_REPS=10; FLOOR_P="64 128 256 512"
    FLOOR_K="2 4"; FLOOR_S=10; FLOOR_LOADS="idle hog"; SYS_CFG="256:1024 1024:4096"
fi

# ---- 1. client CPU per second of audio
for cfg in $CPU_CFG; do
    per=${cfg%:*} buf=${cfg#*:}
    for n in $NS; do
        for m in dmix rdmix; do
            settle
            group "${m}_${per}_$buf" "$per" "$buf" "$n" "$SECS"
            b0=$(busy)
            wait_group
            b1=$(busy)
            set -- $b0 $b1
            echo "cpu $m $per $buf $n $SECS busy=$(($3 - $1)) total=$(($4 - $2))$(client_lines)" >> "$R"
            echo "cpu $m $per/$buf N=$n done"
        done
    done
done

# ---- 2. syscalls of a client among two: counted in the kernel (ftrace histogram of
# raw_syscalls:sys_enter for comm bench_client, both clients, no ptrace slowdown); then a second
# run with the second client under strace, to see which fds its calls go to.
EV=""
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
[ -w /sys/kernel/tracing/events/raw_syscalls/sys_enter/trigger ] && EV=/sys/kernel/tracing/events/raw_syscalls/sys_enter
HIST='hist:keys=id.syscall:vals=hitcount:sort=hitcount.descending if comm == "bench_client"'
for cfg in $SYS_CFG; do
    per=${cfg%:*} buf=${cfg#*:}
    for m in dmix rdmix; do
        for traced in 0 1; do
            [ $traced = 0 ] && [ -z "$EV" ] && continue
            settle
            rm -f /tmp/b/*
            mkfifo /tmp/b/fifo_0 /tmp/b/fifo_1
            chrt -f 1 $C "${m}_${per}_$buf" "$per" "$buf" "$SECS" --fifo /tmp/b/fifo_0 --out /tmp/b/res_0 2>>"$OUT/client_errors.log" &
            p0=$!
            usleep 300000
            if [ $traced = 1 ]; then
                chrt -f 1 strace -f -ttt -o "$OUT/strace_${m}_${per}_$buf.txt" $C "${m}_${per}_$buf" "$per" "$buf" "$SECS" --fifo /tmp/b/fifo_1 --out /tmp/b/res_1 2>>"$OUT/client_errors.log" &
            else
                chrt -f 1 $C "${m}_${per}_$buf" "$per" "$buf" "$SECS" --fifo /tmp/b/fifo_1 --out /tmp/b/res_1 2>>"$OUT/client_errors.log" &
            fi
            p1=$!
            usleep 1500000
            if [ $traced = 0 ]; then
                echo "$HIST" > "$EV/trigger"
            fi
            : > /tmp/b/fifo_0 & : > /tmp/b/fifo_1 &
            wait $p0; wait $p1
            if [ $traced = 0 ]; then
                cat "$EV/hist" > "$OUT/syshist_${m}_${per}_$buf.txt"
                echo "!$HIST" > "$EV/trigger"
                echo "syshist $m $per $buf $SECS$(client_lines)" >> "$R"
            else
                echo "syscalls $m $per $buf $SECS $(cat /tmp/b/res_1 2>/dev/null)" >> "$R"
            fi
        done
        echo "syscalls $m $per/$buf done"
    done
done

# ---- 3. open latency: cold (no mixer running) and joining a running mix
for m in dmix rdmix; do
    pcm=${m}_1024_4096
    i=0
    while [ $i -lt $OPEN_REPS ]; do
        settle
        chrt -f 1 $C $pcm 1024 4096 0.1 --out /tmp/b/open 2>>"$OUT/client_errors.log"
        echo "open $m cold $i $(cat /tmp/b/open)" >> "$R"; rm -f /tmp/b/open
        i=$((i + 1))
    done
    settle
    chrt -f 1 $C $pcm 1024 4096 $((OPEN_REPS * 2 + 5)) --out /tmp/b/keeper 2>>"$OUT/client_errors.log" &
    kp=$!
    usleep 1000000
    i=0
    while [ $i -lt $OPEN_REPS ]; do
        chrt -f 1 $C $pcm 1024 4096 0.1 --out /tmp/b/open 2>>"$OUT/client_errors.log"
        echo "open $m join $i $(cat /tmp/b/open)" >> "$R"; rm -f /tmp/b/open
        usleep 200000
        i=$((i + 1))
    done
    kill $kp 2>/dev/null; wait $kp 2>/dev/null
    echo "open $m done"
done

# ---- 4. latency floor: smallest period at which 4 clients play FLOOR_S seconds without an xrun
hog_pids=""
for load in $FLOOR_LOADS; do
    if [ "$load" = hog ]; then
        for h in 1 2; do (while :; do :; done) & hog_pids="$hog_pids $!"; done
    fi
    for m in dmix rdmix; do
        for k in $FLOOR_K; do
            for per in $FLOOR_P; do
                buf=$((per * k))
                settle
                group "${m}_${per}_$buf" "$per" "$buf" 4 "$FLOOR_S" --stop-on-xrun
                # End the run at the first xrun of any client.
                while :; do
                    alive=0
                    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
                    [ $alive = 0 ] && break
                    if cat /tmp/b/res_* 2>/dev/null | grep -q 'xruns=[1-9]'; then
                        for p in $pids; do kill "$p" 2>/dev/null; done
                    fi
                    usleep 200000
                done
                wait_group
                st=ok
                if cat /tmp/b/res_* 2>/dev/null | grep -q 'xruns=[1-9]'; then st=xrun
                elif [ "$(cat /tmp/b/res_* 2>/dev/null | grep -c 'xruns=0 ')" != 4 ]; then st=fail; fi
                echo "floor $m $per $k $load $st$(client_lines)" >> "$R"
                echo "floor $m $per x$k $load: $st"
                [ $st = ok ] && break
            done
        done
    done
    for h in $hog_pids; do kill "$h" 2>/dev/null; wait "$h" 2>/dev/null; done
    hog_pids=""
done

# ---- 5. edge exactness: simultaneous two-client starts (tests/mixing.rs's pair machinery)
while read -r name pcm count keeper; do
    settle
    frames=$((48000 * (count * 13 / 10 + 4)))
    chrt -f 2 arecord -q -D hw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -t raw -s "$frames" "cap_$name.raw" 2>"arecord_$name.log" &
    rec=$!
    usleep 300000
    kp=""
    if [ "$keeper" = 1 ]; then
        chrt -f 1 aplay -q -D "$pcm" -t raw -f S16_LE -r 48000 -c 2 /dev/zero >/dev/null 2>&1 &
        kp=$!
        usleep 500000
    fi
    : > "status_$name"
    k=0
    while [ $k -lt "$count" ]; do
        chrt -f 1 aplay -D "$pcm" -q -t raw -f S16_LE -r 48000 -c 2 "/tmp/sig/${name}_${k}a" >/dev/null 2>&1 &
        a=$!
        chrt -f 1 aplay -D "$pcm" -q -t raw -f S16_LE -r 48000 -c 2 "/tmp/sig/${name}_${k}b" >/dev/null 2>&1 &
        b=$!
        usleep 700000
        wait $a; echo $? >> "status_$name"
        wait $b; echo $? >> "status_$name"
        k=$((k + 1))
    done
    [ -n "$kp" ] && kill "$kp" 2>/dev/null && wait "$kp" 2>/dev/null
    wait $rec
    echo "pairs $name: $(grep -vc '^0$' "status_$name") failed clients of $((count * 2))"
done < pairs
settle
exit 0
