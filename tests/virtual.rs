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
    slave {{ format S16_LE rate 48000 channels 2 period_size 512 buffer_size 2048 }}
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
}
