//! The virtual slave on the host itself (no VM, no sound card): the README's main command
//! (tests/demo.sh) mixes two aplay streams into a WAV that must be the exact sum; the ALSA-PCM
//! sink delivers the mix bit-exact through alsa-lib's `file` plugin; the null sink plays in real
//! time; a client whose server dies fails with ENODEV instead of hanging; a sink that cannot
//! take the format is refused with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The tests here play in real time on the host's own CPUs: one at a time, so that they do not
/// starve each other's players into underruns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn conf_env(conf: &Path) -> (String, String) {
    (
        "ALSA_CONFIG_PATH".into(),
        format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
    )
}

fn write_conf(dir: &Path, body: &str) -> PathBuf {
    let (so, server) = artifacts();
    let conf = format!(
        "pcm_type.rdmix {{ lib \"{}\" }}\n{}\n",
        so.display(),
        body.replace("@SERVER@", &server.display().to_string())
    );
    let p = dir.join("asound.conf");
    std::fs::write(&p, conf).expect("write asound.conf");
    p
}

/// Pids of the processes whose command line (arguments joined by spaces) contains `args`.
fn servers_with_args(args: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("rdmix-server") && cmd.contains(args) {
            v.push(pid);
        }
    }
    v
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Raw interleaved S16_LE stereo: a ramp on the left, a different ramp on the right, never 0.
fn signal(frames: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(frames * 4);
    for i in 0..frames {
        let l = ((i * 7) % 30000) as i16 + 1;
        let r = -(((i * 13) % 30000) as i16) - 1;
        v.extend_from_slice(&l.to_le_bytes());
        v.extend_from_slice(&r.to_le_bytes());
    }
    v
}

#[test]
fn readme_main_command_mixes_two_streams_exactly() {
    let _serial = serial();
    let dir = out_dir("virtual_demo");
    let t = Instant::now();
    let out = Command::new(project_root().join("tests/demo.sh"))
        .arg(&dir)
        .output()
        .expect("run tests/demo.sh");
    let text = show(&out);
    println!(
        "{text}\n(tests/demo.sh took {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "tests/demo.sh failed:\n{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("every sample the exact saturated sum"),
        "no exact-mix verdict:\n{text}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("client pid="))
            .count(),
        2,
        "the summary must list both clients:\n{text}"
    );
    assert!(
        stdout.contains("client(s)") && stdout.matches(" aplay ").count() >= 2,
        "rdmix status during the demo must show the mixer and both aplay clients:\n{text}"
    );
}

#[test]
fn pcm_sink_feeds_alsa_file_plugin_bit_exact() {
    let _serial = serial();
    let dir = out_dir("virtual_pcm_sink");
    let raw = dir.join("sink.raw");
    let conf = write_conf(
        &dir,
        &format!(
            r#"pcm.tofile {{ type file slave.pcm null file "{}" format raw }}
pcm.vpcm {{
    type rdmix
    server "@SERVER@"
    virtual {{ sink pcm pcm "tofile" }}
    slave {{ format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 16384 }}
}}"#,
            raw.display()
        ),
    );
    let frames = 24_000;
    let input = signal(frames);
    let src = dir.join("in.raw");
    std::fs::write(&src, &input).unwrap();
    let (k, v) = conf_env(&conf);
    let out = Command::new("aplay")
        .args([
            "-q", "-D", "vpcm", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2",
        ])
        .arg(&src)
        .env(k, v)
        .output()
        .expect("run aplay");
    assert!(out.status.success(), "aplay failed:\n{}", show(&out));
    // The server finishes the sink when its last client has gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = std::fs::read(&raw).unwrap_or_default();
        let done = servers_with_args("--virtual pcm:tofile").is_empty();
        if done && !got.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The file holds the device's whole output: silence, the signal exactly, silence.
    let start = got
        .chunks_exact(4)
        .position(|f| f != [0, 0, 0, 0])
        .expect("the sink received only silence");
    let body = &got[start * 4..];
    assert!(
        body.len() >= input.len(),
        "the sink got {} frames after the start at {start}, the input has {frames}",
        body.len() / 4
    );
    let diff = body[..input.len()]
        .chunks_exact(4)
        .zip(input.chunks_exact(4))
        .position(|(a, b)| a != b);
    assert_eq!(diff, None, "the sink's frames differ from the input");
    assert!(
        body[input.len()..].iter().all(|&b| b == 0),
        "non-silence after the signal"
    );
    println!(
        "pcm sink: {frames} frames bit-exact in {} at frame {start}, {} frames in all",
        raw.display(),
        got.len() / 4
    );
}

#[test]
fn null_sink_plays_in_real_time() {
    let _serial = serial();
    let dir = out_dir("virtual_null");
    let conf = write_conf(
        &dir,
        r#"pcm.vnull { type rdmix server "@SERVER@" virtual { sink null } }"#,
    );
    let src = dir.join("in.raw");
    std::fs::write(&src, signal(48_000)).unwrap();
    let (k, v) = conf_env(&conf);
    let t = Instant::now();
    let out = Command::new("aplay")
        .args([
            "-q", "-D", "vnull", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2",
        ])
        .arg(&src)
        .env(k, v)
        .output()
        .expect("run aplay");
    let took = t.elapsed().as_secs_f64();
    println!("null sink: 1.0 s of audio played in {took:.2} s");
    assert!(out.status.success(), "aplay failed:\n{}", show(&out));
    // A clock: one second of audio takes about a second (not instantly, not forever).
    assert!((0.9..3.0).contains(&took), "1 s of audio took {took:.2} s");
}

#[test]
fn client_fails_with_enodev_when_the_server_dies() {
    let _serial = serial();
    let dir = out_dir("virtual_server_killed");
    let conf = write_conf(
        &dir,
        r#"pcm.vkill { type rdmix server "@SERVER@" ipc_key 77 virtual { sink null } }"#,
    );
    let src = dir.join("in.raw");
    std::fs::write(&src, signal(48_000 * 20)).unwrap();
    let (k, v) = conf_env(&conf);
    let mut child = Command::new("aplay")
        .args([
            "-q", "-D", "vkill", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2",
        ])
        .arg(&src)
        .env(k, v)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run aplay");
    std::thread::sleep(Duration::from_millis(700));
    // This test's own mixer (ipc_key 77): the null-sink test may run a server alongside.
    let pid = *servers_with_args("/k77 --virtual null")
        .first()
        .unwrap_or_else(|| panic!("no rdmix-server of ipc_key 77 with --virtual null running"));
    // SAFETY: sending a signal to a process we found by its command line.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("aplay still running 10 s after its server was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    println!(
        "server killed: aplay ended after {:.2} s with {status}: {}",
        t.elapsed().as_secs_f64(),
        err.trim()
    );
    assert!(!status.success(), "aplay must fail when its mixer is gone");
    assert!(
        err.contains("rdmix-server is gone") || err.contains("No such device"),
        "the error must say the device is gone: {err}"
    );
}

#[test]
fn wav_sink_refuses_a_format_wav_cannot_hold() {
    let _serial = serial();
    let dir = out_dir("virtual_bad_format");
    let conf = write_conf(
        &dir,
        &format!(
            r#"pcm.vbe {{ type rdmix server "@SERVER@" virtual {{ sink wav file "{}/x.wav" }} slave {{ format S16_BE }} }}"#,
            dir.display()
        ),
    );
    let (k, v) = conf_env(&conf);
    let out = Command::new("aplay")
        .args(["-q", "-D", "vbe", "-d", "1", "-t", "raw", "/dev/zero"])
        .env(k, v)
        .output()
        .expect("run aplay");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{}", err.trim());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(err.contains("S16_BE") && err.contains("WAV"), "{err}");
    assert!(
        !dir.join("x.wav").exists(),
        "a refused sink must create no file"
    );

    // A file the server cannot create fails the open at once, naming the path and the cause
    // (the sink is opened before the server goes to the background).
    let conf = write_conf(
        &dir,
        r#"pcm.vnodir { type rdmix server "@SERVER@" virtual { sink wav file "/nonexistent-dir/x.wav" } }"#,
    );
    let (k, v) = conf_env(&conf);
    let t = Instant::now();
    let out = Command::new("aplay")
        .args(["-q", "-D", "vnodir", "-d", "1", "-t", "raw", "/dev/zero"])
        .env(k, v)
        .output()
        .expect("run aplay");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{} ({:.2} s)", err.trim(), t.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        err.contains("/nonexistent-dir/x.wav") && err.contains("No such file"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the refusal took {:?}",
        t.elapsed()
    );
}

/// A raw S16_LE stereo file of a quiet ramp pair (|sample| ≤ 8000: two of them never saturate).
fn quiet_signal(frames: usize, salt: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(frames * 4);
    for i in 0..frames {
        let l = (((i * 7 + salt) % 16000) as i32 - 8000) as i16;
        let r = (((i * 11 + salt * 3) % 16000) as i32 - 8000) as i16;
        v.extend_from_slice(&l.to_le_bytes());
        v.extend_from_slice(&r.to_le_bytes());
    }
    v
}

fn s16(b: &[u8], i: usize) -> i32 {
    i32::from(i16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
}

#[test]
fn volume_and_mute_change_one_client_exactly_and_top_renders() {
    let _serial = serial();
    let dir = out_dir("virtual_volume");
    let wav = dir.join("mix.wav");
    let conf = write_conf(
        &dir,
        &format!(
            r#"pcm.vvol {{ type rdmix server "@SERVER@" ipc_key 91 virtual {{ sink wav file "{}" }}
    slave {{ format S16_LE rate 48000 channels 2 period_size 1024 buffer_size 16384 }} }}"#,
            wav.display()
        ),
    );
    let (a, b) = (quiet_signal(48_000 * 4, 0), quiet_signal(48_000 * 4, 5));
    std::fs::write(dir.join("a.raw"), &a).unwrap();
    std::fs::write(dir.join("b.raw"), &b).unwrap();
    let (k, v) = conf_env(&conf);
    let rdmix = PathBuf::from(env!("CARGO_BIN_EXE_rdmix"));
    let play = |f: &str| {
        Command::new("aplay")
            .args([
                "-q", "-D", "vvol", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2",
            ])
            .arg(dir.join(f))
            .env(&k, &v)
            .spawn()
            .expect("run aplay")
    };
    let mut pa = play("a.raw");
    let mut pb = play("b.raw");
    let pid = pa.id().to_string();
    let run = |args: &[&str]| {
        let o = Command::new(&rdmix).args(args).output().expect("run rdmix");
        println!(
            "rdmix {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout).trim()
        );
        assert!(o.status.success(), "rdmix {args:?} failed:\n{}", show(&o));
    };
    std::thread::sleep(Duration::from_millis(800));
    run(&["volume", &pid, "0.5"]);
    // `rdmix top` in a terminal (script gives it a pty): two frames with meters.
    let top = Command::new("script")
        .args([
            "-qec",
            &format!("{} top --count 2 --interval 200", rdmix.display()),
            "/dev/null",
        ])
        .output()
        .expect("run script (util-linux)");
    let top_out = String::from_utf8_lossy(&top.stdout).to_string();
    println!(
        "rdmix top (last frame):\n{}",
        top_out.rsplit("\x1b[2J").next().unwrap_or("")
    );
    std::thread::sleep(Duration::from_millis(600));
    run(&["mute", &pid]);
    std::thread::sleep(Duration::from_millis(800));
    run(&["unmute", &pid]);
    assert!(pa.wait().unwrap().success() && pb.wait().unwrap().success());
    let summary = dir.join("mix.wav.txt");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !summary.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&summary).expect("summary");
    print!("{text}");
    let start = |p: u32| -> usize {
        text.lines()
            .find(|l| l.contains(&format!("pid={p} ")))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("start_frame="))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no start for pid {p} in the summary"))
    };
    let (sa, sb) = (start(pa.id()), start(pb.id()));
    assert!(
        !text.contains("xruns=1") && text.contains("xruns=0"),
        "a client underran (the check below needs both continuous):\n{text}"
    );
    let mix = std::fs::read(&wav).unwrap();
    let mix = &mix[44..];
    // A's contribution, frame by frame, must go through unity -> 0.5 -> muted -> 0.5, each
    // change at one frame for both channels, every sample exact.
    let half = |x: i32| (x * 32768 + 32768) >> 16;
    let phases: [&dyn Fn(i32) -> i32; 4] = [&|x| x, &half, &|_| 0, &half];
    let (mut phase, mut seen) = (0usize, [0usize; 4]);
    let frames_a = a.len() / 4;
    for f in 0..frames_a {
        let m = sa + f;
        let mut want_b = [0i32; 2];
        if m >= sb && m - sb < b.len() / 4 {
            want_b = [s16(&b, 2 * (m - sb)), s16(&b, 2 * (m - sb) + 1)];
        }
        let got = [s16(mix, 2 * m) - want_b[0], s16(mix, 2 * m + 1) - want_b[1]];
        let x = [s16(&a, 2 * f), s16(&a, 2 * f + 1)];
        let fits = |p: usize| (0..2).all(|c| phases[p](x[c]) == got[c]);
        // Stay while the current phase fits (values can fit several phases at once).
        while !fits(phase) {
            phase += 1;
            assert!(
                phase < 4,
                "frame {f} of client A: mix-minus-B {got:?} fits no phase (A {x:?})"
            );
        }
        seen[phase] += 1;
    }
    println!("client A frames per phase (unity, 0.5, muted, 0.5): {seen:?}");
    assert!(
        seen.iter().all(|&n| n > 4800),
        "every phase must last: {seen:?}"
    );
    assert!(
        top_out.contains("\x1b[2J") && top_out.contains("[#") && top_out.contains(&pid),
        "rdmix top did not render meters for pid {pid}:\n{top_out}"
    );
    assert!(
        top_out.contains("0.50"),
        "rdmix top must show volume 0.50:\n{top_out}"
    );
}
