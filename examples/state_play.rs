//! Drive one PCM through a state scenario while playing a mono counter signal, and print what
//! the application saw. The VM state tests (tests/states.rs) capture the result and check every
//! frame: the counter makes loss, repetition and silence visible sample by sample.
//!
//! `state_play PCM SCENARIO FRAMES [--shift S] [--mod M] [--channels C] [--buffer B]`
//!
//! The signal: S16_LE, 48 kHz; frame `n` holds `((n % M) + 1) << S` on each of its C channels
//! (default M 65535, S 0, C 1: never 0, so silence is never a frame). With a shift, two counters
//! can share a channel without carries (one in the high bits, a small one in the low bits): the
//! crash tests use that to see a killed client's samples in the same sums as a survivor's. Period 1024, buffer 4096 frames. Scenarios:
//!
//! - `plain`: write everything, drain.
//! - `pause`: pause halfway for 0.5 s, resume, finish.
//! - `drop`: write half, then drop; prints the position the application saw at the drop.
//! - `drain-nonblock`: non-blocking mode; drain must return -EAGAIN, then poll until done.
//! - `start-threshold`: start_threshold 3000 frames: still PREPARED after 1024, RUNNING after.
//! - `start-explicit`: start_threshold = boundary: a full buffer stays silent until snd_pcm_start.
//! - `rewind`: write 1024 wrong frames halfway, rewind them, write the right ones.
//! - `forward`: forward 1000 frames halfway (they play as silence) and skip them in the signal.
//! - `underrun`: stop writing for 0.3 s halfway (an xrun), recover, finish.
//!
//! Every scenario also samples `snd_pcm_status` after each write and prints how far the
//! position (`written - delay`) strays from a straight line against the status's high-resolution
//! timestamp.

use std::ffi::{CStr, CString};
use std::process::ExitCode;
use std::ptr;
use std::time::{Duration, Instant};

use alsa_sys::*;

const RATE: u32 = 48_000;
const PERIOD: snd_pcm_uframes_t = 1024;
const BUFFER: snd_pcm_uframes_t = 4096;

/// The counter's shape: frame `n` holds `((n % modulo) + 1) << shift` on every channel.
#[derive(Clone, Copy)]
struct Shape {
    shift: u32,
    modulo: u64,
    channels: u32,
    buffer: u64,
}

const DEFAULT_SHAPE: Shape = Shape {
    shift: 0,
    modulo: 65535,
    channels: 1,
    buffer: BUFFER,
};

static SHAPE: std::sync::OnceLock<Shape> = std::sync::OnceLock::new();

fn shape() -> Shape {
    *SHAPE.get_or_init(|| DEFAULT_SHAPE)
}

fn value(n: u64) -> i16 {
    let s = shape();
    (((n % s.modulo) + 1) << s.shift) as u16 as i16
}

fn err(r: i64, what: &str) -> String {
    // SAFETY: snd_strerror returns a static string for any error code.
    let msg = unsafe { CStr::from_ptr(snd_strerror(r as i32)) };
    format!("{what}: {} ({r})", msg.to_string_lossy())
}

fn check(r: i32, what: &str) -> Result<(), String> {
    if r < 0 {
        Err(err(r as i64, what))
    } else {
        Ok(())
    }
}

struct Player {
    pcm: *mut snd_pcm_t,
    /// Signal frames handed to the PCM so far (the next frame to write is `next`).
    next: u64,
    /// Frames written through the PCM since the last prepare (its appl position).
    written: u64,
    xruns: u32,
    eagain: u32,
    /// (seconds, written - delay) after each write, for the position check.
    positions: Vec<(f64, f64)>,
}

impl Player {
    fn state(&self) -> i32 {
        // SAFETY: a live PCM handle.
        unsafe { snd_pcm_state(self.pcm) as i32 }
    }

    /// `snd_pcm_status`: its high-resolution timestamp (seconds) and delay, taken together.
    fn status(&self) -> Option<(f64, i64)> {
        let mut st: *mut snd_pcm_status_t = ptr::null_mut();
        // SAFETY: a live PCM handle; the status container is allocated and freed here.
        unsafe {
            if snd_pcm_status_malloc(&mut st) < 0 {
                return None;
            }
            let r = snd_pcm_status(self.pcm, st);
            let mut ts = std::mem::zeroed::<snd_htimestamp_t>();
            snd_pcm_status_get_htstamp(st, &mut ts);
            let d = snd_pcm_status_get_delay(st);
            snd_pcm_status_free(st);
            (r >= 0).then_some((ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9, d as i64))
        }
    }

    fn delay(&self) -> Result<i64, String> {
        let mut d: snd_pcm_sframes_t = 0;
        // SAFETY: a live PCM handle and a valid out-pointer.
        check(unsafe { snd_pcm_delay(self.pcm, &mut d) }, "delay")?;
        Ok(d as i64)
    }

    /// Write `count` frames of the signal starting at signal frame `from` (or wrong frames
    /// when `wrong`), handling EAGAIN (wait) and xruns (recover, counted).
    fn write(&mut self, from: u64, count: u64, wrong: bool) -> Result<(), String> {
        let ch = shape().channels as usize;
        let data: Vec<i16> = (0..count)
            .flat_map(|i| {
                let v = if wrong {
                    value(from + i + 30_000)
                } else {
                    value(from + i)
                };
                std::iter::repeat_n(v, ch)
            })
            .collect();
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(PERIOD);
            // SAFETY: `data` holds `count` mono frames; we pass a slice of `n` of them.
            let r = unsafe {
                snd_pcm_writei(
                    self.pcm,
                    data.as_ptr().add(done as usize * ch) as *const libc::c_void,
                    n as snd_pcm_uframes_t,
                )
            };
            if r == -(libc::EAGAIN as snd_pcm_sframes_t) {
                self.eagain += 1;
                // SAFETY: a live PCM handle.
                unsafe { snd_pcm_wait(self.pcm, 1000) };
                continue;
            }
            if r == -(libc::EPIPE as snd_pcm_sframes_t) {
                self.xruns += 1;
                // SAFETY: a live PCM handle.
                check(unsafe { snd_pcm_recover(self.pcm, r as i32, 1) }, "recover")?;
                self.written = 0;
                continue;
            }
            if r < 0 {
                return Err(err(r as i64, "write"));
            }
            done += r as u64;
            self.written += r as u64;
            if let Some((t, d)) = self.status() {
                if self.state() == SND_PCM_STATE_RUNNING as i32 {
                    self.positions.push((t, self.written as f64 - d as f64));
                }
            }
        }
        if !wrong {
            self.next = from + count;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), String> {
        // SAFETY: a live PCM handle.
        check(unsafe { snd_pcm_drain(self.pcm) }, "drain")
    }
}

/// Largest distance of the sampled positions from the least-squares line, and its slope.
fn position_fit(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    if pts.len() < 8 {
        return None;
    }
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in pts {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
    }
    let slope = sxy / sxx;
    let dev = pts
        .iter()
        .map(|(x, y)| (y - (my + slope * (x - mx))).abs())
        .fold(0.0, f64::max);
    Some((slope, dev))
}

fn open(name: &str, nonblock: bool, start_threshold: Option<u64>) -> Result<Player, String> {
    let cname = CString::new(name).map_err(|_| "bad name")?;
    let mut pcm: *mut snd_pcm_t = ptr::null_mut();
    // SAFETY: alsa-lib's documented protocol on a handle we own; containers are freed.
    unsafe {
        check(
            snd_pcm_open(
                &mut pcm,
                cname.as_ptr(),
                SND_PCM_STREAM_PLAYBACK,
                if nonblock { SND_PCM_NONBLOCK } else { 0 },
            ),
            "open",
        )?;
        let mut hw: *mut snd_pcm_hw_params_t = ptr::null_mut();
        check(snd_pcm_hw_params_malloc(&mut hw), "hw_params_malloc")?;
        check(snd_pcm_hw_params_any(pcm, hw), "hw_params_any")?;
        check(
            snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED),
            "set_access",
        )?;
        check(
            snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE),
            "set_format",
        )?;
        check(
            snd_pcm_hw_params_set_channels(pcm, hw, shape().channels),
            "set_channels",
        )?;
        check(snd_pcm_hw_params_set_rate(pcm, hw, RATE, 0), "set_rate")?;
        let want = shape().buffer as snd_pcm_uframes_t;
        let mut b = want;
        check(
            snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &mut b),
            "set_buffer",
        )?;
        let mut p = PERIOD;
        check(
            snd_pcm_hw_params_set_period_size_near(pcm, hw, &mut p, ptr::null_mut()),
            "set_period",
        )?;
        check(snd_pcm_hw_params(pcm, hw), "hw_params")?;
        snd_pcm_hw_params_free(hw);
        if b != want || p != PERIOD {
            return Err(format!("got period {p} buffer {b}, wanted {PERIOD}/{want}"));
        }
        let mut sw: *mut snd_pcm_sw_params_t = ptr::null_mut();
        check(snd_pcm_sw_params_malloc(&mut sw), "sw_params_malloc")?;
        check(snd_pcm_sw_params_current(pcm, sw), "sw_params_current")?;
        if let Some(t) = start_threshold {
            let mut boundary: snd_pcm_uframes_t = 0;
            check(
                snd_pcm_sw_params_get_boundary(sw, &mut boundary),
                "get_boundary",
            )?;
            let t = if t == u64::MAX { boundary } else { t as _ };
            check(
                snd_pcm_sw_params_set_start_threshold(pcm, sw, t),
                "set_start_threshold",
            )?;
        }
        check(
            snd_pcm_sw_params_set_tstamp_mode(pcm, sw, SND_PCM_TSTAMP_ENABLE),
            "set_tstamp_mode",
        )?;
        check(snd_pcm_sw_params(pcm, sw), "sw_params")?;
        snd_pcm_sw_params_free(sw);
    }
    Ok(Player {
        pcm,
        next: 0,
        written: 0,
        xruns: 0,
        eagain: 0,
        positions: Vec::new(),
    })
}

fn state_name(s: i32) -> &'static str {
    match s as u32 {
        SND_PCM_STATE_OPEN => "OPEN",
        SND_PCM_STATE_SETUP => "SETUP",
        SND_PCM_STATE_PREPARED => "PREPARED",
        SND_PCM_STATE_RUNNING => "RUNNING",
        SND_PCM_STATE_XRUN => "XRUN",
        SND_PCM_STATE_DRAINING => "DRAINING",
        SND_PCM_STATE_PAUSED => "PAUSED",
        SND_PCM_STATE_SUSPENDED => "SUSPENDED",
        SND_PCM_STATE_DISCONNECTED => "DISCONNECTED",
        _ => "?",
    }
}

fn run(pcm_name: &str, scenario: &str, frames: u64) -> Result<(), String> {
    let half = frames / 2;
    let start_threshold = match scenario {
        "start-threshold" => Some(3000),
        "start-explicit" => Some(u64::MAX),
        _ => None,
    };
    let mut p = open(pcm_name, scenario == "drain-nonblock", start_threshold)?;
    match scenario {
        "plain" => {
            p.write(0, frames, false)?;
            p.drain()?;
        }
        "pause" => {
            p.write(0, half, false)?;
            // SAFETY: a live PCM handle.
            check(unsafe { snd_pcm_pause(p.pcm, 1) }, "pause")?;
            let d0 = p.delay()?;
            std::thread::sleep(Duration::from_millis(500));
            let d1 = p.delay()?;
            println!(
                "paused_state={} pause_written={} pause_delay0={d0} pause_delay1={d1}",
                state_name(p.state()),
                p.written
            );
            // SAFETY: a live PCM handle.
            check(unsafe { snd_pcm_pause(p.pcm, 0) }, "resume")?;
            p.write(half, frames - half, false)?;
            p.drain()?;
        }
        "drop" => {
            p.write(0, half, false)?;
            let d = p.delay()?;
            // SAFETY: a live PCM handle.
            check(unsafe { snd_pcm_drop(p.pcm) }, "drop")?;
            println!("drop_written={} drop_delay={d}", p.written);
            std::thread::sleep(Duration::from_millis(300));
        }
        "drain-nonblock" => {
            p.write(0, frames, false)?;
            let d = p.delay()?;
            let t = Instant::now();
            // SAFETY: a live PCM handle.
            let r = unsafe { snd_pcm_drain(p.pcm) };
            if r != -libc::EAGAIN {
                return Err(format!("non-blocking drain returned {r}, expected -EAGAIN"));
            }
            let mut polls = 0;
            while p.state() == SND_PCM_STATE_DRAINING as i32 {
                // SAFETY: a live PCM handle.
                unsafe {
                    snd_pcm_wait(p.pcm, 1000);
                    snd_pcm_avail_update(p.pcm);
                }
                polls += 1;
                if t.elapsed() > Duration::from_secs(5) {
                    return Err("drain did not finish in 5 s".into());
                }
            }
            println!(
                "drain_eagain=1 drain_delay={d} drain_ms={:.1} drain_polls={polls} drain_end_state={}",
                t.elapsed().as_secs_f64() * 1e3,
                state_name(p.state())
            );
        }
        "start-threshold" => {
            p.write(0, 1024, false)?;
            let s1 = state_name(p.state());
            p.write(1024, 2048, false)?;
            let s2 = state_name(p.state());
            println!("after_1024={s1} after_3072={s2}");
            p.write(3072, frames - 3072, false)?;
            p.drain()?;
        }
        "start-explicit" => {
            p.write(0, shape().buffer, false)?;
            std::thread::sleep(Duration::from_millis(200));
            let s1 = state_name(p.state());
            // SAFETY: a live PCM handle.
            check(unsafe { snd_pcm_start(p.pcm) }, "start")?;
            let s2 = state_name(p.state());
            println!("before_start={s1} after_start={s2}");
            p.write(shape().buffer, frames - shape().buffer, false)?;
            p.drain()?;
        }
        "rewind" => {
            p.write(0, half, false)?;
            p.write(half, 1024, true)?;
            // SAFETY: a live PCM handle.
            let rewindable = unsafe { snd_pcm_rewindable(p.pcm) };
            // SAFETY: a live PCM handle.
            let r = unsafe { snd_pcm_rewind(p.pcm, 1024) };
            if r != 1024 {
                return Err(format!("rewind returned {r} (rewindable {rewindable})"));
            }
            p.written -= 1024;
            println!("rewindable={rewindable} rewound={r}");
            p.write(half, frames - half, false)?;
            p.drain()?;
        }
        "forward" => {
            p.write(0, half, false)?;
            // Forward only what there is room for (alsa-lib's ioplug does not clamp it).
            let t = Instant::now();
            // SAFETY: a live PCM handle (avail_update refreshes the position forwardable uses).
            while unsafe { snd_pcm_avail_update(p.pcm).min(snd_pcm_forwardable(p.pcm)) } < 1000 {
                if t.elapsed() > Duration::from_secs(2) {
                    return Err("no room to forward 1000 frames within 2 s".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // SAFETY: a live PCM handle.
            let r = unsafe { snd_pcm_forward(p.pcm, 1000) };
            if r != 1000 {
                return Err(format!("forward returned {r}"));
            }
            p.written += 1000;
            println!("forward_at={half} forwarded={r}");
            p.write(half + 1000, frames - half - 1000, false)?;
            p.drain()?;
        }
        "underrun" => {
            p.write(0, half, false)?;
            std::thread::sleep(Duration::from_millis(300));
            p.write(half, frames - half, false)?;
            p.drain()?;
        }
        s => return Err(format!("unknown scenario {s}")),
    }
    if let Some((slope, dev)) = position_fit(&p.positions) {
        println!(
            "position_rate={slope:.1} position_dev_max={dev:.1} position_samples={}",
            p.positions.len()
        );
    }
    println!("xruns={} eagain={} next={}", p.xruns, p.eagain, p.next);
    // SAFETY: a live PCM handle, closed once.
    unsafe { snd_pcm_close(p.pcm) };
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut sh = DEFAULT_SHAPE;
    while args.len() > 3 {
        let (k, v) = (args[args.len() - 2].clone(), args[args.len() - 1].clone());
        let Ok(v) = v.parse::<u64>() else {
            eprintln!("state_play: {k} needs a number");
            return ExitCode::from(2);
        };
        match k.as_str() {
            "--shift" if v < 16 => sh.shift = v as u32,
            "--mod" if v > 0 => sh.modulo = v,
            "--channels" if (1..=8).contains(&v) => sh.channels = v as u32,
            "--buffer" if (2048..=65536).contains(&v) => sh.buffer = v,
            _ => {
                eprintln!("state_play: bad option {k} {v}");
                return ExitCode::from(2);
            }
        }
        args.truncate(args.len() - 2);
    }
    let _ = SHAPE.set(sh);
    let [pcm, scenario, frames] = args.as_slice() else {
        eprintln!("usage: state_play PCM SCENARIO FRAMES [--shift S] [--mod M] [--channels C] [--buffer B]");
        return ExitCode::from(2);
    };
    let Ok(frames) = frames.parse::<u64>() else {
        eprintln!("state_play: FRAMES must be a number");
        return ExitCode::from(2);
    };
    match run(pcm, scenario, frames) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state_play: {scenario}: {e}");
            ExitCode::FAILURE
        }
    }
}
