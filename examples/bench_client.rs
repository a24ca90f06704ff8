//! The client of the side-by-side benchmark (tests/bench/): plays S16_LE stereo 48 kHz through
//! one PCM and prints what it cost, on one line of `key=value` fields:
//!
//! - `open_us`: from `snd_pcm_open` to the first frame accepted by `snd_pcm_writei` (hw and sw
//!   parameters included; the wait on `--fifo`, if any, excluded);
//! - `cpu_us`, `utime_us`, `stime_us`, `nvcsw`, `nivcsw`: `getrusage(RUSAGE_SELF)` from just
//!   before the first write to just after the drain (the whole process, every thread);
//! - `xruns`: writes that returned `-EPIPE`; `frames`: frames accepted; `wall_us`: first write
//!   to end of drain.
//!
//! `bench_client PCM PERIOD BUFFER SECONDS [--fifo PATH] [--stop-on-xrun] [--out FILE]`
//!
//! Writes one period per `snd_pcm_writei` and starts when the buffer is full, as aplay does. `--fifo` opens and configures the
//! PCM, then blocks until PATH (a FIFO) reaches end of file, so that many clients can start at
//! one instant. `--stop-on-xrun` ends at the first xrun (exit status 3). Around the play window
//! it calls `access("/bench-window-start")` and `access("/bench-window-end")`, markers for an
//! strace of the client.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::ptr;
use std::time::Instant;

use alsa_sys::*;

const RATE: u32 = 48_000;
const CH: usize = 2;

fn check(r: i32, what: &str) -> Result<(), String> {
    if r < 0 {
        // SAFETY: snd_strerror returns a static string for any error code.
        let msg = unsafe { CStr::from_ptr(snd_strerror(r)) };
        Err(format!("{what}: {} ({r})", msg.to_string_lossy()))
    } else {
        Ok(())
    }
}

fn rusage() -> libc::rusage {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    r
}

fn tv_us(t: libc::timeval) -> i64 {
    t.tv_sec * 1_000_000 + t.tv_usec
}

fn marker(name: &str) {
    let p = CString::new(name).unwrap_or_default();
    // SAFETY: a NUL-terminated path; the call only looks the path up.
    unsafe { libc::access(p.as_ptr(), libc::F_OK) };
}

struct Args {
    pcm: String,
    period: u64,
    buffer: u64,
    seconds: f64,
    fifo: Option<String>,
    stop_on_xrun: bool,
    out: Option<String>,
}

fn parse() -> Result<Args, String> {
    let usage =
        "usage: bench_client PCM PERIOD BUFFER SECONDS [--fifo PATH] [--stop-on-xrun] [--out FILE]";
    let mut pos = Vec::new();
    let (mut fifo, mut stop_on_xrun, mut out) = (None, false, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fifo" => fifo = Some(it.next().ok_or(usage)?),
            "--out" => out = Some(it.next().ok_or(usage)?),
            "--stop-on-xrun" => stop_on_xrun = true,
            _ => pos.push(a),
        }
    }
    let [pcm, period, buffer, seconds] = pos.as_slice() else {
        return Err(usage.into());
    };
    let num = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| format!("'{s}' is not a number"))
    };
    Ok(Args {
        pcm: pcm.clone(),
        period: num(period)? as u64,
        buffer: num(buffer)? as u64,
        seconds: num(seconds)?,
        fifo,
        stop_on_xrun,
        out,
    })
}

fn run(a: &Args) -> Result<(String, bool), String> {
    let frames = (a.seconds * RATE as f64) as usize;
    // A quiet, non-silent signal, made before the clock starts.
    let data: Vec<i16> = (0..frames * CH)
        .map(|i| ((i * 37 % 1001) as i16 - 500) / 4)
        .collect();
    let name = CString::new(a.pcm.as_str()).map_err(|_| "bad name")?;
    let mut pcm: *mut snd_pcm_t = ptr::null_mut();
    let t_open = Instant::now();
    // SAFETY: all calls below follow alsa-lib's documented protocol on a handle we own; every
    // buffer passed is live and large enough for the frame counts given.
    unsafe {
        check(
            snd_pcm_open(&mut pcm, name.as_ptr(), SND_PCM_STREAM_PLAYBACK, 0),
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
            snd_pcm_hw_params_set_channels(pcm, hw, CH as u32),
            "set_channels",
        )?;
        check(snd_pcm_hw_params_set_rate(pcm, hw, RATE, 0), "set_rate")?;
        let mut b = a.buffer as snd_pcm_uframes_t;
        check(
            snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &mut b),
            "set_buffer",
        )?;
        let mut p = a.period as snd_pcm_uframes_t;
        check(
            snd_pcm_hw_params_set_period_size_near(pcm, hw, &mut p, ptr::null_mut()),
            "set_period",
        )?;
        check(snd_pcm_hw_params(pcm, hw), "hw_params")?;
        snd_pcm_hw_params_free(hw);
        let mut period: snd_pcm_uframes_t = 0;
        let mut buffer: snd_pcm_uframes_t = 0;
        check(
            snd_pcm_get_params(pcm, &mut buffer, &mut period),
            "get_params",
        )?;
        // Start when the buffer is full, as aplay does.
        let mut sw: *mut snd_pcm_sw_params_t = ptr::null_mut();
        check(snd_pcm_sw_params_malloc(&mut sw), "sw_params_malloc")?;
        check(snd_pcm_sw_params_current(pcm, sw), "sw_params_current")?;
        check(
            snd_pcm_sw_params_set_start_threshold(pcm, sw, buffer),
            "set_start_threshold",
        )?;
        check(snd_pcm_sw_params(pcm, sw), "sw_params")?;
        snd_pcm_sw_params_free(sw);
        let setup = t_open.elapsed();

        if let Some(f) = &a.fifo {
            let mut s = Vec::new();
            std::fs::File::open(f)
                .and_then(|mut h| h.read_to_end(&mut s))
                .map_err(|e| format!("{f}: {e}"))?;
        }

        marker("/bench-window-start");
        let r0 = rusage();
        let t_play = Instant::now();
        let mut first_us = None;
        let (mut done, mut xruns, mut stopped) = (0usize, 0u32, false);
        while done < frames {
            let n = (frames - done).min(period as usize) as snd_pcm_uframes_t;
            let r = snd_pcm_writei(pcm, data.as_ptr().add(done * CH) as *const libc::c_void, n);
            if r < 0 {
                if r == -(libc::EPIPE as snd_pcm_sframes_t) {
                    xruns += 1;
                    if a.stop_on_xrun {
                        stopped = true;
                        break;
                    }
                }
                check(snd_pcm_recover(pcm, r as i32, 1), "write")?;
                continue;
            }
            if first_us.is_none() && r > 0 {
                first_us = Some(t_play.elapsed());
            }
            done += r as usize;
        }
        if stopped {
            snd_pcm_drop(pcm);
        } else {
            check(snd_pcm_drain(pcm), "drain")?;
        }
        let wall = t_play.elapsed();
        let r1 = rusage();
        marker("/bench-window-end");
        snd_pcm_close(pcm);

        let open_us = (setup + first_us.unwrap_or_default()).as_micros();
        let ut = tv_us(r1.ru_utime) - tv_us(r0.ru_utime);
        let st = tv_us(r1.ru_stime) - tv_us(r0.ru_stime);
        Ok((
            format!(
                "open_us={open_us} setup_us={} cpu_us={} utime_us={ut} stime_us={st} nvcsw={} \
                 nivcsw={} xruns={xruns} frames={done} wall_us={} period={period} buffer={buffer}",
                setup.as_micros(),
                ut + st,
                r1.ru_nvcsw - r0.ru_nvcsw,
                r1.ru_nivcsw - r0.ru_nivcsw,
                wall.as_micros(),
            ),
            stopped,
        ))
    }
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_client: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok((line, stopped)) => {
            match &a.out {
                Some(f) => {
                    let w = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(f)
                        .and_then(|mut h| writeln!(h, "{line}"));
                    if let Err(e) = w {
                        eprintln!("bench_client: {f}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                None => println!("{line}"),
            }
            if stopped {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("bench_client: {e}");
            ExitCode::FAILURE
        }
    }
}
