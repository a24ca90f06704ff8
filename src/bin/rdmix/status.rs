//! `rdmix status` and `rdmix top`: what every mixer this user can see is doing.
//!
//! Mixers are found by their abstract socket names in /proc/net/unix; each server answers a
//! `Query` with its shared state (no slot is claimed, nothing touches the real-time path), and
//! everything shown is read from there: the mixer's geometry and device, and per client what the
//! client itself publishes as it plays (parameters, position, delay, xruns, peak, clips, volume).
//! The peak is "since the last look": reading it resets it.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use asound_module_pcm_rdmix::{client, hw, shm};

pub struct Mixer {
    pub socket: String,
    pub server_pid: u32,
    pub state: shm::SharedState,
}

/// One client, as its slot shows it.
pub struct Client {
    pub slot: u32,
    pub pid: u32,
    pub program: String,
    pub format: i32,
    pub channels: u32,
    pub rate: u32,
    pub period_size: u64,
    pub buffer_size: u64,
    pub played: u64,
    pub delay: u64,
    pub frames_mixed: u64,
    pub xruns: u32,
    pub late: u32,
    /// 0..=1 of full scale.
    pub peak: f64,
    pub clips: u32,
    pub volume: f64,
    pub muted: bool,
    pub wakeups: u64,
    pub early_wakeups: u64,
}

impl Client {
    pub fn latency_ms(&self) -> f64 {
        if self.rate == 0 {
            0.0
        } else {
            self.delay as f64 * 1000.0 / self.rate as f64
        }
    }
}

/// Abstract socket names of rdmix servers, from /proc/net/unix (listening sockets only).
fn mixer_sockets() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
            let path = cols.get(7)?;
            let listening = cols.get(3).is_some_and(|f| *f == "00010000");
            (listening && path.starts_with("@rdmix/")).then(|| path[1..].to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Every mixer that answers, and a message for each that does not.
pub fn gather() -> (Vec<Mixer>, Vec<String>) {
    let mut mixers = Vec::new();
    let mut errors = Vec::new();
    for name in mixer_sockets() {
        match client::query(&name).and_then(|r| {
            Ok(Mixer {
                socket: name.clone(),
                server_pid: r.server_pid,
                state: shm::SharedState::attach(r.shm_fd)?,
            })
        }) {
            Ok(m) => mixers.push(m),
            Err(e) => errors.push(format!("@{name}: {e}")),
        }
    }
    (mixers, errors)
}

impl Mixer {
    pub fn live_clients(&self) -> u32 {
        self.state.header().clients.load(Ordering::Acquire)
    }

    /// The live clients (taking their peaks).
    pub fn clients(&self) -> Vec<Client> {
        let mut v = Vec::new();
        for s in 0..shm::MAX_CLIENTS {
            let Some(c) = self.state.slot(s) else { break };
            let pid = c.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            v.push(Client {
                slot: s,
                pid,
                program: comm(pid),
                format: c.format.load(Ordering::Relaxed),
                channels: c.channels.load(Ordering::Relaxed),
                rate: c.rate.load(Ordering::Relaxed),
                period_size: c.period_size.load(Ordering::Relaxed),
                buffer_size: c.buffer_size.load(Ordering::Relaxed),
                played: c.played.load(Ordering::Relaxed),
                delay: c.delay.load(Ordering::Relaxed),
                frames_mixed: c.frames_mixed.load(Ordering::Relaxed),
                xruns: c.xruns.load(Ordering::Relaxed),
                late: c.late.load(Ordering::Relaxed),
                peak: c.peak.swap(0, Ordering::Relaxed) as f64 / shm::PEAK_FULL_SCALE as f64,
                clips: c.clips.load(Ordering::Relaxed),
                volume: c.volume.load(Ordering::Relaxed) as f64 / shm::VOLUME_UNITY as f64,
                muted: c.muted.load(Ordering::Relaxed) != 0,
                wakeups: c.wakeups.load(Ordering::Relaxed),
                early_wakeups: c.early_wakeups.load(Ordering::Relaxed),
            });
        }
        v
    }

    pub fn describe(&self) -> String {
        let g = self.state.geometry();
        format!(
            "{} {} Hz {} ch, period {} buffer {}",
            hw::format_name(g.format),
            g.rate,
            g.channels,
            g.period_size,
            g.buffer_size
        )
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn format_label(f: i32) -> &'static str {
    if f == 0 {
        "-"
    } else {
        hw::format_name(f)
    }
}

/// The whole picture as JSON (one object: `mixers`, `errors`).
pub fn json(mixers: &[Mixer], errors: &[String]) -> String {
    let mut out = String::from("{\"mixers\":[");
    for (i, m) in mixers.iter().enumerate() {
        let g = m.state.geometry();
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"socket\":{},\"server_pid\":{},\"device\":{},\"virtual\":{},\"card\":{},\
             \"device_number\":{},\"subdevice\":{},\"format\":{},\"rate\":{},\"channels\":{},\
             \"period_size\":{},\"buffer_size\":{},\"live_clients\":{},\"clients\":[",
            json_str(&m.socket),
            m.server_pid,
            json_str(&m.state.device_name()),
            g.slave_kind == shm::SLAVE_VIRTUAL,
            g.card,
            g.device,
            g.subdevice,
            json_str(hw::format_name(g.format)),
            g.rate,
            g.channels,
            g.period_size,
            g.buffer_size,
            m.live_clients()
        );
        for (j, c) in m.clients().iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"slot\":{},\"pid\":{},\"program\":{},\"format\":{},\"channels\":{},\
                 \"rate\":{},\"period_size\":{},\"buffer_size\":{},\"position\":{},\
                 \"delay_frames\":{},\"latency_ms\":{:.1},\"frames_mixed\":{},\"xruns\":{},\
                 \"late_samples\":{},\"peak\":{:.4},\"clips\":{},\"volume\":{:.4},\"muted\":{},\
                 \"wakeups\":{},\"early_wakeups\":{}}}",
                c.slot,
                c.pid,
                json_str(&c.program),
                json_str(format_label(c.format)),
                c.channels,
                c.rate,
                c.period_size,
                c.buffer_size,
                c.played,
                c.delay,
                c.latency_ms(),
                c.frames_mixed,
                c.xruns,
                c.late,
                c.peak,
                c.clips,
                c.volume,
                c.muted,
                c.wakeups,
                c.early_wakeups
            );
        }
        out.push_str("]}");
    }
    out.push_str("],\"errors\":[");
    out.push_str(
        &errors
            .iter()
            .map(|e| json_str(e))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("]}");
    out
}

/// A level meter of `width` cells for a peak (0..=1): -60 dBFS to 0 dBFS.
fn meter(peak: f64, width: usize) -> String {
    let db = if peak > 0.0 {
        20.0 * peak.log10()
    } else {
        -120.0
    };
    let filled = (((db + 60.0) / 60.0).clamp(0.0, 1.0) * width as f64).round() as usize;
    let mut s = String::with_capacity(width + 2);
    s.push('[');
    for i in 0..width {
        s.push(if i < filled { '#' } else { '.' });
    }
    s.push(']');
    s
}

fn db(peak: f64) -> String {
    if peak > 0.0 {
        format!("{:6.1} dB", 20.0 * peak.log10())
    } else {
        "  -inf dB".into()
    }
}

/// The human-readable picture (`with_meters`: level meters, as `rdmix top` shows).
pub fn text(mixers: &[Mixer], with_meters: bool) -> String {
    let mut out = String::new();
    if mixers.is_empty() {
        out.push_str("no rdmix mixer is running\n");
    }
    for m in mixers {
        let _ = writeln!(
            out,
            "mixer {} (@{}, server pid {}): {}, {} client(s)",
            m.state.device_name(),
            m.socket,
            m.server_pid,
            m.describe(),
            m.live_clients()
        );
        let _ = writeln!(
            out,
            "  {:>7} {:<15} {:<8} {:>2} {:>6} {:>6} {:>6} {:>11} {:>8} {:>5} {:>6} {:>6} {:>9}{}",
            "PID",
            "PROGRAM",
            "FORMAT",
            "CH",
            "RATE",
            "PERIOD",
            "BUFFER",
            "POSITION",
            "LATENCY",
            "XRUNS",
            "CLIPS",
            "VOLUME",
            "PEAK",
            if with_meters { "  LEVEL" } else { "" }
        );
        for c in m.clients() {
            let vol = if c.muted {
                "muted".to_string()
            } else {
                format!("{:.2}", c.volume)
            };
            let _ = writeln!(
                out,
                "  {:>7} {:<15} {:<8} {:>2} {:>6} {:>6} {:>6} {:>11} {:>6.1}ms {:>5} {:>6} {:>6} {}{}",
                c.pid,
                c.program,
                format_label(c.format),
                c.channels,
                c.rate,
                c.period_size,
                c.buffer_size,
                c.played,
                c.latency_ms(),
                c.xruns,
                c.clips,
                vol,
                db(c.peak),
                if with_meters {
                    format!("  {}", meter(c.peak, 30))
                } else {
                    String::new()
                }
            );
        }
    }
    out
}

pub fn status(json_out: bool) -> i32 {
    let (mixers, errors) = gather();
    if json_out {
        println!("{}", json(&mixers, &errors));
    } else {
        print!("{}", text(&mixers, false));
        for e in &errors {
            eprintln!("rdmix: {e}");
        }
    }
    i32::from(!errors.is_empty())
}

/// `rdmix top [--interval MS] [--count N] [--json]`: redraw every interval (default 250 ms),
/// N times (default: until interrupted). With --json, one JSON object per line instead.
pub fn top(args: &[String]) -> i32 {
    let mut interval = Duration::from_millis(250);
    let mut count: Option<u64> = None;
    let mut json_out = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Option<u64> {
            let v = it.next().and_then(|v| v.parse::<u64>().ok());
            if v.is_none() {
                eprintln!("rdmix top: {what} needs a number");
            }
            v
        };
        match a.as_str() {
            "--interval" => match num("--interval") {
                Some(ms) if ms >= 10 => interval = Duration::from_millis(ms),
                _ => return 2,
            },
            "--count" => match num("--count") {
                Some(n) => count = Some(n),
                None => return 2,
            },
            "--json" => json_out = true,
            other => {
                eprintln!("rdmix top: unknown option {other}");
                return 2;
            }
        }
    }
    let mut n = 0u64;
    loop {
        let (mixers, errors) = gather();
        if json_out {
            println!("{}", json(&mixers, &errors));
        } else {
            // Home, clear the screen, then the picture.
            print!("\x1b[H\x1b[2J{}", text(&mixers, true));
            for e in &errors {
                println!("rdmix: {e}");
            }
            println!("(every {} ms; Ctrl-C to quit)", interval.as_millis());
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return 0;
        }
        std::thread::sleep(interval);
    }
}
