//! A live server under attack, in the test VM: two clients play known signals through one
//! rdmix server while `examples/hostile` sends it junk, truncated, oversized and out-of-order
//! messages, unasked-for fds, connection floods and silent connections. The server must keep
//! its pid and its fd count, answer every query with two live clients, and the capture must be
//! the exact sum of both signals.
//!
//! `RDMIX_HOSTILE_MESSAGES` sets the number of hostile packets (default [`MESSAGES`]: what fits
//! in about two minutes of TCG time; see README.md, "Fuzzing", for the 10^6 run) and
//! `RDMIX_HOSTILE_RATE_FLOOR` the slowest attack rate to size the clients' signals for.

mod common;

use std::path::Path;

use asound_module_pcm_rdmix::mix::SlaveFormat;
use common::mixcheck::{self, find_offsets, read_raw, verify, write_raw};
use common::*;

const RATE: usize = 48_000;
const CH: usize = 2;
/// Hostile packets sent in CI: about a minute of attack under TCG (CI time is shared).
const MESSAGES: u64 = 100_000;
/// The slowest rate to plan for (packets/s under TCG; measured 1450-3300, README.md,
/// "Fuzzing"): the clients' signals last `MESSAGES / RATE_FLOOR` s plus 20, so that both are
/// still playing when the attack ends. `RDMIX_HOSTILE_RATE_FLOOR` overrides it (a long run
/// would otherwise make signals of needless length).
const RATE_FLOOR: u64 = 1_200;

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| format!("<{f} missing>"))
}

fn num(dir: &Path, f: &str) -> i64 {
    read(dir, f).trim().parse().unwrap_or(-999)
}

#[test]
fn server_survives_hostile_peers_while_two_clients_mix_exactly() {
    let messages: u64 = std::env::var("RDMIX_HOSTILE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let floor: u64 = std::env::var("RDMIX_HOSTILE_RATE_FLOOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f| f > 0)
        .unwrap_or(RATE_FLOOR);
    // The clients play for as long as the attack may take, plus the setup around it.
    let secs = (messages / floor + 20) as usize;
    let frames = secs * RATE;
    let (so, server) = artifacts();
    let hostile = example("hostile");
    let dir = out_dir("hostile");
    let amp = SlaveFormat::S16Le.range().1 / 3;
    let a = mixcheck::client_signal(4001, frames, CH, amp);
    let b = mixcheck::client_signal(4002, frames, CH, amp);
    write_raw(&dir.join("sig_a.raw"), SlaveFormat::S16Le, &a);
    write_raw(&dir.join("sig_b.raw"), SlaveFormat::S16Le, &b);
    let capture_frames = frames + 8 * RATE;
    let (code, _) = run_vm(
        &project_root().join("tests/guest/hostile.sh"),
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("HOSTILE", hostile.display().to_string()),
            ("MESSAGES", messages.to_string()),
            ("CAPTURE_FRAMES", capture_frames.to_string()),
        ],
        (secs + 240) as u32,
    );
    assert_eq!(code, 0, "guest script failed (status {code})");

    let mut failures = Vec::new();
    let summary = read(&dir, "hostile.log");
    println!("{}", summary.trim());
    println!("{}", read(&dir, "hostile.err").trim());
    println!("scheduling: {}", read(&dir, "sched").trim());
    if num(&dir, "status_hostile") != 0 {
        failures.push(format!(
            "hostile exited {}: {}",
            num(&dir, "status_hostile"),
            read(&dir, "hostile.err")
        ));
    }
    let sent: u64 = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if sent < messages {
        failures.push(format!("hostile sent {sent} of {messages} messages"));
    }
    let (p0, p1) = (
        read(&dir, "server_pid_before"),
        read(&dir, "server_pid_after"),
    );
    if p0.trim().is_empty() || p0.trim() != p1.trim() {
        failures.push(format!(
            "server pid changed: before {:?}, after {:?}",
            p0.trim(),
            p1.trim()
        ));
    }
    let (f0, f1) = (
        num(&dir, "server_fds_before"),
        num(&dir, "server_fds_after"),
    );
    if f0 <= 0 || f0 != f1 {
        failures.push(format!(
            "server fd count {f0} before, {f1} after:\n{}\n---\n{}",
            read(&dir, "server_fd_list_before"),
            read(&dir, "server_fd_list_after")
        ));
    }
    if num(&dir, "alive_after_hostile") != 2 {
        failures.push(format!(
            "only {} of the 2 clients were still playing when the attack ended (the attack \
             outlasted the signals: lower RDMIX_HOSTILE_MESSAGES or RATE_FLOOR)",
            num(&dir, "alive_after_hostile")
        ));
    }
    for c in ["a", "b"] {
        if num(&dir, &format!("status_{c}")) != 0 {
            failures.push(format!(
                "client {c} exited {}: {}",
                num(&dir, &format!("status_{c}")),
                read(&dir, &format!("log_{c}"))
            ));
        }
    }
    let cap = read_raw(&dir.join("cap.raw"), SlaveFormat::S16Le, CH);
    let sigs: Vec<&[Vec<i64>]> = vec![a.as_slice(), b.as_slice()];
    let r = verify(&cap, SlaveFormat::S16Le, &sigs, &find_offsets(&cap, &sigs));
    println!("capture ({} frames): {}", cap.len(), r.summary());
    if !r.is_exact() {
        failures.push(format!(
            "capture is not the exact sum of both clients: {r}\narecord (status {}): {}",
            num(&dir, "status_arecord"),
            read(&dir, "arecord.log")
        ));
    }
    assert!(
        failures.is_empty(),
        "failures:\n  {}",
        failures.join("\n  ")
    );
}
