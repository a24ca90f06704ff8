//! Play a raw interleaved file through any ALSA PCM with a chosen access type — the four that
//! applications use: `rw-i` (snd_pcm_writei), `rw-n` (snd_pcm_writen), `mmap-i` and `mmap-n`
//! (snd_pcm_mmap_writei/n, which go through the mmap areas). aplay only exercises interleaved
//! access; the VM tests use this to cover the rest.
//!
//! `play_raw PCM ACCESS FORMAT CHANNELS RATE PERIOD BUFFER FILE`
//! (FORMAT as alsa-lib names it, e.g. S16_LE or FLOAT_LE; PERIOD/BUFFER 0 = the PCM's choice)

use std::ffi::CString;
use std::process::ExitCode;
use std::ptr;

use alsa_sys::*;

fn check(r: i32, what: &str) -> Result<(), String> {
    if r < 0 {
        // SAFETY: snd_strerror returns a static string for any error code.
        let msg = unsafe { std::ffi::CStr::from_ptr(snd_strerror(r)) };
        Err(format!("{what}: {}", msg.to_string_lossy()))
    } else {
        Ok(())
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [pcm_name, access, format, channels, rate, period, buffer, file] = args else {
        return Err("usage: play_raw PCM ACCESS FORMAT CHANNELS RATE PERIOD BUFFER FILE".into());
    };
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("'{s}' is not a number"))
    };
    let (channels, rate, period, buffer) = (
        num(channels)? as u32,
        num(rate)? as u32,
        num(period)?,
        num(buffer)?,
    );
    let (acc, interleaved, mmap) = match access.as_str() {
        "rw-i" => (SND_PCM_ACCESS_RW_INTERLEAVED, true, false),
        "rw-n" => (SND_PCM_ACCESS_RW_NONINTERLEAVED, false, false),
        "mmap-i" => (SND_PCM_ACCESS_MMAP_INTERLEAVED, true, true),
        "mmap-n" => (SND_PCM_ACCESS_MMAP_NONINTERLEAVED, false, true),
        a => return Err(format!("unknown access {a}")),
    };
    let cfmt = CString::new(format.as_str()).map_err(|_| "bad format")?;
    // SAFETY: NUL-terminated name.
    let fmt = unsafe { snd_pcm_format_value(cfmt.as_ptr()) };
    if fmt < 0 {
        return Err(format!("unknown format {format}"));
    }
    // SAFETY: a known format.
    let sb = (unsafe { snd_pcm_format_physical_width(fmt) } / 8) as usize;
    let fb = sb * channels as usize;

    let name = CString::new(pcm_name.as_str()).map_err(|_| "bad name")?;
    let mut pcm: *mut snd_pcm_t = ptr::null_mut();
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
        check(snd_pcm_hw_params_set_access(pcm, hw, acc), "set_access")?;
        check(snd_pcm_hw_params_set_format(pcm, hw, fmt), "set_format")?;
        check(
            snd_pcm_hw_params_set_channels(pcm, hw, channels),
            "set_channels",
        )?;
        check(snd_pcm_hw_params_set_rate(pcm, hw, rate, 0), "set_rate")?;
        if buffer > 0 {
            let mut b = buffer as snd_pcm_uframes_t;
            check(
                snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &mut b),
                "set_buffer",
            )?;
        }
        if period > 0 {
            let mut p = period as snd_pcm_uframes_t;
            check(
                snd_pcm_hw_params_set_period_size_near(pcm, hw, &mut p, ptr::null_mut()),
                "set_period",
            )?;
        }
        check(snd_pcm_hw_params(pcm, hw), "hw_params")?;
        snd_pcm_hw_params_free(hw);

        // Read the data only now: FILE may be a FIFO that releases it when the test wants the
        // stream to start.
        let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let frames = data.len() / fb;

        // Non-interleaved: one buffer per channel.
        let planes: Vec<Vec<u8>> = (0..channels as usize)
            .map(|c| {
                (0..frames)
                    .flat_map(|f| data[f * fb + c * sb..f * fb + (c + 1) * sb].to_vec())
                    .collect()
            })
            .collect();
        let mut done = 0usize;
        while done < frames {
            let n = (frames - done).min(4096) as snd_pcm_uframes_t;
            let r = if interleaved {
                let p = data.as_ptr().add(done * fb) as *const libc::c_void;
                if mmap {
                    snd_pcm_mmap_writei(pcm, p, n)
                } else {
                    snd_pcm_writei(pcm, p, n)
                }
            } else {
                let mut ptrs: Vec<*mut libc::c_void> = planes
                    .iter()
                    .map(|pl| pl.as_ptr().add(done * sb) as *mut libc::c_void)
                    .collect();
                if mmap {
                    snd_pcm_mmap_writen(pcm, ptrs.as_mut_ptr(), n)
                } else {
                    snd_pcm_writen(pcm, ptrs.as_mut_ptr(), n)
                }
            };
            if r < 0 {
                check(snd_pcm_recover(pcm, r as i32, 0), "write")?;
                eprintln!("play_raw: recovered from {r}");
                continue;
            }
            done += r as usize;
        }
        check(snd_pcm_drain(pcm), "drain")?;
        snd_pcm_close(pcm);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("play_raw: {e}");
            ExitCode::FAILURE
        }
    }
}
