//! `rdmix install` in the test VM, one boot: a clean install into the guest's own filesystem,
//! `aplay -D rdmix` with no configuration of ours (bit-exact through the loopback),
//! `rdmix install --default` and a plain `aplay` through rdmix, then `rdmix uninstall`, after
//! which every path under /usr, /etc and /var is as before.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;

const RATE: u32 = 48_000;
const FRAMES: u32 = 2 * RATE;
const SALT: u16 = 0;
const PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/alsa-lib";

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| format!("<{f} missing>"))
}

fn status(dir: &Path, f: &str) -> i32 {
    read(dir, f).trim().parse().unwrap_or(-999)
}

/// The signal as S32_LE (each sample << 16): what `aplay -D rdmix` plays on an S32 slave.
fn write_wav_s32(path: &Path, frames: &[[i16; 2]]) {
    let data_len = frames.len() as u32 * 8;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 8).to_le_bytes());
    b.extend_from_slice(&8u16.to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for f in frames {
        for s in f {
            b.extend_from_slice(&((*s as i32) << 16).to_le_bytes());
        }
    }
    std::fs::write(path, b).expect("write wav");
}

/// An S32_LE stereo capture of the signal: (the top 16 bits, samples with low bits set).
fn read_s32_capture(path: &Path) -> (Vec<[i16; 2]>, u32) {
    let raw = std::fs::read(path).unwrap_or_default();
    let mut low = 0;
    let cap = raw
        .chunks_exact(8)
        .map(|c| {
            let l = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let r = i32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            low += ((l & 0xffff) != 0) as u32 + ((r & 0xffff) != 0) as u32;
            [(l >> 16) as i16, (r >> 16) as i16]
        })
        .collect();
    (cap, low)
}

/// The capture holds frames 0..n of the signal each exactly once, in order, with only silence
/// between them: Ok(the number of silent gaps inside the signal).
fn in_order_with_gaps(cap: &[[i16; 2]], n: u32) -> Result<usize, String> {
    let (mut next, mut gaps, mut in_gap) = (0u32, 0usize, false);
    for (i, f) in cap.iter().enumerate() {
        if *f == [0, 0] {
            in_gap = next > 0;
            continue;
        }
        let idx = decode(*f, SALT);
        if idx != next {
            return Err(format!(
                "capture frame {i} is signal frame {idx}, expected {next}"
            ));
        }
        gaps += (in_gap && next > 0) as usize;
        in_gap = false;
        next += 1;
    }
    if next == n {
        Ok(gaps)
    } else {
        Err(format!("{next} of {n} frames"))
    }
}

/// Check one play step's capture (S32_LE, the signal << 16). Exact is required, with one
/// exception: when aplay itself reported an underrun (the VM starved the player on a loaded
/// host), the capture must still hold every frame exactly once, in order, only silence between.
fn check_capture(dir: &Path, step: &str) -> (bool, String) {
    let (cap, low) = read_s32_capture(&dir.join(format!("cap_{step}.raw")));
    let a = analyze(&cap, FRAMES, SALT);
    // When the signal began, from the capture start (aplay was launched 0.4 s into it), and
    // how long aplay ran (guest clock).
    let first = cap.iter().position(|f| *f != [0, 0]).unwrap_or(cap.len());
    let secs = |f: &str| read(dir, f).trim().parse::<f64>().ok();
    let ran = match (
        secs(&format!("launched_{step}")),
        secs(&format!("ended_{step}")),
    ) {
        (Some(a), Some(b)) => format!("{:.2} s", b - a),
        _ => "?".into(),
    };
    let timing = format!(
        "signal began {:.2} s into a {:.2} s capture, aplay ran {ran}",
        first as f64 / RATE as f64,
        cap.len() as f64 / RATE as f64
    );
    let played = status(dir, &format!("status_{step}")) == 0 && low == 0;
    if a.is_exact(FRAMES) {
        return (
            played,
            format!("{} (low bits set: {low}); {timing}", a.summary(FRAMES)),
        );
    }
    let underran = read(dir, &format!("play_{step}.log")).contains("underrun!!!");
    match in_order_with_gaps(&cap, FRAMES) {
        Ok(gaps) if underran => (
            played,
            format!(
                "aplay underran (the VM starved it): {gaps} silent gap(s), every one of the \
                 {FRAMES} frames once and in order (low bits set: {low}); {timing}"
            ),
        ),
        r => (
            false,
            format!(
                "{}; in order with gaps: {r:?}; aplay reported an underrun: {underran}; {timing}",
                a.summary(FRAMES)
            ),
        ),
    }
}

#[test]
fn install_play_default_uninstall_in_the_vm() {
    let (so, server) = artifacts();
    let rdmix = PathBuf::from(env!("CARGO_BIN_EXE_rdmix"));
    let dir = out_dir("install");
    let sig = signal(FRAMES, SALT);
    write_wav(&dir.join("sig16.wav"), RATE, &sig);
    write_wav_s32(&dir.join("sig32.wav"), &sig);

    let t = Instant::now();
    let (code, _) = run_vm(
        &project_root().join("tests/guest/install.sh"),
        &[
            ("OUT", dir.display().to_string()),
            ("SO", so.display().to_string()),
            ("SERVER", server.display().to_string()),
            ("RDMIX", rdmix.display().to_string()),
        ],
        120,
    );
    let vm_secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "guest script failed (status {code})");

    let mut failures = Vec::new();
    let mut report = vec![format!("VM run (boot included): {vm_secs:.1} s")];
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // The guest as the test expects it: Loopback is card 0, which `-D rdmix` plays to, no
    // asound.conf, .asoundrc or ALSA_* variable, and no rdmix file before the install.
    let cards = read(&dir, "cards.txt");
    check(
        cards
            .lines()
            .next()
            .is_some_and(|l| l.contains("[Loopback")),
        format!("card 0 is not the Loopback: {cards}"),
    );
    let before = read(&dir, "before.txt");
    check(
        before.contains("no ALSA_* variables")
            && !before
                .lines()
                .any(|l| l.starts_with("exists") || l.starts_with("rdmix file")),
        format!("the guest had configuration before the install: {before}"),
    );

    // The install, where it put things, and the second install.
    let install = read(&dir, "install.log");
    report.push(format!(
        "install:\n    {}",
        install.trim().replace('\n', "\n    ")
    ));
    check(
        status(&dir, "status_install") == 0,
        format!("rdmix install failed: {install}"),
    );
    check(
        status(&dir, "status_install2") == 0
            && read(&dir, "manifest1.txt") == read(&dir, "manifest2.txt"),
        format!(
            "second install not idempotent: {}",
            read(&dir, "install2.log")
        ),
    );
    let installed = read(&dir, "listing_installed.txt");
    for (path, kind, mode) in [
        (
            format!("{PLUGIN_DIR}/libasound_module_pcm_rdmix.so"),
            "regular file",
            "644",
        ),
        (
            "/usr/libexec/rdmix/rdmix-server".into(),
            "regular file",
            "755",
        ),
        ("/usr/bin/rdmix".into(), "regular file", "755"),
        (
            "/usr/share/alsa/alsa.conf.d/50-rdmix.conf".into(),
            "regular file",
            "644",
        ),
        (
            "/etc/alsa/conf.d/50-rdmix.conf".into(),
            "symbolic link",
            "777",
        ),
        (
            "/var/lib/rdmix/installed-files".into(),
            "regular file",
            "644",
        ),
    ] {
        check(
            installed.lines().any(|l| {
                let f: Vec<&str> = l.split('|').collect();
                f.len() >= 4 && f[0] == path && f[1] == kind && f[3] == mode
            }),
            format!("{path} not installed as a {kind} with mode {mode}"),
        );
    }

    // 1. aplay -D rdmix, then 2. plain aplay after --default (S16 file through plug into
    // rdmix: S16 → S32 exactly).
    for (step, what, pre) in [
        ("rdmix", "aplay -D rdmix (S32_LE file)", None),
        (
            "default",
            "aplay, default PCM (S16 file)",
            Some("install_default"),
        ),
    ] {
        if let Some(pre) = pre {
            check(
                status(&dir, &format!("status_{pre}")) == 0,
                format!("rdmix {pre} failed: {}", read(&dir, &format!("{pre}.log"))),
            );
        }
        let (ok, line) = check_capture(&dir, step);
        report.push(format!("{what}: {line}"));
        check(
            ok,
            format!(
                "{what} (status {}): {line}; {}",
                status(&dir, &format!("status_{step}")),
                read(&dir, &format!("play_{step}.log"))
            ),
        );
    }

    // Both went through the installed rdmix: the installed server ran (found by the plugin
    // from the multiarch plugin directory), the player mapped the installed plugin, and the
    // installed `rdmix status` saw aplay as its client.
    for step in ["rdmix", "default"] {
        let exe = read(&dir, &format!("server_exe_{step}"));
        let maps = read(&dir, &format!("maps_{step}"));
        let st = read(&dir, &format!("rdmix_status_{step}.json"));
        report.push(format!(
            "{step}: server {} | plugin mapped {} | status {}",
            exe.trim(),
            maps.trim().replace('\n', ", "),
            st.trim()
        ));
        check(
            exe.trim() == "/usr/libexec/rdmix/rdmix-server",
            format!("{step}: the running server is not the installed one: {exe:?}"),
        );
        check(
            maps.lines().any(|l| {
                l.ends_with("/alsa-lib/libasound_module_pcm_rdmix.so")
                    && (l.starts_with("/usr/lib/x86_64-linux-gnu/")
                        || l.starts_with("/lib/x86_64-linux-gnu/"))
            }),
            format!("{step}: aplay did not map the installed plugin: {maps:?}"),
        );
        check(
            st.contains("\"program\":\"aplay\"") && st.contains("\"card\":0"),
            format!("{step}: rdmix status does not show aplay on card 0: {st}"),
        );
        check(
            read(&dir, &format!("servers_after_{step}"))
                .trim()
                .is_empty(),
            format!("{step}: rdmix-server left running"),
        );
    }
    check(
        status(&dir, "status_arecord_default") == 0,
        format!(
            "arecord on the default PCM failed: {}",
            read(&dir, "arecord_default.log")
        ),
    );
    check(
        status(&dir, "status_amixer_default") == 0,
        format!(
            "amixer on the default control failed: {}",
            read(&dir, "amixer_default.log")
        ),
    );

    // 3. Uninstall: the tree is as before, to the byte counts and modes.
    let uninstall = read(&dir, "uninstall.log");
    report.push(format!(
        "uninstall:\n    {}",
        uninstall.trim().replace('\n', "\n    ")
    ));
    check(
        status(&dir, "status_uninstall") == 0,
        format!("rdmix uninstall failed: {uninstall}"),
    );
    check(
        status(&dir, "status_uninstall2") == 0
            && read(&dir, "uninstall2.log").contains("nothing to uninstall"),
        format!(
            "second uninstall did not say there is nothing to do: {}",
            read(&dir, "uninstall2.log")
        ),
    );
    let b = read(&dir, "listing_before.txt");
    let after = read(&dir, "listing_after.txt");
    let (bl, al): (Vec<&str>, Vec<&str>) = (b.lines().collect(), after.lines().collect());
    let gone: Vec<&&str> = bl.iter().filter(|l| !al.contains(l)).collect();
    let added: Vec<&&str> = al.iter().filter(|l| !bl.contains(l)).collect();
    report.push(format!(
        "listing of /usr /etc /var: {} paths before, {} with rdmix installed, {} after \
         uninstall; {} differ",
        bl.len(),
        installed.lines().count(),
        al.len(),
        gone.len() + added.len()
    ));
    check(
        bl.len() > 100,
        format!("listing before is too short: {}", bl.len()),
    );
    check(
        gone.is_empty() && added.is_empty(),
        format!("after uninstall the tree differs: gone {gone:?}, added {added:?}"),
    );
    check(
        status(&dir, "status_play_gone") != 0,
        "aplay -D rdmix still worked after uninstall".into(),
    );

    // Guest timings, from /proc/uptime.
    let times = read(&dir, "timings");
    let marks: Vec<(String, f64)> = times
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    if let Some((_, t0)) = marks.first() {
        report.push(format!(
            "guest timings (s since the script started): {}",
            marks
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", v - t0))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    println!("---- report ----\n{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "failures:\n  {}",
        failures.join("\n  ")
    );
}
