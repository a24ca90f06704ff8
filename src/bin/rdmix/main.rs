//! `rdmix`: inspect running mixers.
//!
//! `rdmix status [--json]` lists every rdmix server this user can see (found by their abstract
//! socket names in /proc/net/unix) and the clients of each, read from the shared state the
//! server hands over on a `Query` (no slot is claimed, nothing touches the real-time path).

mod install;

use std::sync::atomic::Ordering;

use asound_module_pcm_rdmix::{client, hw, shm::SharedState};

struct Mixer {
    socket: String,
    server_pid: u32,
    clients: u32,
    state: SharedState,
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

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
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

fn status(json: bool) -> i32 {
    let mut mixers = Vec::new();
    let mut errors = Vec::new();
    for name in mixer_sockets() {
        match client::query(&name).and_then(|r| {
            Ok(Mixer {
                socket: name.clone(),
                server_pid: r.server_pid,
                clients: r.clients,
                state: SharedState::attach(r.shm_fd)?,
            })
        }) {
            Ok(m) => mixers.push(m),
            Err(e) => errors.push(format!("@{name}: {e}")),
        }
    }
    if json {
        let mut out = String::from("{\"mixers\":[");
        for (i, m) in mixers.iter().enumerate() {
            let g = m.state.geometry();
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"socket\":{},\"server_pid\":{},\"card\":{},\"device\":{},\"subdevice\":{},\
                 \"format\":{},\"rate\":{},\"channels\":{},\"period_size\":{},\"buffer_size\":{},\
                 \"live_clients\":{},\"clients\":[",
                json_str(&m.socket),
                m.server_pid,
                g.card,
                g.device,
                g.subdevice,
                json_str(hw::format_name(g.format)),
                g.rate,
                g.channels,
                g.period_size,
                g.buffer_size,
                m.clients
            ));
            let mut first = true;
            for s in 0..asound_module_pcm_rdmix::shm::MAX_CLIENTS {
                let Some(c) = m.state.slot(s) else { break };
                let pid = c.pid.load(Ordering::Acquire);
                if pid == 0 {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&format!(
                    "{{\"slot\":{s},\"pid\":{pid},\"program\":{},\"frames_mixed\":{},\
                     \"xruns\":{},\"late_samples\":{},\"wakeups\":{},\"early_wakeups\":{}}}",
                    json_str(&comm(pid)),
                    c.frames_mixed.load(Ordering::Relaxed),
                    c.xruns.load(Ordering::Relaxed),
                    c.late.load(Ordering::Relaxed),
                    c.wakeups.load(Ordering::Relaxed),
                    c.early_wakeups.load(Ordering::Relaxed)
                ));
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
        println!("{out}");
    } else {
        if mixers.is_empty() && errors.is_empty() {
            println!("no rdmix mixer is running");
        }
        for m in &mixers {
            let g = m.state.geometry();
            println!(
                "mixer @{} server pid {}: hw:{},{},{} {} {} Hz {} ch, period {} buffer {}, {} client(s)",
                m.socket,
                m.server_pid,
                g.card,
                g.device,
                g.subdevice,
                hw::format_name(g.format),
                g.rate,
                g.channels,
                g.period_size,
                g.buffer_size,
                m.clients
            );
            for s in 0..asound_module_pcm_rdmix::shm::MAX_CLIENTS {
                let Some(c) = m.state.slot(s) else { break };
                let pid = c.pid.load(Ordering::Acquire);
                if pid == 0 {
                    continue;
                }
                println!(
                    "  slot {s:2} pid {pid:7} {:16} frames {:10} xruns {} late {}",
                    comm(pid),
                    c.frames_mixed.load(Ordering::Relaxed),
                    c.xruns.load(Ordering::Relaxed),
                    c.late.load(Ordering::Relaxed)
                );
            }
        }
        for e in &errors {
            eprintln!("rdmix: {e}");
        }
    }
    if errors.is_empty() {
        0
    } else {
        1
    }
}

const USAGE: &str = "usage: rdmix status [--json]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("status") => status(args.iter().any(|a| a == "--json")),
        Some("install") => install::install(&args[1..]),
        Some("uninstall") => install::uninstall(&args[1..]),
        _ => {
            eprintln!("{USAGE}\n{}", install::INSTALL_USAGE);
            2
        }
    };
    std::process::exit(code);
}
