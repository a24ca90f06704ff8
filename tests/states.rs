//! Every PCM state an application can put an rdmix stream in, in the test VM on snd-aloop,
//! checked frame by frame in the loopback capture (examples/state_play plays a mono counter on
//! the left channel while a partner client plays one on the right for the whole scenario):
//! plain play and drain, pause/resume, drop (unplayed audio taken back out at once),
//! non-blocking drain (-EAGAIN, then poll), start by start_threshold and by snd_pcm_start,
//! rewind (rewound frames taken back out) and forward (exact silence), a client underrun (that
//! client only), delay against the position's clock, and the card disconnected under a player.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;

const RATE: f64 = 48_000.0;
const FRAMES: u64 = 72_000;
const PARTNER_FRAMES: u64 = 192_000;
const SCENARIOS: [&str; 9] = [
    "plain",
    "pause",
    "drop",
    "drain-nonblock",
    "start-threshold",
    "start-explicit",
    "rewind",
    "forward",
    "underrun",
];

/// The counter values of one channel (see examples/state_play: 0 is silence).
fn channel(cap: &[[i16; 2]], c: usize) -> Vec<u32> {
    cap.iter().map(|f| f[c] as u16 as u32).collect()
}

fn segments(vals: &[u32]) -> Vec<Seg> {
    counter_runs(vals, 65535)
}

fn kv(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> Result<f64, String> {
    m.get(k)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("state_play printed no {k}"))
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

fn show(segs: &[Seg]) -> String {
    let more = segs.len().saturating_sub(8);
    segs.iter()
        .take(8)
        .map(|s| {
            format!(
                "[{}..{} at {} after {} silent]",
                s.first,
                s.end(),
                s.at,
                s.gap
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
        + &if more > 0 {
            format!(" and {more} more runs")
        } else {
            String::new()
        }
}

/// The checks of one scenario; Err says what is wrong.
fn check(dir: &Path, s: &str) -> Result<String, String> {
    let status = read(dir, &format!("status_{s}"));
    let pstatus = read(dir, &format!("pstatus_{s}"));
    let out = read(dir, &format!("out_{s}.txt"));
    let err = read(dir, &format!("err_{s}.txt"));
    if status.trim() != "0" || pstatus.trim() != "0" {
        return Err(format!(
            "exit status {} (partner {}); stderr: {err} {}",
            status.trim(),
            pstatus.trim(),
            read(dir, &format!("perr_{s}.txt"))
        ));
    }
    let m = kv(&out);
    let pout = read(dir, &format!("pout_{s}.txt"));
    if kv(&pout).get("xruns").map(String::as_str) != Some("0") {
        return Err(format!(
            "the partner (buffer 6144) underran on its own: {} (CPU starvation of the VM?)",
            pout.trim()
        ));
    }
    let cap = read_raw_s16_stereo(&dir.join(format!("cap_{s}.raw")));
    let left = segments(&channel(&cap, 0));
    let right = segments(&channel(&cap, 1));
    // The partner: one unbroken run from its first frame, over the whole scenario.
    let p = match right.as_slice() {
        [p] if p.first == 0 && (p.len == PARTNER_FRAMES || p.at + p.len as usize == cap.len()) => {
            *p
        }
        _ => {
            return Err(format!(
                "partner channel not one exact run: {}",
                show(&right)
            ))
        }
    };
    let (l0, l1) = match (left.first(), left.last()) {
        (Some(a), Some(b)) => (a.at, b.at + b.len as usize),
        _ => return Err("nothing of the scenario client in the capture".into()),
    };
    if l0 < p.at || l1 > p.at + p.len as usize {
        return Err(format!(
            "scenario client ({l0}..{l1}) not inside the partner's run ({}..{})",
            p.at,
            p.at + p.len as usize
        ));
    }
    let whole = |segs: &[Seg]| matches!(segs, [a] if a.first == 0 && a.len == FRAMES);
    let half = FRAMES / 2;
    let note = match s {
        "plain" => {
            if !whole(&left) {
                return Err(format!("not one exact run: {}", show(&left)));
            }
            let (rate, dev) = (num(&m, "position_rate")?, num(&m, "position_dev_max")?);
            if (rate - RATE).abs() > RATE * 0.02 || dev > 2048.0 {
                return Err(format!(
                    "position (written - delay) strays from the status htstamp: rate {rate:.0}/s, \
                     off by up to {dev:.0} frames"
                ));
            }
            format!("position vs status htstamp: {rate:.0}/s, within {dev:.0} frames of a line")
        }
        "pause" => {
            let [a, b] = left.as_slice() else {
                return Err(format!(
                    "expected two runs around the pause: {}",
                    show(&left)
                ));
            };
            if a.first != 0 || b.first != a.end() || b.end() != FRAMES {
                return Err(format!(
                    "frames lost or repeated across the pause: {}",
                    show(&left)
                ));
            }
            let (d0, d1) = (num(&m, "pause_delay0")?, num(&m, "pause_delay1")?);
            if m.get("paused_state").map(String::as_str) != Some("PAUSED") || d1 > d0 {
                return Err(format!("state/delay while paused wrong: {out}"));
            }
            let gap_ms = b.gap as f64 / RATE * 1e3;
            if !(400.0..=1000.0).contains(&gap_ms) {
                return Err(format!("pause gap {gap_ms:.0} ms for a 500 ms pause"));
            }
            format!(
                "resumed at frame {} exactly; silent {gap_ms:.0} ms; {} frames of tail after pause()",
                b.first,
                d0 - d1
            )
        }
        "drop" => {
            let [a] = left.as_slice() else {
                return Err(format!("expected one run before the drop: {}", show(&left)));
            };
            let (w, d) = (
                num(&m, "drop_written")? as u64,
                num(&m, "drop_delay")? as u64,
            );
            let played = w - d;
            if a.first != 0 || a.end() < played || a.end() > played + 2048 || a.end() + 1024 > w {
                return Err(format!(
                    "drop: heard 0..{}, application saw {played} played of {w} written",
                    a.end()
                ));
            }
            format!(
                "heard {} frames past the position at drop() ({} of {d} unplayed removed)",
                a.end() - played,
                w - a.end()
            )
        }
        "drain-nonblock" => {
            if !whole(&left) {
                return Err(format!("not one exact run: {}", show(&left)));
            }
            if m.get("drain_eagain").map(String::as_str) != Some("1")
                || m.get("drain_end_state").map(String::as_str) != Some("SETUP")
            {
                return Err(format!("non-blocking drain: {out}"));
            }
            let (d, ms) = (num(&m, "drain_delay")?, num(&m, "drain_ms")?);
            format!(
                "-EAGAIN, then done after {ms:.0} ms for {:.0} ms queued",
                d / RATE * 1e3
            )
        }
        "start-threshold" => {
            if !whole(&left)
                || m.get("after_1024").map(String::as_str) != Some("PREPARED")
                || m.get("after_3072").map(String::as_str) != Some("RUNNING")
            {
                return Err(format!("{out} {}", show(&left)));
            }
            "PREPARED below the threshold, RUNNING at it, exact".into()
        }
        "start-explicit" => {
            if !whole(&left)
                || m.get("before_start").map(String::as_str) != Some("PREPARED")
                || m.get("after_start").map(String::as_str) != Some("RUNNING")
            {
                return Err(format!("{out} {}", show(&left)));
            }
            "PREPARED with a full buffer until snd_pcm_start, exact".into()
        }
        "rewind" => {
            if !whole(&left) || m.get("rewound").map(String::as_str) != Some("1024") {
                return Err(format!(
                    "rewound frames heard or lost: {out} {}",
                    show(&left)
                ));
            }
            "1024 wrong frames rewound: none heard, exact".into()
        }
        "forward" => {
            let [a, b] = left.as_slice() else {
                return Err(format!(
                    "expected two runs around the forward: {}",
                    show(&left)
                ));
            };
            if a.first != 0
                || a.end() != half
                || b.first != half + 1000
                || b.gap != 1000
                || b.end() != FRAMES
            {
                return Err(format!("forward of 1000: {}", show(&left)));
            }
            "exactly 1000 silent frames in place of the skipped ones".into()
        }
        "underrun" => {
            if num(&m, "xruns")? < 1.0 {
                return Err(format!("no underrun reported: {out}"));
            }
            let [a, b] = left.as_slice() else {
                return Err(format!(
                    "expected two runs around the underrun: {}",
                    show(&left)
                ));
            };
            if a.first != 0 || b.first != a.end() || b.end() != FRAMES || b.gap == 0 {
                return Err(format!(
                    "frames lost or repeated across the xrun: {}",
                    show(&left)
                ));
            }
            format!(
                "-EPIPE for this client only; silent {} frames, nothing lost",
                b.gap
            )
        }
        _ => return Err("no check for this scenario".into()),
    };
    Ok(note)
}

#[test]
fn states_in_vm() {
    let (so, server) = artifacts();
    let sp = example("state_play");
    let dir = out_dir("states");
    // RDMIX_STATES=a,b runs a subset (development); RDMIX_TRACE=1 traces the scenario client.
    let only = std::env::var("RDMIX_STATES").ok();
    let scenarios: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x == *s))
        })
        .collect();
    let script = project_root().join("tests/guest/states.sh");
    let (code, stdout) = run_vm(
        &script,
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("STATE_PLAY", sp.display().to_string()),
            ("RDMIX_CLI", env!("CARGO_BIN_EXE_rdmix").to_string()),
            ("SCENARIOS", scenarios.join(" ")),
            (
                "RDMIX_TRACE",
                std::env::var("RDMIX_TRACE").unwrap_or_default(),
            ),
        ],
        600,
    );
    assert_eq!(code, 0, "VM run failed");
    assert!(stdout.contains("states: all done"), "guest did not finish");
    let mut failed = Vec::new();
    for &s in &scenarios {
        match check(&dir, s) {
            Ok(note) => println!("states: {s:16} ok: {note}"),
            Err(e) => {
                println!("states: {s:16} FAILED: {e}");
                failed.push(s);
            }
        }
    }
    // Disconnect: the player is told (an error naming the cause, not a hang), the server goes,
    // nothing is left behind.
    let st = read(&dir, "status_disconnect");
    let err = read(&dir, "err_disconnect.txt");
    let ms: u64 = read(&dir, "disconnect_ms")
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    let after = read(&dir, "server_after_disconnect.txt");
    let sockets = read(&dir, "sockets_after_disconnect.txt");
    let told = err.contains("disconnected") || err.contains("No such device");
    if st.trim() == "0" || st.trim() == "still-running" || !told || ms > 3000 {
        println!(
            "states: disconnect       FAILED: status {} after {ms} ms; stderr: {err}",
            st.trim()
        );
        failed.push("disconnect");
    } else if after.trim() != "none" || sockets.trim() != "0" {
        println!(
            "states: disconnect       FAILED: left behind: server {} sockets {}",
            after.trim(),
            sockets.trim()
        );
        failed.push("disconnect");
    } else {
        println!(
            "states: disconnect       ok: player stopped with an error after {ms} ms: {}",
            err.lines().last().unwrap_or("").trim()
        );
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

#[test]
fn segments_split_runs_and_measure_gaps() {
    let v = |n: u64| ((n % 65535) + 1) as u32;
    let mut ch: Vec<u32> = vec![0; 3];
    ch.extend((0..10).map(v));
    ch.extend([0; 5]);
    ch.extend((10..20).map(v));
    ch.extend((25..30).map(v));
    let s = segments(&ch);
    assert_eq!(
        s,
        vec![
            Seg {
                at: 3,
                first: 0,
                len: 10,
                gap: 3
            },
            Seg {
                at: 18,
                first: 10,
                len: 10,
                gap: 5
            },
            Seg {
                at: 28,
                first: 25,
                len: 5,
                gap: 0
            },
        ]
    );
    // Past the counter's wrap, indices continue.
    let s = segments(&(65530..65540).map(v).collect::<Vec<_>>());
    assert_eq!(
        s,
        vec![Seg {
            at: 0,
            first: 65530,
            len: 10,
            gap: 0
        }]
    );
}
