//! A C program reads a live mixer through `include/rdmix.h` (in the test VM, one boot): three
//! `aplay -D rdmix` play on hw:Loopback,0,0 while `examples/rdmix_read.c` (built here with gcc
//! against the header) and `rdmix status --json` read the mixer in turn. Both must report the
//! configured geometry, the same server and the three players' real pids (program `aplay`),
//! and each reading's frames mixed must lie between its neighbours' (C, Rust, C, Rust, C): the
//! two languages read the same counters at the same offsets, and the counters grow.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

const RATE: u32 = 48_000;
/// Each player's length: long enough to outlast the readings under TCG.
const FRAMES: u32 = 6 * RATE;
/// SND_PCM_FORMAT_S16_LE.
const S16_LE: i64 = 2;

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| format!("<{f} missing>"))
}

fn status(dir: &Path, f: &str) -> i32 {
    read(dir, f).trim().parse().unwrap_or(-999)
}

/// One reading of the C reader: "mixer", "layout", "geometry" lines and one line per slot.
#[derive(Debug, Default)]
struct CReading {
    mixer: BTreeMap<String, String>,
    layout: BTreeMap<String, String>,
    geometry: BTreeMap<String, String>,
    /// The header's device name.
    device: String,
    /// pid → the slot's fields.
    slots: BTreeMap<u32, BTreeMap<String, String>>,
}

fn pairs(words: &[&str]) -> BTreeMap<String, String> {
    words
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

fn parse_reader(text: &str) -> CReading {
    let mut r = CReading::default();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first() {
            Some(&"mixer") if w.len() > 1 => {
                r.mixer = pairs(&w[2..]);
                r.mixer.insert("socket".into(), w[1].to_string());
            }
            Some(&"layout") => r.layout = pairs(&w[1..]),
            Some(&"geometry") => r.geometry = pairs(&w[1..]),
            Some(&"device") => r.device = l["device ".len().min(l.len())..].to_string(),
            Some(&"slot") if w.len() > 1 => {
                let mut m = pairs(&w[2..]);
                m.insert("slot".into(), w[1].to_string());
                let pid = m.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
                r.slots.insert(pid, m);
            }
            _ => {}
        }
    }
    r
}

/// Just enough JSON for `rdmix status --json`.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
    Bool(bool),
    Other,
}

impl Json {
    fn get(&self, k: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(k).unwrap_or(&Json::Other),
            _ => &Json::Other,
        }
    }
    fn num(&self) -> Option<i64> {
        match self {
            Json::Num(n) => Some(*n as i64),
            _ => None,
        }
    }
    fn float(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
}

fn parse_json(s: &str) -> Option<Json> {
    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn string(b: &[u8], i: &mut usize) -> Option<String> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        *i += 1;
        let mut out = Vec::new();
        while *i < b.len() && b[*i] != b'"' {
            if b[*i] == b'\\' {
                *i += 1;
                match b.get(*i)? {
                    b'u' => {
                        let h = std::str::from_utf8(b.get(*i + 1..*i + 5)?).ok()?;
                        let c = char::from_u32(u32::from_str_radix(h, 16).ok()?)?;
                        out.extend_from_slice(c.to_string().as_bytes());
                        *i += 4;
                    }
                    c => out.push(*c),
                }
            } else {
                out.push(b[*i]);
            }
            *i += 1;
        }
        *i += 1;
        String::from_utf8(out).ok()
    }
    fn value(b: &[u8], i: &mut usize) -> Option<Json> {
        ws(b, i);
        match *b.get(*i)? {
            b'{' => {
                *i += 1;
                let mut m = BTreeMap::new();
                loop {
                    ws(b, i);
                    if b.get(*i) == Some(&b'}') {
                        *i += 1;
                        return Some(Json::Obj(m));
                    }
                    let k = string(b, i)?;
                    ws(b, i);
                    if b.get(*i) != Some(&b':') {
                        return None;
                    }
                    *i += 1;
                    m.insert(k, value(b, i)?);
                    ws(b, i);
                    if b.get(*i) == Some(&b',') {
                        *i += 1;
                    }
                }
            }
            b'[' => {
                *i += 1;
                let mut v = Vec::new();
                loop {
                    ws(b, i);
                    if b.get(*i) == Some(&b']') {
                        *i += 1;
                        return Some(Json::Arr(v));
                    }
                    v.push(value(b, i)?);
                    ws(b, i);
                    if b.get(*i) == Some(&b',') {
                        *i += 1;
                    }
                }
            }
            b'"' => string(b, i).map(Json::Str),
            c if c == b'-' || c.is_ascii_digit() => {
                let st = *i;
                while *i < b.len() && (b[*i] == b'-' || b[*i] == b'.' || b[*i].is_ascii_digit()) {
                    *i += 1;
                }
                std::str::from_utf8(&b[st..*i])
                    .ok()?
                    .parse()
                    .ok()
                    .map(Json::Num)
            }
            _ => {
                let st = *i;
                while *i < b.len() && b[*i].is_ascii_alphabetic() {
                    *i += 1;
                }
                Some(match &b[st..*i] {
                    b"true" => Json::Bool(true),
                    b"false" => Json::Bool(false),
                    _ => Json::Other,
                })
            }
        }
    }
    let b = s.trim().as_bytes();
    let mut i = 0;
    let v = value(b, &mut i)?;
    (i == b.len()).then_some(v)
}

fn field(m: &BTreeMap<String, String>, k: &str) -> Option<i64> {
    m.get(k).and_then(|v| v.parse().ok())
}

#[test]
fn c_reader_and_rdmix_status_read_the_same_live_mixer() {
    let (so, server) = artifacts();
    let dir = out_dir("c_reader");
    let reader = dir.join("rdmix_read");
    let gcc = Command::new("gcc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O2",
            "-I",
        ])
        .arg(project_root().join("include"))
        .arg(project_root().join("examples/rdmix_read.c"))
        .arg("-o")
        .arg(&reader)
        .output()
        .expect("run gcc");
    assert!(
        gcc.status.success(),
        "gcc failed on examples/rdmix_read.c:\n{}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    write_wav(&dir.join("sig.wav"), RATE, &signal(FRAMES, 3));

    let t0 = Instant::now();
    let (code, _) = run_vm(
        &project_root().join("tests/guest/c_reader.sh"),
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("RDMIX_CLI", env!("CARGO_BIN_EXE_rdmix").to_string()),
            ("READER", reader.display().to_string()),
        ],
        120,
    );
    let vm_secs = t0.elapsed().as_secs_f64();
    assert_eq!(code, 0, "guest script failed (status {code})");

    let mut failures = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // Nothing running: the reader says so.
    let none = read(&dir, "reader_none.txt");
    need(
        status(&dir, "status_reader_none") == 1 && none.contains("no rdmix mixer is running"),
        format!(
            "reader with no mixer: status {}, {none:?}",
            status(&dir, "status_reader_none")
        ),
    );

    let players: Vec<u32> = read(&dir, "players")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let comms: Vec<String> = read(&dir, "player_comms")
        .lines()
        .map(str::to_string)
        .collect();
    need(
        players.len() == 3 && comms.iter().all(|c| c == "aplay"),
        format!("players {players:?}, comms {comms:?}"),
    );
    let alive: Vec<u32> = read(&dir, "alive_after")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    need(
        alive == players,
        format!("players alive after the readings: {alive:?} of {players:?}"),
    );
    // `rdmix top` in a pty while the three play: two redraws, every player with a meter.
    let top = read(&dir, "top.txt");
    let frames: Vec<&str> = top.split("\x1b[2J").skip(1).collect();
    let last = frames.last().copied().unwrap_or("");
    let metered = players
        .iter()
        .filter(|p| {
            last.lines()
                .any(|l| l.contains(&format!(" {p} ")) && l.contains("aplay") && l.contains("["))
        })
        .count();
    println!(
        "rdmix top in the VM (last of {} frames):\n{last}",
        frames.len()
    );
    need(
        status(&dir, "status_top") == 0 && frames.len() == 2 && metered == players.len(),
        format!(
            "rdmix top: status {}, {} frames, {metered} of {} players with a meter:\n{top}\n{}",
            status(&dir, "status_top"),
            frames.len(),
            players.len(),
            read(&dir, "top.err")
        ),
    );
    let pstat = read(&dir, "player_status");
    need(
        pstat.split_whitespace().collect::<Vec<_>>() == ["0", "0", "0"],
        format!("player exit statuses: {pstat:?}"),
    );
    let sockets = read(&dir, "sockets");
    let socket = sockets.lines().next().unwrap_or("").trim_start_matches('@');
    need(
        sockets.lines().count() == 1 && socket.starts_with("rdmix/u0/c0d0s"),
        format!("rdmix sockets in /proc/net/unix: {sockets:?}"),
    );

    let mut want: Vec<u32> = players.clone();
    want.sort();
    let mut readings = Vec::new();
    for k in 1..=3 {
        let st = status(&dir, &format!("status_reader_{k}"));
        let err = read(&dir, &format!("reader_{k}.err"));
        need(st == 0, format!("C reader {k}: status {st}, {err}"));
        readings.push(parse_reader(&read(&dir, &format!("reader_{k}.txt"))));
    }
    let mut jsons = Vec::new();
    for k in 1..=2 {
        let st = status(&dir, &format!("status_status_{k}"));
        let text = read(&dir, &format!("status_{k}.json"));
        need(st == 0, format!("rdmix status --json {k}: status {st}"));
        let j = parse_json(&text);
        need(
            j.is_some(),
            format!("rdmix status --json {k} is not JSON: {text}"),
        );
        jsons.push(j.unwrap_or(Json::Other));
    }

    // ---- rdmix status --json: one mixer, the configured geometry, the three players.
    for (k, j) in jsons.iter().enumerate() {
        let k = k + 1;
        let mixers = j.get("mixers").arr();
        need(
            j.get("errors").arr().is_empty(),
            format!("json {k}: errors {:?}", j.get("errors")),
        );
        need(
            mixers.len() == 1,
            format!("json {k}: {} mixers", mixers.len()),
        );
        let Some(m) = mixers.first() else { continue };
        let geo = [
            ("card", Some(0)),
            ("rate", Some(RATE as i64)),
            ("channels", Some(2)),
            ("period_size", Some(1024)),
            ("buffer_size", Some(4096)),
            ("live_clients", Some(3)),
        ];
        for (key, v) in geo {
            need(
                m.get(key).num() == v,
                format!("json {k}: {key} = {:?}, expected {v:?}", m.get(key)),
            );
        }
        need(
            m.get("format").str() == Some("S16_LE"),
            format!("json {k}: format {:?}", m.get("format")),
        );
        // The device: its number (`device_number` since the status gained the device's name
        // as `device`), and its name when given.
        let devnum = match m.get("device") {
            Json::Num(n) => Some(*n as i64),
            _ => m.get("device_number").num(),
        };
        need(
            devnum == Some(0),
            format!("json {k}: device number {devnum:?}, expected 0"),
        );
        if let Json::Str(d) = m.get("device") {
            need(
                d == "/dev/snd/pcmC0D0p",
                format!("json {k}: device {d:?}, expected /dev/snd/pcmC0D0p"),
            );
        }
        if !matches!(m.get("virtual"), Json::Other) {
            need(
                m.get("virtual") == &Json::Bool(false),
                format!("json {k}: virtual {:?}", m.get("virtual")),
            );
        }
        need(
            m.get("socket").str() == Some(socket),
            format!(
                "json {k}: socket {:?}, /proc/net/unix {socket}",
                m.get("socket")
            ),
        );
        let clients = m.get("clients").arr();
        let mut pids: Vec<u32> = clients
            .iter()
            .filter_map(|c| c.get("pid").num().map(|p| p as u32))
            .collect();
        pids.sort();
        need(
            pids == want,
            format!("json {k}: client pids {pids:?}, players {want:?}"),
        );
        for c in clients {
            need(
                c.get("program").str() == Some("aplay"),
                format!("json {k}: client {c:?} is not aplay"),
            );
            need(
                c.get("frames_mixed").num().is_some_and(|f| f > 0)
                    && c.get("slot").num().is_some_and(|s| (0..64).contains(&s)),
                format!("json {k}: client {c:?}: no frames mixed or no slot"),
            );
        }
    }

    // ---- the C reader: same mixer, same geometry, same slots.
    let j0 = jsons[0]
        .get("mixers")
        .arr()
        .first()
        .cloned()
        .unwrap_or(Json::Other);
    for (k, r) in readings.iter().enumerate() {
        let k = k + 1;
        need(
            r.mixer.get("socket").map(String::as_str) == Some(socket),
            format!("C {k}: socket {:?}", r.mixer.get("socket")),
        );
        need(
            field(&r.mixer, "server_pid") == j0.get("server_pid").num(),
            format!(
                "C {k}: Status server pid {:?}, json {:?}",
                r.mixer.get("server_pid"),
                j0.get("server_pid")
            ),
        );
        need(
            field(&r.geometry, "server_pid") == j0.get("server_pid").num(),
            format!(
                "C {k}: the shared-state header's server_pid is {:?}, the server's pid is {:?} \
                 (Status, rdmix status): the header must name the running server",
                r.geometry.get("server_pid"),
                j0.get("server_pid")
            ),
        );
        need(
            field(&r.mixer, "live_clients") == Some(3) && field(&r.layout, "clients") == Some(3),
            format!(
                "C {k}: live clients {:?}, header {:?}",
                r.mixer,
                r.layout.get("clients")
            ),
        );
        for key in [
            "card",
            "device",
            "subdevice",
            "rate",
            "channels",
            "period_size",
            "buffer_size",
        ] {
            // The JSON's device number is `device_number` once `device` became the name.
            let jv = match (key, j0.get(key)) {
                ("device", Json::Str(_)) => j0.get("device_number").num(),
                (_, v) => v.num(),
            };
            need(
                field(&r.geometry, key) == jv,
                format!("C {k}: {key} {:?}, json {jv:?}", r.geometry.get(key)),
            );
        }
        need(
            field(&r.geometry, "format") == Some(S16_LE)
                && field(&r.geometry, "sample_bits") == Some(16)
                && field(&r.geometry, "interleaved") == Some(1)
                && field(&r.geometry, "slave_kind") == Some(0),
            format!("C {k}: geometry {:?}", r.geometry),
        );
        need(
            field(&r.layout, "max_clients") == Some(64)
                && field(&r.layout, "slots_offset") == Some(256)
                && field(&r.layout, "sum_len") == Some(4096 * 2 * 8),
            format!("C {k}: layout {:?}", r.layout),
        );
        need(
            r.device == "/dev/snd/pcmC0D0p",
            format!("C {k}: device {:?}, expected /dev/snd/pcmC0D0p", r.device),
        );
        let pids: Vec<u32> = r.slots.keys().copied().collect();
        need(
            pids == want,
            format!("C {k}: slot pids {pids:?}, players {want:?}"),
        );
        for (pid, s) in &r.slots {
            // The client's own parameters (aplay of a 48 kHz S16_LE stereo file), unity volume,
            // a delay within its buffer.
            need(
                field(s, "format") == Some(S16_LE)
                    && field(s, "rate") == Some(RATE as i64)
                    && field(s, "channels") == Some(2)
                    && field(s, "volume") == Some(1 << 16)
                    && field(s, "muted") == Some(0)
                    && field(s, "period_size").is_some_and(|p| p > 0)
                    && field(s, "buffer_size").is_some_and(|b| b > 0)
                    && field(s, "delay")
                        .zip(field(s, "buffer_size"))
                        .is_some_and(|(d, b)| d <= b)
                    && field(s, "played").is_some(),
                format!("C {k}: slot of pid {pid}: {s:?}"),
            );
        }
    }

    // ---- interleaved readings C1 J1 C2 J2 C3 of each client's counters. xruns, late samples,
    // wakeups and early wakeups only grow; frames mixed counts the current run (reset when the
    // client restarts after an xrun), so it must not decrease between two readings of the same
    // run (same xrun count) and must grow in at least one.
    let mut report = Vec::new();
    for pid in &want {
        let cs: Vec<Option<&BTreeMap<String, String>>> =
            readings.iter().map(|r| r.slots.get(pid)).collect();
        let js: Vec<Option<Json>> = jsons
            .iter()
            .map(|j| {
                j.get("mixers").arr().first().and_then(|m| {
                    m.get("clients")
                        .arr()
                        .iter()
                        .find(|x| x.get("pid").num() == Some(*pid as i64))
                        .cloned()
                })
            })
            .collect();
        // (C key, JSON key) of each counter, read in the order C1 J1 C2 J2 C3. The C reader
        // gives every counter; `rdmix status --json` those it prints (None where it has none).
        let series = |ck: &str, jk: &str| -> Vec<Option<i64>> {
            let c = |k: usize| cs[k].and_then(|s| field(s, ck));
            let j = |k: usize| js[k].as_ref().and_then(|x| x.get(jk).num());
            vec![c(0), j(0), c(1), j(1), c(2)]
        };
        let present = |v: &[Option<i64>]| v.iter().flatten().copied().collect::<Vec<i64>>();
        let mut line = format!("pid {pid}:");
        for (ck, jk) in [
            ("xruns", "xruns"),
            ("late", "late_samples"),
            ("wakeups", "wakeups"),
            ("early_wakeups", "early_wakeups"),
            ("clips", "clips"),
        ] {
            let v = series(ck, jk);
            need(
                v[0].is_some()
                    && v[2].is_some()
                    && v[4].is_some()
                    && present(&v).windows(2).all(|w| w[0] <= w[1]),
                format!("pid {pid}: {ck} C1 J1 C2 J2 C3 = {v:?} (must not decrease)"),
            );
            if ck == "xruns" || ck == "wakeups" {
                line.push_str(&format!(" {ck} {v:?}"));
            }
        }
        let wk = series("wakeups", "wakeups");
        need(
            wk[4] > wk[0],
            format!("pid {pid}: wakeups did not grow: {wk:?}"),
        );
        // Frames mixed and frames played count the current run: they must not decrease between
        // two readings of the same run (same xrun count) and must grow in at least one.
        let xr = series("xruns", "xruns");
        for (ck, jk) in [("frames_mixed", "frames_mixed"), ("played", "position")] {
            let v = series(ck, jk);
            let idx: Vec<usize> = (0..5).filter(|&k| v[k].is_some()).collect();
            need(
                v[0].is_some() && v[2].is_some() && v[4].is_some(),
                format!("pid {pid}: {ck} C1 J1 C2 J2 C3 = {v:?}: the C reader must give it"),
            );
            let mut grew = false;
            for w in idx.windows(2) {
                let (a, b) = (w[0], w[1]);
                if xr[a].is_some() && xr[a] == xr[b] {
                    need(
                        v[a] <= v[b],
                        format!(
                            "pid {pid}: {ck} went from {:?} to {:?} within one run (C1 J1 C2 J2 \
                             C3 = {v:?}, xruns {xr:?})",
                            v[a], v[b]
                        ),
                    );
                    grew |= v[a] < v[b];
                }
            }
            need(
                grew,
                format!("pid {pid}: {ck} never grew within a run: {v:?}, xruns {xr:?}"),
            );
            line.push_str(&format!(" {ck} {v:?}"));
        }
        // What the JSON says of the client's parameters is what the C reader read.
        for j in js.iter().flatten() {
            let c = cs[0];
            for key in ["channels", "rate", "period_size", "buffer_size"] {
                if let Some(jv) = j.get(key).num() {
                    need(
                        c.and_then(|s| field(s, key)) == Some(jv),
                        format!(
                            "pid {pid}: {key} {jv} in the JSON, {:?} in C",
                            c.map(|s| s.get(key))
                        ),
                    );
                }
            }
            if let Some(f) = j.get("format").str() {
                need(f == "S16_LE", format!("pid {pid}: JSON client format {f}"));
            }
            if let Some(v) = j.get("volume").float() {
                need(v == 1.0, format!("pid {pid}: JSON volume {v}"));
            }
            if !matches!(j.get("muted"), Json::Other) {
                need(
                    j.get("muted") == &Json::Bool(false),
                    format!("pid {pid}: JSON muted {:?}", j.get("muted")),
                );
            }
        }
        // The slot index is the same in both.
        let cslot = cs[0].and_then(|s| field(s, "slot"));
        let jslot = js[0].as_ref().and_then(|x| x.get("slot").num());
        need(
            cslot.is_some() && cslot == jslot,
            format!("pid {pid}: slot {cslot:?} in C, {jslot:?} in Rust"),
        );
        report.push(format!("slot {} {line}", cslot.unwrap_or(-1)));
    }

    println!("c_reader: VM run {vm_secs:.1} s (boot included); mixer @{socket}");
    println!(
        "  C reader: {}",
        read(&dir, "reader_2.txt").lines().nth(2).unwrap_or("")
    );
    for l in &report {
        println!("  {l} (readings C1 J1 C2 J2 C3)");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
