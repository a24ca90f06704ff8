//! Crash safety, in the test VM on snd-aloop (tests/guest/crash.sh):
//!
//! - a client SIGKILLed at a random moment mid-stream, 50 times in CI
//!   (`RDMIX_CRASH_KILL_LOOPS`; 100 in earlier full runs): the two survivors, whose
//!   counters share the channels with the victim's (high and low bits of the same samples), are
//!   heard exactly; the victim's samples are an exact prefix of its signal and never come back
//!   (no ghost a buffer later); the server counts 2 clients right after the kill;
//! - the server SIGKILLed under two players, 10 times in CI (`RDMIX_CRASH_SERVER_LOOPS`): they finish exactly; a client opened
//!   meanwhile plays exactly or is refused with the documented message; afterwards no server
//!   and no socket is left, and a fresh client plays exactly.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;

const HI_MOD: u64 = 2047;
const LO_MOD: u64 = 15;

fn loops(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The slave ring of the test PCMs (tests/guest/crash.sh).
const SLAVE_BUFFER: usize = 8192;

/// Whether capture frames `at..at + len` repeat, on both channels, the frames one slave buffer
/// earlier exactly (and are not silence).
fn is_buffer_replay(cap: &[[i16; 2]], at: usize, len: usize) -> bool {
    at >= SLAVE_BUFFER
        && at + len <= cap.len()
        && (at..at + len).all(|i| cap[i] == cap[i - SLAVE_BUFFER])
        && cap[at..at + len].iter().any(|f| *f != [0, 0])
}

/// High-bit counter values (survivors) and low-bit ones (victim, new clients) of one channel.
fn split(cap: &[[i16; 2]], c: usize) -> (Vec<u32>, Vec<u32>) {
    cap.iter()
        .map(|f| {
            let s = f[c] as u16 as u32;
            (s >> 4, s & 15)
        })
        .unzip()
}

fn kv_lines(text: &str) -> Vec<HashMap<String, String>> {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

/// The survivors' counters: exactly `n` streams, each every frame `0..frames` once and in order.
/// A stream may pause in silence and go on with the very next frame (a client's own underrun,
/// when the VM starves it: nothing lost or repeated); returns how many such gaps there were.
///
/// One exception, counted in `stall_replays`: a run that sits in such a gap and repeats, on both
/// channels, exactly the captured frames one slave buffer earlier. That is the loopback, not the
/// mix: when the VM stalls longer than the slave buffer, snd-aloop's timer catches up by more than
/// a buffer at once and copies the playback ring's old content into the capture a second time
/// (every client underruns in the same gap, as the stall starves them all). A real device would
/// replay its ring the same way under such a stall, with dmix as with rdmix.
fn check_complete(
    runs: &[Seg],
    n: usize,
    frames: u64,
    what: &str,
    cap: &[[i16; 2]],
    stall_replays: &mut usize,
) -> Result<usize, String> {
    let mut streams: Vec<(u64, u64)> = Vec::new(); // (first, end) of each stream
    let mut gaps = 0;
    let mut bad = Vec::new();
    for r in runs {
        match streams.last_mut() {
            // restarting_runs numbers a run by its residue: a continuation's index is its own
            // residue, so compare residues.
            Some(s) if r.gap > 0 && r.first == s.1 % HI_MOD && s.1 < frames => {
                s.1 += r.len;
                gaps += 1;
            }
            _ if r.first == 0 => streams.push((0, r.len)),
            _ if r.gap > 0 && is_buffer_replay(cap, r.at, r.len as usize) => *stall_replays += 1,
            _ => bad.push(format!("{}..{} at {}", r.first, r.end(), r.at)),
        }
    }
    let short: Vec<String> = streams
        .iter()
        .filter(|s| s.1 != frames)
        .take(5)
        .map(|s| format!("0..{}", s.1))
        .collect();
    if streams.len() != n || !bad.is_empty() || !short.is_empty() {
        return Err(format!(
            "{what}: {} streams (want {n} of {frames} frames each); incomplete {short:?}, stray \
             runs {:?}",
            streams.len(),
            &bad[..bad.len().min(5)]
        ));
    }
    Ok(gaps)
}

#[test]
fn crash_safety_in_vm() {
    let kill_loops = loops("RDMIX_CRASH_KILL_LOOPS", 50);
    let server_loops = loops("RDMIX_CRASH_SERVER_LOOPS", 10);
    let (so, server) = artifacts();
    let sp = example("state_play");
    let cli = std::path::PathBuf::from(env!("CARGO_BIN_EXE_rdmix"));
    let dir = out_dir("crash");
    let script = project_root().join("tests/guest/crash.sh");
    let (code, stdout) = run_vm(
        &script,
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("STATE_PLAY", sp.display().to_string()),
            ("RDMIX_CLI", cli.display().to_string()),
            ("KILL_LOOPS", kill_loops.to_string()),
            ("SERVER_LOOPS", server_loops.to_string()),
        ],
        1200,
    );
    assert_eq!(code, 0, "VM run failed");
    assert!(
        stdout.contains("crash: server loops done"),
        "guest did not finish"
    );
    let mut failures = Vec::new();

    // ---- phase 1
    let runs = kv_lines(&read(&dir, "kill.txt"));
    let bad_status: Vec<_> = runs
        .iter()
        .filter(|m| {
            m.get("a").map(String::as_str) != Some("0")
                || m.get("b").map(String::as_str) != Some("0")
        })
        .collect();
    // The slot count must be the survivors still running (both were mixing before the kill):
    // 2, unless one finished around the query (then between the counts seen just before and
    // just after it).
    let num = |m: &HashMap<String, String>, k: &str| -> i64 {
        // "none": no mixer answered, because the survivors had both finished and the server
        // had gone (0 clients).
        m.get(k)
            .map(|v| if v == "none" { "0" } else { v.as_str() })
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    let bad_live: Vec<_> = runs
        .iter()
        .filter(|m| {
            let live = num(m, "live_after_kill");
            !(num(m, "alive_after")..=num(m, "alive_before")).contains(&live)
        })
        .map(|m| m.get("loop").cloned().unwrap_or_default())
        .collect();
    let exactly_two = runs
        .iter()
        .filter(|m| num(m, "live_after_kill") == 2)
        .count();
    if runs.len() != kill_loops || !bad_status.is_empty() {
        failures.push(format!(
            "kill: {} loops logged, survivors failed in {bad_status:?}",
            runs.len()
        ));
    }
    if !bad_live.is_empty() {
        failures.push(format!(
            "kill: slot count not the number of live survivors after the kill in loops \
             {bad_live:?}"
        ));
    }
    let mut stall_replays = 0;
    let cap = read_raw_s16_stereo(&dir.join("cap_kill.raw"));
    let mut victim_frames = Vec::new();
    for c in 0..2 {
        let (hi, lo) = split(&cap, c);
        match check_complete(
            &restarting_runs(&hi, HI_MOD),
            kill_loops,
            48_000,
            &format!("kill: survivor on channel {c}"),
            &cap,
            &mut stall_replays,
        ) {
            Ok(gaps) if gaps > 0 => println!(
                "crash: kill: survivor on channel {c}: {gaps} underrun gaps of its own (the \
                 stream went on with the next frame)"
            ),
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
        // The victim: per loop one stream from its first frame, which may pause in silence (its
        // own underrun) and go on with the very next frame; nothing else, ever (a ghost of its
        // frames a buffer later would not continue the count).
        let lo_runs = restarting_runs(&lo, LO_MOD);
        let mut streams: Vec<u64> = Vec::new();
        let mut gaps = 0;
        let mut stray = Vec::new();
        for r in &lo_runs {
            match streams.last_mut() {
                Some(end) if r.gap > 0 && r.first == *end % LO_MOD && r.first != 0 => {
                    *end += r.len;
                    gaps += 1;
                }
                _ if r.first == 0 => streams.push(r.len),
                _ if r.gap > 0 && is_buffer_replay(&cap, r.at, r.len as usize) => {
                    stall_replays += 1
                }
                _ => stray.push(format!("{}..{} at {}", r.first, r.end(), r.at)),
            }
        }
        if !stray.is_empty() || streams.len() > kill_loops {
            failures.push(format!(
                "kill: victim's samples on channel {c} outside an exact prefix: {} streams, \
                 stray {:?}",
                streams.len(),
                &stray[..stray.len().min(5)]
            ));
        }
        if gaps > 0 {
            println!("crash: kill: victim on channel {c}: {gaps} underrun gaps of its own");
        }
        if c == 0 {
            victim_frames = streams;
        }
    }
    if !victim_frames.is_empty() {
        println!(
            "crash: kill: {} loops; victim heard for {}..{} frames before its death; survivors \
             exact; slot count right after the kill: 2 in {exactly_two} loops (the rest: a \
             survivor had finished)",
            runs.len(),
            victim_frames.iter().min().unwrap_or(&0),
            victim_frames.iter().max().unwrap_or(&0)
        );
    }

    // ---- phase 2
    let runs = kv_lines(&read(&dir, "server.txt"));
    let mut joined = 0;
    let mut refused = 0;
    for m in &runs {
        let get = |k: &str| m.get(k).cloned().unwrap_or_default();
        let l = get("loop");
        if get("a") != "0" || get("b") != "0" {
            failures.push(format!("server loop {l}: a player failed: {m:?}"));
        }
        if get("left_servers") != "0" || get("left_sockets") != "0" {
            failures.push(format!("server loop {l}: left behind: {m:?}"));
        }
        if get("d") != "0" {
            failures.push(format!(
                "server loop {l}: the fresh client failed: {}",
                read(&dir, &format!("d_err_{l}.txt"))
            ));
        }
        if get("c") == "0" {
            joined += 1;
        } else {
            let err = read(&dir, &format!("c_err_{l}.txt"));
            if err.contains("busy") {
                refused += 1;
            } else {
                failures.push(format!(
                    "server loop {l}: the client opened after the kill failed without the \
                     documented message: {err}"
                ));
            }
        }
    }
    if runs.len() != server_loops {
        failures.push(format!("server: {} loops logged", runs.len()));
    }
    let cap = read_raw_s16_stereo(&dir.join("cap_server.raw"));
    for c in 0..2 {
        let (hi, lo) = split(&cap, c);
        match check_complete(
            &restarting_runs(&hi, HI_MOD),
            server_loops,
            57_600,
            &format!("server: player on channel {c}"),
            &cap,
            &mut stall_replays,
        ) {
            Ok(gaps) if gaps > 0 => {
                println!("crash: server: player on channel {c}: {gaps} underrun gaps of its own")
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
        // New clients: C (24000 frames) when it joined, and D (4800) every loop, all exact.
        let lo_runs = restarting_runs(&lo, LO_MOD);
        let wrong: Vec<String> = lo_runs
            .iter()
            .filter(|r| r.first != 0 || (r.len != 4800 && r.len != 24_000))
            .take(5)
            .map(|r| format!("{}..{} at {}", r.first, r.end(), r.at))
            .collect();
        if !wrong.is_empty() || lo_runs.len() != server_loops + joined {
            failures.push(format!(
                "server: new clients on channel {c} not exact: {} runs for {} clients, wrong \
                 {wrong:?}",
                lo_runs.len(),
                server_loops + joined
            ));
        }
    }
    for f in ["kill_setup.txt", "server_setup.txt"] {
        let t = read(&dir, f);
        if !t.is_empty() {
            failures.push(t.trim().to_string());
        }
    }
    let end = read(&dir, "end.txt");
    if end.trim() != "servers_at_end=0 sockets_at_end=0" {
        failures.push(format!("left at the end: {end}"));
    }
    let sample = runs
        .iter()
        .find(|m| m.get("c").map(String::as_str) != Some("0"))
        .and_then(|m| m.get("loop"))
        .map(|l| read(&dir, &format!("c_err_{l}.txt")))
        .unwrap_or_default();
    let c_ms: Vec<u64> = runs
        .iter()
        .filter_map(|m| m.get("c_ms").and_then(|v| v.parse().ok()))
        .collect();
    println!(
        "crash: server: {} loops; players finished exact; a client opened after the kill joined \
         {joined} times, was refused {refused} times (in {}..{} ms): {}",
        runs.len(),
        c_ms.iter().min().unwrap_or(&0),
        c_ms.iter().max().unwrap_or(&0),
        sample
            .lines()
            .find(|l| l.starts_with("rdmix"))
            .unwrap_or("")
            .trim()
    );
    if stall_replays > 0 {
        println!(
            "crash: {stall_replays} run(s) repeated the capture one slave buffer earlier inside a \
             gap where the clients underran together: a VM stall longer than the buffer (snd-aloop \
             copied its ring twice), not the mix"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
