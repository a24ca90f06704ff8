//! The application matrix, in the test VM (one boot of the larger RDMIX_VM_APPS image): real
//! programs play through `-D rdmix` onto snd-aloop, `arecord` captures the loopback, and the
//! host checks each capture:
//!
//! * bit-exact against the source where the program passes samples through unchanged (aplay
//!   RW / mmap / non-blocking, sox `play`, ffmpeg `-f alsa` of a pcm_s16le WAV, Python through
//!   pyalsaaudio, examples/alsa_play and examples/cpal_play): the self-indexing signal of
//!   tests/common, every frame in order, silence around it;
//! * bit-exact against the same program's own decode to a file for decoders (mpg123 -w, and
//!   ffmpeg writing the same decode to a WAV and to rdmix in one run), offset recovered by
//!   mixcheck's cross-correlation;
//! * speaker-test's sine: frequency from zero crossings and peak level, right channel silent;
//! * alsabat: its own analysis of what it captured through the loopback (exit 0, and its
//!   "PASS" lines).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use asound_module_pcm_rdmix::mix::SlaveFormat;
use common::mixcheck::{self, Signal};
use common::*;

const RATE: u32 = 48_000;
const FRAMES: u32 = RATE;
/// VM time allowed to the whole run, boot included (CI budget).
const VM_TIMEOUT_S: u32 = 200;

/// Rows playing the self-indexing signal, with the salt each one plays.
const EXACT_ROWS: [(&str, &str, &str, u16); 8] = [
    ("aplay_rw", "aplay", "RW interleaved", 10),
    ("aplay_mmap", "aplay -M", "mmap interleaved", 11),
    ("aplay_nonblock", "aplay -N", "RW non-blocking", 12),
    ("sox_play", "sox play", "WAV S16_LE 48k", 13),
    ("ffmpeg_wav", "ffmpeg -f alsa", "pcm_s16le WAV", 14),
    ("python", "python3 + pyalsaaudio", "PCM.write", 20),
    ("alsa_play", "examples/alsa_play", "alsa crate writei", 1),
    ("cpal_play", "examples/cpal_play", "cpal callback i16", 2),
];

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| format!("<{f} missing>"))
}

fn status(dir: &Path, f: &str) -> i32 {
    read(dir, f).trim().parse().unwrap_or(-999)
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

/// The interleaved S16 stereo samples of a WAV file's `data` chunk (any header layout).
fn read_wav_s16_stereo(path: &Path) -> Result<Signal, String> {
    let b = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(format!("{} is not a RIFF/WAVE file", path.display()));
    }
    let mut p = 12;
    let mut fmt_ok = false;
    while p + 8 <= b.len() {
        let id = &b[p..p + 4];
        let len = u32::from_le_bytes([b[p + 4], b[p + 5], b[p + 6], b[p + 7]]) as usize;
        let body = &b[p + 8..(p + 8 + len).min(b.len())];
        if id == b"fmt " && body.len() >= 16 {
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let ch = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            // 1 = PCM, 0xFFFE = WAVE_FORMAT_EXTENSIBLE (ffmpeg/mpg123 may write either).
            if !(tag == 1 || tag == 0xFFFE) || ch != 2 || rate != RATE || bits != 16 {
                return Err(format!(
                    "{}: format tag {tag:#x}, {ch} ch, {rate} Hz, {bits} bits; want PCM 2 ch \
                     {RATE} Hz 16 bits",
                    path.display()
                ));
            }
            fmt_ok = true;
        }
        if id == b"data" {
            if !fmt_ok {
                return Err(format!("{}: data before fmt", path.display()));
            }
            return Ok(body
                .chunks_exact(4)
                .map(|c| {
                    vec![
                        i16::from_le_bytes([c[0], c[1]]) as i64,
                        i16::from_le_bytes([c[2], c[3]]) as i64,
                    ]
                })
                .collect());
        }
        p += 8 + len + (len & 1);
    }
    Err(format!("{}: no data chunk", path.display()))
}

struct Row {
    app: String,
    mode: String,
    frames: String,
    result: String,
    ok: bool,
}

/// A program's exit status and log, as a failure reason (None when it exited 0).
fn exit_problem(dir: &Path, name: &str) -> Option<String> {
    let st = status(dir, &format!("status_{name}"));
    (st != 0).then(|| {
        format!(
            "exit {st}: {}",
            tail(&read(dir, &format!("log_{name}.txt")), 3)
        )
    })
}

fn exact_row(dir: &Path, name: &str, app: &str, mode: &str, salt: u16) -> Row {
    let cap = read_raw_s16_stereo(&dir.join(format!("cap_{name}.raw")));
    let a = analyze(&cap, FRAMES, salt);
    let mut problems: Vec<String> = exit_problem(dir, name).into_iter().collect();
    if !a.is_exact(FRAMES) {
        problems.push(a.summary(FRAMES));
    }
    if name == "aplay_mmap" && !read(dir, "log_aplay_mmap.txt").contains("MMAP_INTERLEAVED") {
        problems.push("aplay -M did not report MMAP_INTERLEAVED access".into());
    }
    Row {
        app: app.into(),
        mode: mode.into(),
        frames: format!("{} / {FRAMES}", a.run_len),
        result: if problems.is_empty() {
            "exact".into()
        } else {
            format!("FAIL: {}", problems.join("; "))
        },
        ok: problems.is_empty(),
    }
}

/// A decoder's playback against its own decode to a file: exact, offset recovered.
fn decode_row(dir: &Path, name: &str, app: &str, mode: &str, decoded: &str) -> Row {
    let mut problems: Vec<String> = exit_problem(dir, name).into_iter().collect();
    let mut frames = "0".to_string();
    match read_wav_s16_stereo(&dir.join(decoded)) {
        Err(e) => problems.push(format!("reference decode: {e}")),
        Ok(reference) if reference.len() < (RATE / 2) as usize => problems.push(format!(
            "reference decode has only {} frames",
            reference.len()
        )),
        Ok(reference) => {
            let cap =
                mixcheck::read_raw(&dir.join(format!("cap_{name}.raw")), SlaveFormat::S16Le, 2);
            let r = mixcheck::check(&cap, SlaveFormat::S16Le, &[&reference]);
            frames = format!("{} (capture)", r.frames_checked);
            if r.is_exact() {
                frames = format!("{} + silence", reference.len());
            } else {
                problems.push(r.summary());
            }
        }
    }
    Row {
        app: app.into(),
        mode: mode.into(),
        frames,
        result: if problems.is_empty() {
            format!("exact vs its own decode ({decoded})")
        } else {
            format!("FAIL: {}", problems.join("; "))
        },
        ok: problems.is_empty(),
    }
}

/// speaker-test -t sine -f 1000 -s 1: a 1000 Hz sine on the left channel at its generator's
/// 0.8 of full scale (peak 26214), the right channel silent.
fn speaker_row(dir: &Path) -> Row {
    let cap = read_raw_s16_stereo(&dir.join("cap_speaker_test.raw"));
    let mut problems: Vec<String> = exit_problem(dir, "speaker_test").into_iter().collect();
    let right = cap.iter().filter(|f| f[1] != 0).count();
    if right != 0 {
        problems.push(format!("{right} non-silent frames on the right channel"));
    }
    let first = cap.iter().position(|f| f[0] != 0);
    let last = cap.iter().rposition(|f| f[0] != 0);
    let mut frames = "0".to_string();
    match (first, last) {
        (Some(a), Some(b)) if b - a >= (RATE / 10) as usize => {
            let l: Vec<f64> = cap[a..=b].iter().map(|f| f[0] as f64).collect();
            frames = l.len().to_string();
            // Rising zero crossings, interpolated, from the first to the last one.
            let mut ups = Vec::new();
            for i in 1..l.len() {
                if l[i - 1] < 0.0 && l[i] >= 0.0 {
                    ups.push((i - 1) as f64 + -l[i - 1] / (l[i] - l[i - 1]));
                }
            }
            let freq = if ups.len() >= 2 {
                (ups.len() - 1) as f64 * RATE as f64 / (ups[ups.len() - 1] - ups[0])
            } else {
                0.0
            };
            let peak = l.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let rms = (l.iter().map(|v| v * v).sum::<f64>() / l.len() as f64).sqrt();
            let want_rms = 26214.0 / 2f64.sqrt();
            frames = format!("{frames} ({freq:.2} Hz, peak {peak}, rms {rms:.0})");
            if (freq - 1000.0).abs() > 0.5 {
                problems.push(format!("frequency {freq:.3} Hz, want 1000 +- 0.5"));
            }
            if !(26200.0..=26216.0).contains(&peak) {
                problems.push(format!("peak {peak}, want 26214 (0.8 FS) +- 14"));
            }
            if (rms / want_rms - 1.0).abs() > 0.01 {
                problems.push(format!("rms {rms:.1}, want {want_rms:.1} +- 1%"));
            }
            // No gap: a sine at 0.8 FS has no run of 3 zero samples.
            let zeros = l.windows(3).filter(|w| w.iter().all(|v| *v == 0.0)).count();
            if zeros != 0 {
                problems.push(format!("{zeros} runs of 3 zero samples inside the tone"));
            }
        }
        _ => problems.push(format!(
            "no tone of at least 0.1 s on the left channel (non-silent span {first:?}..{last:?})"
        )),
    }
    Row {
        app: "speaker-test".into(),
        mode: "-t sine -f 1000 -s 1".into(),
        frames,
        result: if problems.is_empty() {
            "1000 Hz within 0.5 Hz, level within 1%".into()
        } else {
            format!("FAIL: {}", problems.join("; "))
        },
        ok: problems.is_empty(),
    }
}

fn alsabat_row(dir: &Path) -> Row {
    let log = read(dir, "log_alsabat.txt");
    let st = status(dir, "status_alsabat");
    let passes = log.lines().filter(|l| l.contains("PASS")).count();
    let detected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Detected peak") || l.contains("PASS") || l.contains("FAIL"))
        .collect();
    let ok = st == 0 && passes >= 1 && !log.contains("FAIL");
    Row {
        app: "alsabat".into(),
        mode: "-P rdmix -C hw:Loopback,1,0 -F 1000".into(),
        frames: "48000 (its own capture)".into(),
        result: if ok {
            format!("its analysis passed: {}", detected.join(" | "))
        } else {
            format!("FAIL: exit {st}: {}", tail(&log, 6))
        },
        ok,
    }
}

fn print_table(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str, h: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .max()
            .unwrap_or(0)
            .max(h.len())
    };
    let (wa, wm, wf) = (
        w(|r| r.app.as_str(), "app"),
        w(|r| r.mode.as_str(), "mode"),
        w(|r| r.frames.as_str(), "frames checked"),
    );
    println!(
        "| {:wa$} | {:wm$} | {:wf$} | result",
        "app", "mode", "frames checked"
    );
    println!(
        "|-{}-|-{}-|-{}-|-------",
        "-".repeat(wa),
        "-".repeat(wm),
        "-".repeat(wf)
    );
    for r in rows {
        println!(
            "| {:wa$} | {:wm$} | {:wf$} | {}",
            r.app, r.mode, r.frames, r.result
        );
    }
}

#[test]
fn application_matrix_plays_through_rdmix() {
    let (so, server) = artifacts();
    let alsa_play = example("alsa_play");
    let cpal_play = example("cpal_play");
    let root = project_root();

    // The host packages of the larger image (ffmpeg also encodes the mp3 below).
    let st = Command::new(root.join("tests/vm/setup-host.sh"))
        .env("RDMIX_VM_APPS", "1")
        .status()
        .expect("run tests/vm/setup-host.sh");
    assert!(st.success(), "setup-host.sh (RDMIX_VM_APPS=1) failed");

    let dir = out_dir("apps");
    for (name, _, _, salt) in EXACT_ROWS {
        let file = match name {
            "aplay_rw" => "sig_rw.wav",
            "aplay_mmap" => "sig_mmap.wav",
            "aplay_nonblock" => "sig_nonblock.wav",
            "sox_play" => "sig_sox.wav",
            "ffmpeg_wav" => "sig_ffmpeg.wav",
            _ => continue, // the programs generate their signal themselves
        };
        write_wav(&dir.join(file), RATE, &signal(FRAMES, salt));
    }
    // The decoders' input: 1 s of stereo noise, mp3 192 kbit/s, encoded here by the host's ffmpeg.
    let noise: Vec<[i16; 2]> = mixcheck::client_signal(0xA995, FRAMES as usize, 2, 8000)
        .iter()
        .map(|f| [f[0] as i16, f[1] as i16])
        .collect();
    write_wav(&dir.join("noise.wav"), RATE, &noise);
    let enc = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(dir.join("noise.wav"))
        .args(["-c:a", "libmp3lame", "-b:a", "192k"])
        .arg(dir.join("noise.mp3"))
        .status()
        .expect("run ffmpeg on the host");
    assert!(enc.success(), "host ffmpeg could not encode noise.mp3");

    let t = Instant::now();
    let mut cmd = Command::new(root.join("tests/vm/vm.sh"));
    cmd.env("RDMIX_VM_APPS", "1")
        .arg("--timeout")
        .arg(VM_TIMEOUT_S.to_string())
        .arg("--share")
        .arg(&root);
    for (k, v) in [
        ("OUT", &dir),
        ("SO", &so),
        ("SERVER", &server),
        ("ALSA_PLAY", &alsa_play),
        ("CPAL_PLAY", &cpal_play),
    ] {
        cmd.arg("--env").arg(format!("{k}={}", v.display()));
    }
    cmd.arg(root.join("tests/guest/apps.sh"));
    let out = cmd.output().expect("run tests/vm/vm.sh");
    let vm_secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(code, 0, "guest script failed (status {code})");

    let mut rows: Vec<Row> = EXACT_ROWS
        .iter()
        .map(|(name, app, mode, salt)| exact_row(&dir, name, app, mode, *salt))
        .collect();
    let mut mpg = decode_row(
        &dir,
        "mpg123",
        "mpg123",
        "-e s16 -o alsa, mp3",
        "dec_mpg123.wav",
    );
    if let Some(p) = exit_problem(&dir, "mpg123_dec") {
        mpg.ok = false;
        mpg.result = format!("FAIL: mpg123 -w: {p}");
    }
    rows.insert(5, mpg);
    rows.insert(
        6,
        decode_row(
            &dir,
            "ffmpeg_mp3",
            "ffmpeg -f alsa",
            "mp3 decode, tee to WAV",
            "dec_ffmpeg.wav",
        ),
    );
    rows.insert(7, speaker_row(&dir));
    rows.push(alsabat_row(&dir));

    let srv = read(&dir, "servers_at_end");
    println!("---- application matrix ----");
    print_table(&rows);
    let boot = stderr
        .lines()
        .find(|l| l.contains("guest ready at"))
        .unwrap_or("");
    println!(
        "VM run: {vm_secs:.1} s wall (vm.sh, boot included; {}), matrix {} s of guest time",
        boot.trim_start_matches("[vm] "),
        read(&dir, "secs_total").trim()
    );
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} rows failed: {}",
        failed.len(),
        rows.len(),
        failed
            .iter()
            .map(|r| format!("{} ({}): {}", r.app, r.mode, r.result))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(
        srv.trim().is_empty(),
        "rdmix-server still running after the matrix: {srv}"
    );
}
