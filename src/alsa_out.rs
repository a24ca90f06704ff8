//! The virtual device's ALSA sink: plays the mix into any alsa-lib PCM by name (`null`, `file`,
//! `bluealsa`, `plughw:…`), with blocking interleaved writes — for PCMs that cannot be mmapped
//! and so cannot carry dmix. Used only inside `rdmix-server`.
//!
//! An rdmix PCM cannot be the sink of its own server: the server sets `RDMIX_SERVER_PROCESS`
//! in its environment and the plugin refuses to open there.

use std::ffi::CString;
use std::ptr;

use alsa_sys::snd_pcm_t;

use crate::error::{Error, ErrorKind, Result};

/// The environment variable the server sets so that the plugin refuses to open inside it.
pub const IN_SERVER_ENV: &str = "RDMIX_SERVER_PROCESS";

/// An open playback PCM.
#[derive(Debug)]
pub struct AlsaOut {
    pcm: *mut snd_pcm_t,
    name: String,
    frame_bytes: usize,
}

// SAFETY: the handle is used by one thread at a time (it moves into the device thread).
unsafe impl Send for AlsaOut {}

fn alsa_err(what: String, r: i32) -> Error {
    // SAFETY: snd_strerror returns a static NUL-terminated string for any value.
    let msg = unsafe { std::ffi::CStr::from_ptr(alsa_sys::snd_strerror(r)) }
        .to_string_lossy()
        .into_owned();
    Error::new(ErrorKind::Device, -r, format!("{what}: {msg}"))
}

impl AlsaOut {
    /// Open `name` for playback and set the mixer's format, channels and rate (alsa-lib's
    /// `snd_pcm_set_params`, resampling allowed, latency ≈ the mixer's buffer).
    pub fn open(
        name: &str,
        format: i32,
        channels: u32,
        rate: u32,
        period: u64,
        buffer: u64,
    ) -> Result<AlsaOut> {
        let cname = CString::new(name)
            .map_err(|_| Error::config(format!("sink PCM name '{name}' contains a NUL")))?;
        let mut pcm: *mut snd_pcm_t = ptr::null_mut();
        // SAFETY: valid out pointer and NUL-terminated name; alsa-lib owns the handle until
        // snd_pcm_close.
        let r = unsafe {
            alsa_sys::snd_pcm_open(
                &mut pcm,
                cname.as_ptr(),
                alsa_sys::SND_PCM_STREAM_PLAYBACK,
                0,
            )
        };
        if r < 0 {
            return Err(alsa_err(format!("cannot open sink PCM '{name}'"), r));
        }
        let out = AlsaOut {
            pcm,
            name: name.to_string(),
            frame_bytes: channels as usize
                * crate::hw::format_physical_width(format).unwrap_or(16) as usize
                / 8,
        };
        let latency_us = (buffer.max(2 * period) * 1_000_000 / u64::from(rate.max(1))) as u32;
        // SAFETY: live handle; plain value arguments.
        let r = unsafe {
            alsa_sys::snd_pcm_set_params(
                out.pcm,
                format,
                alsa_sys::SND_PCM_ACCESS_RW_INTERLEAVED,
                channels,
                rate,
                1,
                latency_us,
            )
        };
        if r < 0 {
            return Err(alsa_err(
                format!(
                    "sink PCM '{name}' refuses {} {channels} ch {rate} Hz",
                    crate::hw::format_name(format)
                ),
                r,
            ));
        }
        Ok(out)
    }

    /// Write interleaved frames, blocking; an underrun is recovered (the sink's gap is silence).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let frames = data.len() / self.frame_bytes.max(1);
        let mut done = 0usize;
        while done < frames {
            // SAFETY: `data` holds `frames` interleaved frames; alsa-lib reads that many.
            let r = unsafe {
                alsa_sys::snd_pcm_writei(
                    self.pcm,
                    data.as_ptr().add(done * self.frame_bytes).cast(),
                    (frames - done) as alsa_sys::snd_pcm_uframes_t,
                )
            };
            if r >= 0 {
                done += r as usize;
                continue;
            }
            // SAFETY: live handle.
            let rec = unsafe { alsa_sys::snd_pcm_recover(self.pcm, r as i32, 1) };
            if rec < 0 {
                return Err(alsa_err(
                    format!("writing to sink PCM '{}'", self.name),
                    rec,
                ));
            }
        }
        Ok(())
    }

    /// Let what was written play out.
    pub fn drain(&mut self) {
        // SAFETY: live handle.
        unsafe { alsa_sys::snd_pcm_drain(self.pcm) };
    }
}

impl Drop for AlsaOut {
    fn drop(&mut self) {
        // SAFETY: the handle came from snd_pcm_open and is closed once.
        unsafe { alsa_sys::snd_pcm_close(self.pcm) };
    }
}
