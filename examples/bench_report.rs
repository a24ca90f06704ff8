//! The host side of the side-by-side benchmark (tests/bench/run.sh): prepares the signals the
//! guest plays, then turns the guest's raw results into BENCHMARKS.md's side-by-side section
//! and an SVG chart, and checks the targets of issue 5.
//!
//! - `bench_report prepare DIR full|smoke`: the two-client start signals (`DIR/sig`, `DIR/pairs`).
//! - `bench_report report DIR --md FILE --svg FILE --command CMD [--chart-link PATH]`: reads
//!   `DIR/results.txt`, `DIR/strace_*.txt`, `DIR/cap_*.raw`, `DIR/kernels.txt` and
//!   `DIR/host.txt`; writes the section into FILE (between its markers, keeping the rest; a new
//!   file holds only the section) and the chart; prints the section. Exits 1 if a measurement
//!   is missing or malformed (a target missed is reported, not a failure).

#[allow(dead_code)]
#[path = "../tests/common/mixcheck.rs"]
mod mixcheck;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use asound_module_pcm_rdmix::mix::SlaveFormat;

const RATE: usize = 48_000;
const CH: usize = 2;
const PAIR_FRAMES: usize = 12_000;
/// The slave ring of the pair starts (dmix replays a lost head one buffer later).
const PAIR_BUFFER: usize = 4096;
const BEGIN: &str = "<!-- side-by-side:begin (written by tests/bench/run.sh) -->";
const END: &str = "<!-- side-by-side:end -->";
const MIXERS: [&str; 2] = ["dmix", "rdmix"];

fn pair_sets(smoke: bool) -> Vec<(String, usize, bool)> {
    let mut v = Vec::new();
    for m in MIXERS {
        if smoke {
            v.push((format!("{m}_fresh"), 3, false));
        } else {
            v.push((format!("{m}_fresh"), 50, false));
            v.push((format!("{m}_running"), 50, true));
        }
    }
    v
}

fn pair_signal(name: &str, k: usize, tag: u64) -> Vec<Vec<i64>> {
    let mut seed = 0xBE_4C4u64;
    for b in name.bytes() {
        seed = seed.wrapping_mul(31).wrapping_add(b as u64);
    }
    mixcheck::client_signal(seed ^ ((k as u64) << 8) ^ tag, PAIR_FRAMES, CH, 12000)
}

fn prepare(dir: &Path, smoke: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("sig")).map_err(|e| e.to_string())?;
    let mut list = String::new();
    for (name, count, keeper) in pair_sets(smoke) {
        let mixer = name.split('_').next().unwrap_or("dmix");
        let _ = writeln!(list, "{name} {mixer}_1024_4096 {count} {}", keeper as u8);
        for k in 0..count {
            for (tag, t) in [("a", 1), ("b", 2)] {
                let s = pair_signal(&name, k, t);
                mixcheck::write_raw(
                    &dir.join("sig").join(format!("{name}_{k}{tag}")),
                    SlaveFormat::S16Le,
                    &s,
                );
            }
        }
    }
    std::fs::write(dir.join("pairs"), list).map_err(|e| e.to_string())
}

/// `key=value` fields of one client line.
type Fields = BTreeMap<String, f64>;

fn fields(s: &str) -> Fields {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn get(f: &Fields, k: &str) -> f64 {
    f.get(k).copied().unwrap_or(f64::NAN)
}

#[derive(Default)]
struct CpuRun {
    clients: Vec<Fields>,
    secs: f64,
    busy: f64,
    total: f64,
}

impl CpuRun {
    /// Mean client CPU per second of audio, in ms.
    fn ms_per_s(&self) -> f64 {
        let n = self.clients.len() as f64;
        self.clients.iter().map(|c| get(c, "cpu_us")).sum::<f64>() / 1000.0 / n / self.secs
    }
    fn nvcsw_per_s(&self) -> f64 {
        let n = self.clients.len() as f64;
        self.clients.iter().map(|c| get(c, "nvcsw")).sum::<f64>() / n / self.secs
    }
    fn xruns(&self) -> f64 {
        self.clients.iter().map(|c| get(c, "xruns")).sum()
    }
}

struct Floor {
    period: usize,
    ok: bool,
    status: String,
}

#[derive(Default)]
struct Results {
    machine: String,
    /// (mixer, period, buffer, n)
    cpu: BTreeMap<(String, usize, usize, usize), CpuRun>,
    /// (mixer, cold|join) -> open_us values
    open: BTreeMap<(String, String), Vec<f64>>,
    /// (mixer, periods per buffer, load) -> attempts in order
    floor: BTreeMap<(String, usize, String), Vec<Floor>>,
    /// (mixer, period, buffer) -> (seconds, client fields)
    syscalls: BTreeMap<(String, usize, usize), (f64, Fields)>,
    /// (mixer, period, buffer) -> the two clients of the kernel-counted run
    syshist: BTreeMap<(String, usize, usize), CpuRun>,
}

fn parse_results(text: &str) -> Result<Results, String> {
    let mut r = Results::default();
    for line in text.lines() {
        let (head, rest) = line.split_once(" | ").unwrap_or((line, ""));
        let w: Vec<&str> = head.split_whitespace().collect();
        let num = |i: usize| -> Result<usize, String> {
            w.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad line: {line}"))
        };
        match w.first().copied() {
            Some("machine") => r.machine = w[1..].join(" "),
            Some("cpu") => {
                let f = fields(head);
                let run = CpuRun {
                    clients: rest
                        .split(" | ")
                        .map(fields)
                        .filter(|f| !f.is_empty())
                        .collect(),
                    secs: w.get(5).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
                    busy: get(&f, "busy"),
                    total: get(&f, "total"),
                };
                r.cpu
                    .insert((w[1].to_string(), num(2)?, num(3)?, num(4)?), run);
            }
            Some("open") => {
                let f = fields(head);
                if let Some(v) = f.get("open_us") {
                    r.open
                        .entry((w[1].to_string(), w[2].to_string()))
                        .or_default()
                        .push(*v);
                }
            }
            Some("floor") => {
                r.floor
                    .entry((w[1].to_string(), num(3)?, w[4].to_string()))
                    .or_default()
                    .push(Floor {
                        period: num(2)?,
                        ok: w.get(5) == Some(&"ok"),
                        status: w.get(5).unwrap_or(&"?").to_string(),
                    });
            }
            Some("syshist") => {
                let run = CpuRun {
                    clients: rest
                        .split(" | ")
                        .map(fields)
                        .filter(|f| !f.is_empty())
                        .collect(),
                    secs: w.get(4).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
                    busy: f64::NAN,
                    total: f64::NAN,
                };
                r.syshist.insert((w[1].to_string(), num(2)?, num(3)?), run);
            }
            Some("syscalls") => {
                let secs = w.get(4).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                r.syscalls
                    .insert((w[1].to_string(), num(2)?, num(3)?), (secs, fields(head)));
            }
            _ => {}
        }
    }
    Ok(r)
}

/// A traced client: syscalls by name in its window, seconds of audio, server socket traffic.
type Traced = (BTreeMap<String, u64>, f64, Option<usize>);

/// Syscalls of the traced client between its window markers, by name; and the calls in the
/// window that touch the rdmix server socket (found by its connect()).
fn strace_window(trace: &str) -> (BTreeMap<String, u64>, Option<usize>) {
    let mut counts = BTreeMap::new();
    let mut sock: Option<String> = None;
    let mut touching = 0usize;
    let mut inside = false;
    let data_calls = [
        "read", "write", "readv", "writev", "send", "sendto", "sendmsg", "recv", "recvfrom",
        "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    ];
    for l in trace.lines() {
        // "PID TIME call(args) = ret", "PID TIME call(args <unfinished ...>",
        // "PID TIME <... call resumed>".
        let call = l.split_once(' ').map_or("", |(_, c)| c.trim_start());
        let call = match call.split_once(' ') {
            Some((t, c)) if t.parse::<f64>().is_ok() => c.trim_start(),
            _ => call,
        };
        if call.starts_with("<...") || call.starts_with("---") || call.starts_with("+++") {
            continue;
        }
        let Some(name) = call
            .split('(')
            .next()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            continue;
        };
        if call.contains("\"/bench-window-start\"") {
            inside = true;
            continue;
        }
        if call.contains("\"/bench-window-end\"") {
            break;
        }
        if !inside {
            if name == "connect" && call.contains("@\"rdmix/") {
                sock = Some(
                    call["connect(".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect(),
                );
            }
            continue;
        }
        *counts.entry(name.to_string()).or_insert(0) += 1;
        if let Some(fd) = &sock {
            if data_calls
                .iter()
                .any(|c| call.starts_with(&format!("{c}({fd},")))
                || call.contains(&format!("fd={fd},"))
                || call.starts_with(&format!("close({fd})"))
            {
                touching += 1;
            }
        }
    }
    (counts, sock.map(|_| touching))
}

/// Bursts of sound separated by at least `gap` silent frames (as in tests/mixing.rs).
fn bursts(cap: &[Vec<i64>], gap: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut silent) = (None, 0);
    for (i, f) in cap.iter().enumerate() {
        if f.iter().any(|&v| v != 0) {
            if start.is_none() {
                start = Some(i);
            }
            silent = 0;
        } else if let Some(s) = start {
            silent += 1;
            if silent >= gap {
                out.push((s, i + 1 - silent));
                start = None;
            }
        }
    }
    if let Some(s) = start {
        out.push((s, cap.len() - silent));
    }
    out
}

#[derive(Default, Debug)]
struct Edges {
    count: usize,
    exact: usize,
    lost: usize,
    replayed: usize,
    unexplained: usize,
    failed_clients: usize,
    bursts: usize,
    notes: Vec<String>,
}

fn edges(dir: &Path, name: &str, count: usize) -> Edges {
    let cap = mixcheck::read_raw(&dir.join(format!("cap_{name}.raw")), SlaveFormat::S16Le, CH);
    let mut e = Edges {
        count,
        ..Edges::default()
    };
    e.failed_clients = std::fs::read_to_string(dir.join(format!("status_{name}")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() != "0")
        .count();
    let segs = bursts(&cap, RATE / 10);
    e.bursts = segs.len();
    if segs.len() != count {
        e.notes.push(format!(
            "{} bursts of sound for {count} pairs: pairs not separable, none counted exact",
            segs.len()
        ));
        return e;
    }
    for k in 0..count {
        let (a, b) = (pair_signal(name, k, 1), pair_signal(name, k, 2));
        let sigs: Vec<&[Vec<i64>]> = vec![a.as_slice(), b.as_slice()];
        let (s0, s1) = segs[k];
        let prev_end = if k > 0 { segs[k - 1].1 } else { 0 };
        let next_start = segs.get(k + 1).map_or(cap.len(), |s| s.0);
        let lo = s0.saturating_sub(PAIR_BUFFER).max(prev_end);
        let hi = (s1 + 2 * PAIR_BUFFER).min(next_start);
        let r =
            mixcheck::verify_with_edges(&cap[lo..hi], SlaveFormat::S16Le, &sigs, PAIR_BUFFER, 1024);
        if r.is_exact() {
            e.exact += 1;
        } else if e.notes.len() < 3 {
            e.notes.push(format!("pair {k}: {}", r.summary()));
        }
        e.unexplained += r.unexplained;
        for c in &r.clients {
            e.lost += c.head_lost + c.tail_lost;
            e.replayed += c.ghost_frames;
        }
    }
    e
}

/// `bench_report pair DIR NAME K`: the strict check of one pair start, in full (for a
/// non-exact pair of the report).
fn pair_detail(dir: &Path, name: &str, k: usize) -> Result<String, String> {
    let cap = mixcheck::read_raw(&dir.join(format!("cap_{name}.raw")), SlaveFormat::S16Le, CH);
    let segs = bursts(&cap, RATE / 10);
    let &(s0, s1) = segs.get(k).ok_or("no such burst")?;
    let lo = s0.saturating_sub(PAIR_BUFFER);
    let hi = (s1 + 2 * PAIR_BUFFER).min(cap.len());
    let (a, b) = (pair_signal(name, k, 1), pair_signal(name, k, 2));
    let sigs: Vec<&[Vec<i64>]> = vec![a.as_slice(), b.as_slice()];
    let win = &cap[lo..hi];
    let fits = mixcheck::find_offset_fits(win, &sigs);
    let r = mixcheck::check(win, SlaveFormat::S16Le, &sigs);
    Ok(format!(
        "burst {k}: capture frames {s0}..{s1} ({} frames), window from {lo}\noffset fits: {fits:?}\n{r}\n",
        s1 - s0
    ))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn minmax(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// The chart: mean client CPU per second of audio against the number of clients.
fn svg(r: &Results) -> String {
    let (w, h, l, rm, t, b) = (720.0, 420.0, 70.0, 190.0, 40.0, 50.0);
    let ns: Vec<usize> = {
        let mut v: Vec<usize> = r.cpu.keys().map(|k| k.3).collect();
        v.sort();
        v.dedup();
        v
    };
    let cfgs: Vec<(usize, usize)> = {
        let mut v: Vec<(usize, usize)> = r.cpu.keys().map(|k| (k.1, k.2)).collect();
        v.sort();
        v.dedup();
        v
    };
    let ymax = r
        .cpu
        .values()
        .map(CpuRun::ms_per_s)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let x = |i: usize| l + (w - l - rm) * (i as f64 + 0.5) / ns.len().max(1) as f64;
    let y = |v: f64| t + (h - t - b) * (1.0 - v / ymax);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Client CPU per second of audio (mean per client), test VM (TCG)</text>"#,
        (w - rm + l) / 2.0
    );
    // Axes, grid, ticks.
    for k in 0..=5 {
        let v = ymax * k as f64 / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            w - rm,
            l - 6.0,
            yy + 4.0
        );
    }
    for (i, n) in ns.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
            x(i),
            h - b + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/><line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - b,
        h - b,
        w - rm,
        h - b
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">clients (N)</text>"#,
        (w - rm + l) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">ms CPU / s of audio</text>"#,
        (h - b + t) / 2.0
    );
    let mut legend = 0;
    for (m, color) in [("dmix", "#d62728"), ("rdmix", "#1f77b4")] {
        for (ci, &(p, bu)) in cfgs.iter().enumerate() {
            let dash = if ci == 0 {
                ""
            } else {
                r#" stroke-dasharray="6 4""#
            };
            let pts: Vec<String> = ns
                .iter()
                .enumerate()
                .filter_map(|(i, &n)| {
                    r.cpu
                        .get(&(m.to_string(), p, bu, n))
                        .map(|c| c.ms_per_s())
                        .filter(|v| v.is_finite())
                        .map(|v| format!("{:.1},{:.1}", x(i), y(v)))
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            for pt in &pts {
                let (px, py) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
            }
            let ly = t + 10.0 + 20.0 * legend as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{m} {p}/{bu}</text>"#,
                w - rm + 15.0,
                w - rm + 45.0,
                w - rm + 52.0,
                ly + 4.0
            );
            legend += 1;
        }
    }
    s.push_str("</svg>\n");
    s
}

struct Opts {
    md: PathBuf,
    svg: PathBuf,
    chart_link: String,
    command: String,
}

fn report(dir: &Path, o: &Opts) -> Result<String, String> {
    let text = std::fs::read_to_string(dir.join("results.txt"))
        .map_err(|e| format!("results.txt: {e}"))?;
    let r = parse_results(&text)?;
    if r.cpu.is_empty() || r.open.is_empty() || r.floor.is_empty() || r.syscalls.is_empty() {
        return Err("results.txt lacks a section (cpu, open, floor or syscalls)".into());
    }
    let host = std::fs::read_to_string(dir.join("host.txt")).unwrap_or_default();
    let hostv: BTreeMap<&str, &str> = host.lines().filter_map(|l| l.split_once(": ")).collect();
    let hv = |k: &str| hostv.get(k).copied().unwrap_or("?");
    let mut s = String::new();
    let mut targets: Vec<(String, String, bool)> = Vec::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Side by side with alsa-lib's dmix (test VM)\n");
    let _ = writeln!(
        s,
        "Command: `{}` — {}, {}. Machine: {} CPUs, {}, host kernel {}; guest: {} ({}, {}), {}. \
         Both mixers play into `hw:Loopback,0,0` (S16_LE, 48 kHz, 2 ch) with the same slave \
         period and buffer, in this one boot; each figure below comes from it. Every client \
         runs SCHED_FIFO 1 (`chrt -f 1`), as audio programs do and as the mixing test does; \
         the clients are `examples/bench_client` (one period per `snd_pcm_writei`). Under TCG \
         a guest CPU is an emulated one: absolute times are large and noisy, the ratios are \
         what the targets compare; other work on the host adds noise.\n",
        o.command,
        hv("date"),
        hv("code"),
        hv("nproc"),
        hv("cpu"),
        hv("kernel"),
        hv("guest"),
        hv("accel"),
        r.machine.replace('_', " "),
        hv("qemu"),
    );

    // ---- 1. CPU
    let _ = writeln!(s, "### 1. Client CPU per second of audio\n");
    let _ = writeln!(
        s,
        "Mean over the N clients of `getrusage` user+system time from the first write to the \
         end of the drain, divided by the seconds of audio; all N released at one instant. \
         Guest busy: the non-idle share of both guest CPUs in `/proc/stat` during the run \
         (kernel, servers, everything); it is tick-sampled, and clients woken by snd-aloop's \
         jiffies timer tend to run between ticks, so at low load it undercounts (compare the \
         precise `getrusage` figures).\n"
    );
    let _ = writeln!(
        s,
        "| period/buffer | N | dmix ms/s | rdmix ms/s | rdmix/dmix | dmix xruns | rdmix xruns | guest busy dmix | guest busy rdmix |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut cpu_ok = true;
    let mut worst: f64 = 0.0;
    let mut cfgs: Vec<(usize, usize, usize)> = r.cpu.keys().map(|k| (k.1, k.2, k.3)).collect();
    cfgs.sort();
    cfgs.dedup();
    for &(p, b, n) in &cfgs {
        let d = r.cpu.get(&("dmix".into(), p, b, n));
        let m = r.cpu.get(&("rdmix".into(), p, b, n));
        let (Some(d), Some(m)) = (d, m) else {
            return Err(format!("cpu {p}/{b} N={n}: a mixer is missing"));
        };
        if d.clients.len() != n || m.clients.len() != n {
            let _ = writeln!(
                s,
                "| {p}/{b} | {n} | {} of {n} clients reported | {} of {n} | — | | | | |",
                d.clients.len(),
                m.clients.len()
            );
            cpu_ok = false;
            continue;
        }
        let ratio = m.ms_per_s() / d.ms_per_s();
        worst = worst.max(ratio);
        cpu_ok &= ratio <= 0.5;
        let _ = writeln!(
            s,
            "| {p}/{b} | {n} | {:.1} | {:.1} | {ratio:.2} | {} | {} | {:.0} % | {:.0} % |",
            d.ms_per_s(),
            m.ms_per_s(),
            d.xruns(),
            m.xruns(),
            100.0 * d.busy / d.total,
            100.0 * m.busy / m.total
        );
    }
    let _ = writeln!(s, "\n![client CPU against clients]({})\n", o.chart_link);
    targets.push((
        "client CPU ≤ 0.5× dmix at every N".into(),
        format!("worst ratio {worst:.2}"),
        cpu_ok,
    ));

    // ---- 2. syscalls
    let _ = writeln!(s, "### 2. Syscalls and wakeups, one client among two\n");
    let _ = writeln!(
        s,
        "Two clients play together. Counted in the kernel: an ftrace histogram of \
         `raw_syscalls:sys_enter` for both clients (`comm == bench_client`), from the moment \
         both have opened until both have closed (so `close`'s few calls are in), halved, \
         divided by the seconds of audio. Wakeups: voluntary context switches per second \
         (`getrusage` `ru_nvcsw`, first write to end of drain) of the same clients. Then the \
         same run with the second client under `strace -f`, only to see which fds its calls \
         (between two marker calls: first write … end of drain) go to; ptrace makes each call \
         cost milliseconds under TCG, so that client runs late and xruns, and its counts are \
         shown only as a cross-check.\n"
    );
    let mut sys_ok = true;
    let mut sys_cfgs: Vec<(usize, usize)> = r.syscalls.keys().map(|k| (k.1, k.2)).collect();
    sys_cfgs.sort();
    sys_cfgs.dedup();
    let mut sys_summary = Vec::new();
    for &(p, b) in &sys_cfgs {
        let mut per: BTreeMap<&str, Traced> = BTreeMap::new();
        let mut hist: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
        for m in MIXERS {
            let trace = std::fs::read_to_string(dir.join(format!("strace_{m}_{p}_{b}.txt")))
                .map_err(|e| format!("strace_{m}_{p}_{b}.txt: {e}"))?;
            let (counts, sock) = strace_window(&trace);
            if counts.is_empty() {
                return Err(format!("strace_{m}_{p}_{b}.txt: no marked window"));
            }
            let secs = r
                .syscalls
                .get(&(m.to_string(), p, b))
                .map_or(f64::NAN, |x| x.0);
            per.insert(m, (counts, secs, sock));
            if let (Ok(h), Some(run)) = (
                std::fs::read_to_string(dir.join(format!("syshist_{m}_{p}_{b}.txt"))),
                r.syshist.get(&(m.to_string(), p, b)),
            ) {
                let n = run.clients.len().max(1) as f64;
                let mut rates = BTreeMap::new();
                for l in h.lines() {
                    // "{ id: sys_ioctl                     [ 16] } hitcount:       1234"
                    let Some(rest) = l.trim_start().strip_prefix("{ id: ") else {
                        continue;
                    };
                    let name = rest.split_whitespace().next().unwrap_or("?");
                    let name = name.strip_prefix("sys_").unwrap_or(name).to_string();
                    let c: f64 = l
                        .rsplit("hitcount:")
                        .next()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(f64::NAN);
                    *rates.entry(name).or_insert(0.0) += c / n / run.secs;
                }
                if !rates.is_empty() {
                    hist.insert(m, rates);
                }
            }
        }
        let kernel_counted = hist.len() == MIXERS.len();
        let strace_rate = |m: &str, n: &str| {
            per.get(m)
                .map_or(0.0, |v| *v.0.get(n).unwrap_or(&0) as f64 / v.1)
        };
        let rate = |m: &str, n: &str| {
            if kernel_counted {
                hist.get(m).and_then(|h| h.get(n)).copied().unwrap_or(0.0)
            } else {
                strace_rate(m, n)
            }
        };
        let mut names: Vec<String> = if kernel_counted {
            hist.values().flat_map(|h| h.keys().cloned()).collect()
        } else {
            per.values().flat_map(|v| v.0.keys().cloned()).collect()
        };
        names.sort();
        names.dedup();
        let _ = writeln!(
            s,
            "Period {p} / buffer {b}{}:\n\n| syscall | dmix /s | rdmix /s |\n|---|---|---|",
            if kernel_counted {
                ", per client, counted in the kernel"
            } else {
                ", counted by strace (no kernel histogram in this guest)"
            }
        );
        for n in &names {
            let (d, m) = (rate("dmix", n), rate("rdmix", n));
            if d >= 0.05 || m >= 0.05 {
                let _ = writeln!(s, "| `{n}` | {d:.1} | {m:.1} |");
            }
        }
        let total = |m: &str| names.iter().map(|n| rate(m, n)).sum::<f64>();
        let strace_total = |m: &str| {
            per.get(m)
                .map_or(f64::NAN, |v| v.0.values().sum::<u64>() as f64 / v.1)
        };
        let wake = |m: &str| {
            r.syshist
                .get(&(m.to_string(), p, b))
                .or_else(|| r.cpu.get(&(m.to_string(), p, b, 2)))
                .map_or(f64::NAN, CpuRun::nvcsw_per_s)
        };
        let xr = |m: &str| {
            r.syshist
                .get(&(m.to_string(), p, b))
                .map_or(f64::NAN, CpuRun::xruns)
        };
        let traced_xruns = |m: &str| {
            r.syscalls
                .get(&(m.to_string(), p, b))
                .map_or(f64::NAN, |x| get(&x.1, "xruns"))
        };
        let sock = per.get("rdmix").and_then(|v| v.2);
        let _ = writeln!(
            s,
            "| **total** | **{:.1}** | **{:.1}** |\n| wakeups (nvcsw) /s | {:.1} | {:.1} |\n| xruns (both clients) | {} | {} |\n| under strace: syscalls/s, xruns of that client | {:.0}, {} | {:.0}, {} |\n",
            total("dmix"),
            total("rdmix"),
            wake("dmix"),
            wake("rdmix"),
            xr("dmix"),
            xr("rdmix"),
            strace_total("dmix"),
            traced_xruns("dmix"),
            strace_total("rdmix"),
            traced_xruns("rdmix")
        );
        let _ = writeln!(
            s,
            "rdmix server socket: {}.\n",
            match sock {
                Some(0) => "connected at open, **no syscall on it** during playback".to_string(),
                Some(k) => format!("**{k} syscalls on it** during playback"),
                None => "no connect() to an rdmix socket found in the trace".to_string(),
            }
        );
        let ok = total("rdmix") <= total("dmix") && sock == Some(0);
        sys_ok &= ok;
        sys_summary.push(format!(
            "{p}/{b}: {:.0} vs {:.0} /s ({:.2}×), server socket {}",
            total("rdmix"),
            total("dmix"),
            total("rdmix") / total("dmix"),
            sock.map_or("?".into(), |k| k.to_string())
        ));
    }
    targets.push((
        "syscalls/s ≤ dmix, none to the server".into(),
        sys_summary.join("; "),
        sys_ok,
    ));

    // ---- 3. open latency
    let _ = writeln!(s, "### 3. Open latency\n");
    let _ = writeln!(
        s,
        "`snd_pcm_open` → hw/sw params → first frame accepted by `snd_pcm_writei`, period \
         1024 / buffer 4096. Cold: no mixer running (rdmix spawns its server; dmix creates its \
         shared memory and opens the device). Joining: another client is playing.\n"
    );
    let _ = writeln!(
        s,
        "| | dmix median (min–max) ms | rdmix median (min–max) ms | rdmix/dmix | runs |\n|---|---|---|---|---|"
    );
    let mut open_ratio = BTreeMap::new();
    for kind in ["cold", "join"] {
        let d = r
            .open
            .get(&("dmix".into(), kind.into()))
            .cloned()
            .unwrap_or_default();
        let m = r
            .open
            .get(&("rdmix".into(), kind.into()))
            .cloned()
            .unwrap_or_default();
        if d.is_empty() || m.is_empty() {
            return Err(format!("open {kind}: no measurement"));
        }
        let (dl, dh) = minmax(&d);
        let (ml, mh) = minmax(&m);
        let ratio = median(&m) / median(&d);
        open_ratio.insert(kind, ratio);
        let _ = writeln!(
            s,
            "| {kind} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {ratio:.2} | {} / {} |",
            median(&d) / 1000.0,
            dl / 1000.0,
            dh / 1000.0,
            median(&m) / 1000.0,
            ml / 1000.0,
            mh / 1000.0,
            d.len(),
            m.len()
        );
    }
    let _ = writeln!(s);
    let (jr, cr) = (open_ratio["join"], open_ratio["cold"]);
    targets.push((
        "open latency ≤ dmix joining, ≤ 2× cold".into(),
        format!("joining {jr:.2}×, cold {cr:.2}× (medians)"),
        jr <= 1.0 && cr <= 2.0,
    ));

    // ---- 4. latency floor
    let _ = writeln!(s, "### 4. Latency floor\n");
    let _ = writeln!(
        s,
        "Smallest slave and client period (of 64, 128, 256, 512 frames, tried in that order) \
         at which 4 clients, released together, play the whole run with no xrun in any client \
         (a run ends at the first xrun). Hog: two busy loops (`while :; do :; done`, \
         SCHED_OTHER) on the guest's two CPUs.\n"
    );
    let _ = writeln!(
        s,
        "| buffer | load | dmix floor | rdmix floor | attempts dmix | attempts rdmix |\n|---|---|---|---|---|---|"
    );
    let mut floor_ok = true;
    let mut floor_sum = Vec::new();
    let mut fkeys: Vec<(usize, String)> = r.floor.keys().map(|k| (k.1, k.2.clone())).collect();
    fkeys.sort();
    fkeys.dedup();
    for (k, load) in fkeys {
        let get_floor = |m: &str| {
            let a = r.floor.get(&(m.to_string(), k, load.clone()));
            let fl = a.and_then(|a| a.iter().find(|f| f.ok).map(|f| f.period));
            let att = a.map_or(String::new(), |a| {
                a.iter()
                    .map(|f| format!("{} {}", f.period, f.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            (fl, att)
        };
        let (df, da) = get_floor("dmix");
        let (mf, ma) = get_floor("rdmix");
        let show = |f: Option<usize>| f.map_or("none passed".to_string(), |p| p.to_string());
        let ok = match (mf, df) {
            (Some(m), Some(d)) => m <= d,
            (Some(_), None) => true,
            (None, _) => false,
        };
        floor_ok &= ok;
        floor_sum.push(format!("{k} periods {load}: {} vs {}", show(mf), show(df)));
        let _ = writeln!(
            s,
            "| {k} periods | {load} | {} | {} | {da} | {ma} |",
            show(df),
            show(mf)
        );
    }
    let _ = writeln!(s);
    targets.push((
        "latency floor ≤ dmix".into(),
        floor_sum.join("; "),
        floor_ok,
    ));

    // ---- 5. edges
    let _ = writeln!(s, "### 5. Edge exactness\n");
    let _ = writeln!(
        s,
        "Two clients (aplay, {PAIR_FRAMES} frames each) started at the same instant, 700 ms \
         apart, captured from `hw:Loopback,1,0`; on a fresh mixer each time and on a mixer kept \
         running by a client playing silence (tests/mixing.rs's pair machinery). Each pair is \
         checked frame by frame with `tests/common/mixcheck.rs`'s dmix edge model: exact, or \
         head/tail frames lost (never heard) and lost heads replayed one slave buffer \
         ({PAIR_BUFFER} frames) later; unexplained frames fit neither.\n"
    );
    let _ = writeln!(
        s,
        "| mixer | starts | exact pairs | lost frames | replayed frames | unexplained frames | failed clients |\n|---|---|---|---|---|---|---|"
    );
    let smoke = !dir.join("cap_dmix_running.raw").exists();
    let mut edge_tot: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut notes = Vec::new();
    for (name, count, _) in pair_sets(smoke) {
        let e = edges(dir, &name, count);
        let m = if name.starts_with("rdmix") {
            "rdmix"
        } else {
            "dmix"
        };
        let t = edge_tot.entry(m).or_default();
        t.0 += e.exact;
        t.1 += e.count;
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} |",
            name.replace('_', ", "),
            if name.ends_with("fresh") {
                "fresh mixer"
            } else {
                "running mixer"
            },
            e.exact,
            e.count,
            e.lost,
            e.replayed,
            e.unexplained,
            e.failed_clients
        );
        for n in e.notes {
            notes.push(format!("{name}: {n}"));
        }
    }
    let _ = writeln!(s);
    if !notes.is_empty() {
        let _ = writeln!(s, "First non-exact pairs:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }
    let (re, rn) = edge_tot.get("rdmix").copied().unwrap_or_default();
    let (de, dn) = edge_tot.get("dmix").copied().unwrap_or_default();
    targets.push((
        format!("edge exactness {rn}/{rn}"),
        format!("rdmix {re}/{rn}, dmix {de}/{dn}"),
        re == rn && rn > 0,
    ));

    // ---- 6. kernels
    if let Ok(k) = std::fs::read_to_string(dir.join("kernels.txt")) {
        let _ = writeln!(s, "### 6. Mix kernels (host, native)\n");
        let _ = writeln!(
            s,
            "`src/mix.rs`'s kernel (lap-tagged CAS per sample, then the saturated publish) for \
             each slave format, S16-stereo-shaped 1024-frame chunks into a 4096-frame ring: \
             instructions per client sample from callgrind (`mix_bench count`, the difference of \
             two chunk counts, so set-up is excluded), and wall time per client sample with W \
             writer threads mixing the same positions at once (`mix_bench kernels`: wall time \
             of the whole run divided by all writers' samples; the host has {} CPUs, so W > {} \
             time-shares; noisy, ±30 %). `dmix-lockfree` is \
             `mix_bench`'s Rust model of dmix's lock-free S16 scheme (cmpxchg, add, publish \
             loop), for scale; alsa-lib's own kernels are inline assembly inside libasound and \
             are not measured on their own here.\n",
            hv("nproc"),
            hv("nproc")
        );
        let mut ir: BTreeMap<String, f64> = BTreeMap::new();
        let mut ns: BTreeMap<(String, usize), f64> = BTreeMap::new();
        let mut order = Vec::new();
        for l in k.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match (w.first().copied(), w.len()) {
                (Some("ir"), 3) => {
                    ir.insert(w[1].into(), w[2].parse().unwrap_or(f64::NAN));
                }
                (Some("kernel"), 4) => {
                    if !order.contains(&w[1].to_string()) {
                        order.push(w[1].to_string());
                    }
                    ns.insert(
                        (w[1].into(), w[2].parse().unwrap_or(0)),
                        w[3].parse().unwrap_or(f64::NAN),
                    );
                }
                _ => {}
            }
        }
        for f in ir.keys() {
            if !order.contains(f) {
                order.push(f.clone());
            }
        }
        let _ = writeln!(
            s,
            "| format | instructions / client sample | ns/sample W=1 | W=2 | W=8 |\n|---|---|---|---|---|"
        );
        for f in order {
            let g = |w: usize| {
                ns.get(&(f.clone(), w))
                    .map_or("—".to_string(), |v| format!("{v:.2}"))
            };
            let _ = writeln!(
                s,
                "| {f} | {:.1} | {} | {} | {} |",
                ir.get(&f).copied().unwrap_or(f64::NAN),
                g(1),
                g(2),
                g(8)
            );
        }
        let _ = writeln!(s);
    }

    // ---- targets, first in the section
    let mut tt = String::from(
        "### Targets (rdmix against dmix, this run)\n\n| target | result | |\n|---|---|---|\n",
    );
    for (t, v, ok) in &targets {
        let _ = writeln!(tt, "| {t} | {v} | {} |", yes(*ok));
    }
    tt.push('\n');
    let at = s.find("### 1.").unwrap_or(s.len());
    s.insert_str(at, &tt);
    let _ = writeln!(s, "{END}");

    std::fs::write(&o.svg, svg(&r)).map_err(|e| format!("{}: {e}", o.svg.display()))?;
    let old = std::fs::read_to_string(&o.md).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &old[..a], s.trim_end(), &old[b + END.len()..])
        }
        _ if old.is_empty() => s.clone(),
        _ => match old.find("\n## ") {
            Some(i) => format!("{}\n{}\n{}", &old[..i + 1], s.trim_end(), &old[i + 1..]),
            None => format!("{old}\n{s}"),
        },
    };
    std::fs::write(&o.md, new).map_err(|e| format!("{}: {e}", o.md.display()))?;
    Ok(s)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 3 => {
            prepare(Path::new(&args[1]), args[2] == "smoke").map(|_| String::new())
        }
        Some("pair") if args.len() == 4 => pair_detail(
            Path::new(&args[1]),
            &args[2],
            args[3].parse().unwrap_or(0),
        ),
        Some("report") if args.len() >= 2 => {
            let mut o = Opts {
                md: PathBuf::from("BENCHMARKS.md"),
                svg: PathBuf::from("bench-cpu.svg"),
                chart_link: String::new(),
                command: "tests/bench/run.sh".into(),
            };
            let mut it = args[2..].iter();
            let mut bad = false;
            while let Some(a) = it.next() {
                match (a.as_str(), it.next()) {
                    ("--md", Some(v)) => o.md = v.into(),
                    ("--svg", Some(v)) => o.svg = v.into(),
                    ("--chart-link", Some(v)) => o.chart_link = v.clone(),
                    ("--command", Some(v)) => o.command = v.clone(),
                    _ => bad = true,
                }
            }
            if o.chart_link.is_empty() {
                o.chart_link = o.svg.display().to_string();
            }
            if bad {
                Err("bad option".into())
            } else {
                report(Path::new(&args[1]), &o)
            }
        }
        _ => Err("usage: bench_report prepare DIR full|smoke | report DIR [--md F] [--svg F] [--chart-link P] [--command C]".into()),
    };
    match res {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_report: {e}");
            ExitCode::FAILURE
        }
    }
}
