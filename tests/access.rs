//! Who may join whose mixer, in the test VM with real users (alice and bob in `audio`, carol not):
//!
//! - A private mixer (the default) admits its owner alone, and the check is made at the socket
//!   (SO_PEERCRED), not by a file mode (an abstract socket has none): bob's Hello and Query at
//!   alice's socket are refused with EACCES and a message naming ipc_perm / ipc_gid; bob's own
//!   aplay fails at once, saying whose mixer holds the device; alice's capture stays bit-exact.
//! - A client does not talk to a server that may not serve its mixer: a user who claims the
//!   name first (bob on alice's private name, carol on the shared one) receives no Hello.
//! - `ipc_perm 0660` + `ipc_gid audio`: alice and bob play into one server at once, both see both
//!   clients in `rdmix status --json`, and the capture is the exact sum; carol, not in the
//!   group, is refused with EACCES.

mod common;

use std::path::Path;

use asound_module_pcm_rdmix::mix::SlaveFormat;
use common::mixcheck::{self, find_offsets, read_raw, verify, write_raw};
use common::*;

const RATE: u32 = 48_000;
const PRIVATE_FRAMES: u32 = 6 * RATE;
const SALT: u16 = 3;
const ALICE_FRAMES: usize = 5 * RATE as usize;
const BOB_FRAMES: usize = 4 * RATE as usize;
const AMP: i64 = 10_000;

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| format!("<{f} missing>"))
}

fn status(dir: &Path, f: &str) -> i32 {
    read(dir, f).trim().parse().unwrap_or(-999)
}

/// The `"pid":N` values of a `rdmix status --json` output (client pids, not `server_pid`).
fn json_pids(json: &str) -> Vec<u32> {
    json.match_indices("\"pid\":")
        .filter_map(|(i, m)| {
            json[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn private_by_default_shared_by_opt_in() {
    let (so, server) = artifacts();
    let probe = example("socket_probe");
    let dir = out_dir("access");
    write_wav(
        &dir.join("alice_private.wav"),
        RATE,
        &signal(PRIVATE_FRAMES, SALT),
    );
    let alice = mixcheck::client_signal(41, ALICE_FRAMES, 2, AMP);
    let bob = mixcheck::client_signal(42, BOB_FRAMES, 2, AMP);
    write_raw(&dir.join("alice_shared.raw"), SlaveFormat::S16Le, &alice);
    write_raw(&dir.join("bob_shared.raw"), SlaveFormat::S16Le, &bob);

    let (code, _) = run_vm(
        &project_root().join("tests/guest/access.sh"),
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("PROBE", probe.display().to_string()),
            ("RDMIX", env!("CARGO_BIN_EXE_rdmix").to_string()),
        ],
        240,
    );
    assert_eq!(code, 0, "guest script failed (status {code})");

    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let private = read(&dir, "sock_private").trim().to_string();
    let shared = read(&dir, "sock_shared").trim().to_string();
    need(
        private.starts_with("rdmix/u1000/c") && shared.starts_with("rdmix/shared/c"),
        format!("socket names: {private} / {shared}"),
    );

    // ---- squatters: the client checks who serves the name before saying anything.
    for (step, squatter, words) in [
        ("private", "bob", &["uid 1001", "private", "claimed"][..]),
        ("shared", "carol", &["uid 1002", "shared", "claimed"][..]),
    ] {
        let log = read(&dir, &format!("play_squat_{step}.log"));
        let sq = read(&dir, &format!("squat_{step}.txt"));
        report.push(format!(
            "squat {step} ({squatter}): alice's aplay status {}; squatter: {}",
            status(&dir, &format!("status_squat_{step}")),
            sq.lines().last().unwrap_or("")
        ));
        need(
            status(&dir, &format!("status_squat_{step}")) != 0
                && words.iter().all(|w| log.contains(w)),
            format!("alice's client used {squatter}'s impostor server on the {step} name: {log}"),
        );
        need(
            sq.contains("connect uid=1000") && sq.contains("hellos=0"),
            format!("{squatter}'s squatter saw alice connect and send no Hello: {sq}"),
        );
    }

    // ---- private (default): bob may not join alice's mixer.
    let srv = read(&dir, "servers_private").trim().to_string();
    need(
        !srv.is_empty() && !srv.contains(' ') && read(&dir, "server_uid_private").trim() == "1000",
        format!(
            "private: one server of alice's expected, got pids '{srv}' uid '{}'",
            read(&dir, "server_uid_private").trim()
        ),
    );
    for who in ["bob_hello_private", "bob_query_private"] {
        let out = read(&dir, &format!("probe_{who}.txt"));
        report.push(format!("{who}: {}", out.trim()));
        need(
            status(&dir, &format!("status_probe_{who}")) == 1
                && out.starts_with("refused errno=13: ")
                && out.contains("ipc_perm")
                && out.contains("ipc_gid"),
            format!("{who}: expected EACCES naming ipc_perm and ipc_gid, got: {out}"),
        );
    }
    let out = read(&dir, "probe_alice_query_private.txt");
    report.push(format!("alice_query_private: {}", out.trim()));
    need(
        status(&dir, "status_probe_alice_query_private") == 0
            && out.trim() == format!("status server_pid={srv} clients=1 fds=1"),
        format!("alice's own query was not served: {out}"),
    );
    let out = read(&dir, "probe_alice_hello_private.txt");
    report.push(format!("alice_hello_private: {}", out.trim()));
    need(
        status(&dir, "status_probe_alice_hello_private") == 0
            && out.starts_with("welcomed slot=")
            && out.trim().ends_with("fds=2"),
        format!("alice's own Hello was not welcomed with 2 fds: {out}"),
    );
    let log = read(&dir, "play_bob_private.log");
    let secs: f64 = read(&dir, "secs_bob_private")
        .trim()
        .parse()
        .unwrap_or(99.0);
    report.push(format!(
        "bob's aplay on his private mixer: status {} after {secs:.2}s: {}",
        status(&dir, "status_bob_private"),
        log.lines()
            .find(|l| l.starts_with("rdmix: "))
            .unwrap_or("<no rdmix line>")
    ));
    need(
        status(&dir, "status_bob_private") != 0
            && log.contains("busy")
            && log.contains("uid 1000")
            && log.contains("ipc_perm")
            && secs < 3.0,
        format!(
            "bob's aplay did not fail at once naming alice's mixer and ipc_perm ({secs}s): {log}"
        ),
    );
    need(
        read(&dir, "servers_after_bob").trim() == srv,
        format!(
            "after bob's attempt the servers are '{}', expected alice's {srv}",
            read(&dir, "servers_after_bob").trim()
        ),
    );
    let a = analyze(
        &read_raw_s16_stereo(&dir.join("cap_private.raw")),
        PRIVATE_FRAMES,
        SALT,
    );
    report.push(format!(
        "alice private capture: {}",
        a.summary(PRIVATE_FRAMES)
    ));
    need(
        status(&dir, "status_alice_private") == 0 && a.is_exact(PRIVATE_FRAMES),
        format!(
            "alice's private stream (aplay status {}): {}; {}",
            status(&dir, "status_alice_private"),
            a.summary(PRIVATE_FRAMES),
            read(&dir, "play_alice_private.log")
        ),
    );

    // ---- shared (ipc_perm 0660, ipc_gid audio): one server, both clients, exact sum.
    let srv = read(&dir, "servers_shared").trim().to_string();
    need(
        !srv.is_empty() && !srv.contains(' ') && read(&dir, "server_uid_shared").trim() == "1000",
        format!(
            "shared: exactly one server (alice's) expected, got pids '{srv}' uid '{}'",
            read(&dir, "server_uid_shared").trim()
        ),
    );
    // The clients the mixer lists, as the guest saw them: "pid uid program".
    let clients: Vec<Vec<String>> = read(&dir, "clients_shared")
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let mut uids: Vec<&str> = clients
        .iter()
        .filter(|c| c.len() == 3 && c[2] == "aplay")
        .map(|c| c[1].as_str())
        .collect();
    uids.sort();
    report.push(format!(
        "shared mixer clients (pid uid program): {clients:?}"
    ));
    need(
        uids == ["1000", "1001"] && clients.len() == 2,
        format!("the shared mixer's clients are not alice's and bob's aplay: {clients:?}"),
    );
    let players: Vec<u32> = clients
        .iter()
        .filter_map(|c| c.first()?.parse().ok())
        .collect();
    for who in ["alice", "bob"] {
        let js = read(&dir, &format!("status_json_{who}"));
        let pids = json_pids(&js);
        report.push(format!(
            "rdmix status --json by {who}: client pids {pids:?}"
        ));
        need(
            pids.len() == 2
                && players.len() == 2
                && players.iter().all(|p| pids.contains(p))
                && js.contains("\"live_clients\":2")
                && js.contains(&format!("\"server_pid\":{srv}"))
                && js.contains(&format!("\"socket\":\"{shared}\"")),
            format!("{who}'s rdmix status --json does not list both players {players:?}: {js}"),
        );
    }
    for who in ["carol_hello_shared", "carol_query_shared"] {
        let out = read(&dir, &format!("probe_{who}.txt"));
        report.push(format!("{who}: {}", out.trim()));
        need(
            status(&dir, &format!("status_probe_{who}")) == 1
                && out.starts_with("refused errno=13: ")
                && out.contains("group 29")
                && out.contains("ipc_gid"),
            format!("{who}: expected EACCES naming the group and ipc_gid, got: {out}"),
        );
    }
    let out = read(&dir, "probe_bob_query_shared.txt");
    need(
        out.trim() == format!("status server_pid={srv} clients=2 fds=1"),
        format!("bob's query of the shared mixer: {out}"),
    );
    let log = read(&dir, "play_carol_shared.log");
    report.push(format!(
        "carol's aplay on the shared mixer: status {}: {}",
        status(&dir, "status_carol_shared"),
        log.lines()
            .find(|l| l.starts_with("rdmix: "))
            .unwrap_or("<no rdmix line>")
    ));
    need(
        status(&dir, "status_carol_shared") != 0
            && log.contains("uid 1002 may not join")
            && log.contains("group 29"),
        format!("carol's aplay was not refused with a message naming the group: {log}"),
    );
    let cap = read_raw(&dir.join("cap_shared.raw"), SlaveFormat::S16Le, 2);
    let sigs: Vec<&[Vec<i64>]> = vec![alice.as_slice(), bob.as_slice()];
    let offsets = find_offsets(&cap, &sigs);
    let r = verify(&cap, SlaveFormat::S16Le, &sigs, &offsets);
    report.push(format!(
        "shared capture (alice + bob): {}; offsets {offsets:?}",
        r.summary()
    ));
    // The two must overlap for the sum to mean anything.
    let overlap = match (offsets[0], offsets[1]) {
        (Some(a), Some(b)) => {
            (a + ALICE_FRAMES as i64).min(b + BOB_FRAMES as i64) - a.max(b) > RATE as i64
        }
        _ => false,
    };
    need(
        r.is_exact()
            && overlap
            && status(&dir, "status_alice_shared") == 0
            && status(&dir, "status_bob_shared") == 0,
        format!(
            "shared mix (alice {}, bob {}, overlap > 1 s: {overlap}): {r}",
            status(&dir, "status_alice_shared"),
            status(&dir, "status_bob_shared")
        ),
    );

    // ---- nothing left behind.
    for (f, what) in [
        ("servers_at_end", "rdmix-server processes"),
        ("sockets_at_end", "rdmix sockets"),
        ("shm_at_end", "files in /dev/shm"),
    ] {
        let s = read(&dir, f);
        need(s.trim().is_empty(), format!("{what} left at the end: {s}"));
    }

    println!("---- access report ----\n{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "failures:\n  {}",
        failures.join("\n  ")
    );
}
