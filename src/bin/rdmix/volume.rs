//! `rdmix volume TARGET LEVEL`, `rdmix mute TARGET`, `rdmix unmute TARGET`: per-client gain.
//!
//! TARGET is a pid or a program name (every client of that name, in every mixer). LEVEL is a
//! linear gain (`0.5`), a percentage (`50%`) or decibels (`-6dB`), at most 4.0 (+12 dB). The
//! value goes into the client's slot of the shared state; the client applies it to the frames
//! it writes from then on (already-mixed frames keep their level, so a change is heard within
//! the client's buffer), and skips the work entirely at unity.

use std::sync::atomic::Ordering;

use asound_module_pcm_rdmix::shm;

use crate::status;

/// A gain in Q16.16 from "0.5", "50%" or "-6dB".
pub fn parse_level(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let gain = if let Some(db) = lower.strip_suffix("db") {
        let db: f64 = db
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a level in dB"))?;
        10f64.powf(db / 20.0)
    } else if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a percentage"))?;
        p / 100.0
    } else {
        t.parse::<f64>()
            .map_err(|_| format!("'{s}' is not a level (e.g. 0.5, 50%, -6dB)"))?
    };
    let max = shm::VOLUME_MAX as f64 / shm::VOLUME_UNITY as f64;
    if !gain.is_finite() || !(0.0..=max).contains(&gain) {
        return Err(format!("level {s} is out of range (0 to {max}, +12 dB)"));
    }
    Ok((gain * shm::VOLUME_UNITY as f64).round() as u32)
}

enum Action {
    Volume(u32),
    Mute(bool),
}

fn apply(target: &str, action: Action) -> i32 {
    let (mixers, errors) = status::gather();
    for e in &errors {
        eprintln!("rdmix: {e}");
    }
    let by_pid: Option<u32> = target.parse().ok();
    let mut hits = 0;
    for m in &mixers {
        for s in 0..shm::MAX_CLIENTS {
            let Some(slot) = m.state.slot(s) else { break };
            let pid = slot.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            let program = status::comm(pid);
            if by_pid != Some(pid) && program != target {
                continue;
            }
            match action {
                Action::Volume(v) => slot.volume.store(v, Ordering::Relaxed),
                Action::Mute(on) => slot.muted.store(u32::from(on), Ordering::Relaxed),
            }
            // The slot may have changed hands meanwhile: then the new client keeps the value
            // only if it is the same pid again (a reopen), which is what the user asked for.
            if slot.pid.load(Ordering::Acquire) != pid {
                continue;
            }
            hits += 1;
            let state = match action {
                Action::Volume(v) => format!("volume {:.3}", v as f64 / shm::VOLUME_UNITY as f64),
                Action::Mute(true) => "muted".into(),
                Action::Mute(false) => "unmuted".into(),
            };
            println!(
                "pid {pid} ({program}) on {}: {state}",
                m.state.device_name()
            );
        }
    }
    if hits == 0 {
        eprintln!("rdmix: no client matches '{target}' (a pid or a program name)");
        return 1;
    }
    0
}

pub fn volume(args: &[String]) -> i32 {
    match args {
        [target, level] => match parse_level(level) {
            Ok(v) => apply(target, Action::Volume(v)),
            Err(e) => {
                eprintln!("rdmix volume: {e}");
                2
            }
        },
        _ => {
            eprintln!("usage: rdmix volume PID|PROGRAM LEVEL   (0.5, 50%, -6dB; at most 4.0)");
            2
        }
    }
}

pub fn mute(args: &[String], on: bool) -> i32 {
    match args {
        [target] => apply(target, Action::Mute(on)),
        _ => {
            eprintln!(
                "usage: rdmix {} PID|PROGRAM",
                if on { "mute" } else { "unmute" }
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("1"), Ok(65536));
        assert_eq!(parse_level("0.5"), Ok(32768));
        assert_eq!(parse_level("50%"), Ok(32768));
        assert_eq!(parse_level("0"), Ok(0));
        assert_eq!(parse_level("-6.0206dB"), Ok(32768));
        assert!(parse_level("+12dB").is_ok_and(|v| v > 4 * 65536 - 2000 && v <= shm::VOLUME_MAX));
        assert!(parse_level("5").is_err());
        assert!(parse_level("-1").is_err());
        assert!(parse_level("loud").is_err());
        assert!(parse_level("NaN").is_err());
    }
}
