//! The virtual slave: a timer-driven device inside the server, for machines without a sound
//! card and for sinks that cannot be mmapped (a WAV file, nothing at all, or any ALSA PCM such
//! as `null`, `file` or `bluealsa`, which dmix cannot sit on).
//!
//! It has the shared layout of a kernel PCM, in one memfd that the server hands to clients in
//! place of the hw fd:
//!
//! ```text
//! 0            struct snd_pcm_mmap_status (the kernel's layout, one page)
//! page size    the DMA ring: buffer_size interleaved frames of the slave format
//! ```
//!
//! Clients map both and mix exactly as into a hardware ring (`stream` and `mix` do not know the
//! difference); only the position source differs. A server thread plays the device: every period
//! time (absolute deadlines on CLOCK_MONOTONIC, so it does not drift) it hands the period at the
//! position to the sink, silences it, and only then publishes the next position in the status
//! page — the order of the kernel's free-running silence, so a client never writes the next lap
//! into a slot that is about to be silenced. Clients never write into the period the position is
//! in, so the sink reads finished samples.
//!
//! The thread is the server's, never the application's: the plugin starts no thread.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, ErrorKind, Result};
use crate::hw::{self, sys::SndPcmMmapStatus, HwRequest};

/// Where the virtual device's samples go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// Discard them (the device is only a clock).
    Null,
    /// Write them to a WAV file (created, or truncated, when the mixer starts).
    Wav(PathBuf),
    /// Feed them to an ALSA PCM, by name, with blocking writes.
    Pcm(String),
}

impl SinkSpec {
    /// Parse the server's `--virtual` argument: `null`, `wav:PATH` or `pcm:NAME`.
    pub fn parse(s: &str) -> Result<SinkSpec> {
        if s == "null" {
            Ok(SinkSpec::Null)
        } else if let Some(p) = s.strip_prefix("wav:").filter(|p| !p.is_empty()) {
            Ok(SinkSpec::Wav(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("pcm:").filter(|p| !p.is_empty()) {
            Ok(SinkSpec::Pcm(p.to_string()))
        } else {
            Err(Error::config(format!(
                "virtual sink '{s}' is not one of null, wav:PATH, pcm:NAME"
            )))
        }
    }

    /// The mixer's socket name: the sink hashed (FNV-1a, 64 bits), since a path may not fit
    /// an abstract socket name (compare `protocol::socket_name` for cards).
    pub fn socket_name(&self, owner: Option<u32>, ipc_key: i64) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.arg().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        crate::protocol::mixer_socket_name(owner, &format!("virtual-{h:016x}"), ipc_key)
    }

    /// The inverse of [`SinkSpec::parse`] (also the device's name in messages, after
    /// `virtual:`).
    pub fn arg(&self) -> String {
        match self {
            SinkSpec::Null => "null".into(),
            SinkSpec::Wav(p) => format!("wav:{}", p.display()),
            SinkSpec::Pcm(n) => format!("pcm:{n}"),
        }
    }
}

/// The virtual device's configuration, chosen from the slave parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualGeometry {
    pub format: i32,
    pub channels: u32,
    pub rate: u32,
    pub sample_bits: u32,
    pub period_size: u64,
    pub buffer_size: u64,
    pub boundary: u64,
}

impl VirtualGeometry {
    /// The slave parameters, with dmix's defaults (S16_LE, 48000 Hz, 2 channels, period 1024,
    /// 4 periods); the buffer is rounded up to whole periods (the device plays period by period).
    pub fn choose(req: &HwRequest) -> Result<VirtualGeometry> {
        let format = req.format.unwrap_or(hw::SNDRV_PCM_FORMAT_S16_LE);
        let sample_bits = hw::format_physical_width(format)
            .filter(|_| crate::mix::SlaveFormat::from_alsa(format).is_some())
            .ok_or_else(|| {
                Error::config(format!(
                    "the virtual device cannot run {}; use S16_LE, S16_BE, S32_LE, S32_BE, \
                     S24_LE, S24_3LE or U8",
                    hw::format_name(format)
                ))
            })?;
        let rate = req.rate.unwrap_or(hw::DEFAULT_RATE);
        let channels = req.channels.unwrap_or(hw::DEFAULT_CHANNELS);
        if !(1..=256).contains(&channels) || !(1000..=768_000).contains(&rate) {
            return Err(Error::config(format!(
                "the virtual device takes 1..=256 channels at 1000..=768000 Hz, not {channels} \
                 at {rate}"
            )));
        }
        let period_size = match (req.period_size, req.period_time) {
            (Some(p), _) => p,
            (None, Some(us)) => hw::us_to_frames(us, rate),
            (None, None) => hw::DEFAULT_PERIOD_SIZE,
        }
        .max(16);
        let buffer_size = match (req.buffer_size, req.buffer_time, req.periods) {
            (Some(b), _, _) => b,
            (None, Some(us), _) => hw::us_to_frames(us, rate),
            (None, None, Some(n)) => period_size * u64::from(n),
            (None, None, None) => period_size * u64::from(hw::DEFAULT_PERIODS),
        }
        .max(2 * period_size)
        .div_ceil(period_size)
            * period_size;
        if buffer_size > 1 << 24 {
            return Err(Error::config(format!(
                "the virtual device's buffer of {buffer_size} frames is too large (at most 2^24)"
            )));
        }
        // As the kernel does: the largest power-of-two multiple of the buffer below LONG_MAX.
        let mut boundary = buffer_size;
        while boundary * 2 <= i64::MAX as u64 - buffer_size {
            boundary *= 2;
        }
        Ok(VirtualGeometry {
            format,
            channels,
            rate,
            sample_bits,
            period_size,
            buffer_size,
            boundary,
        })
    }

    pub fn frame_bytes(&self) -> usize {
        self.channels as usize * self.sample_bits as usize / 8
    }
}

/// Where the DMA ring starts in the device memfd, and its length: `(offset, len)`.
pub fn dma_range(channels: u32, buffer_size: u64, sample_bits: u32) -> (u64, usize) {
    let page = hw::page_size();
    let len = buffer_size as usize * channels as usize * sample_bits as usize / 8;
    (page as u64, len.div_ceil(page) * page)
}

/// The silence byte pattern of a format, repeated per sample (0 for signed, 0x80 for U8).
fn silence_byte(format: i32) -> u8 {
    if format == hw::SNDRV_PCM_FORMAT_U8 {
        0x80
    } else {
        0
    }
}

/// What the device played for one client, read from its slot when it leaves.
#[derive(Clone, Debug)]
pub struct ClientRecord {
    pub pid: u32,
    pub program: String,
    pub start_frame: u64,
    pub frames: u64,
    pub late: u32,
    pub xruns: u32,
    pub clips: u32,
}

/// The device: its memfd and mapping. Shared between the server loop (fd, position) and the
/// playing thread.
#[derive(Debug)]
pub struct VirtualDevice {
    fd: OwnedFd,
    map: MmapRaw,
    geom: VirtualGeometry,
    sink: SinkSpec,
    name: String,
}

// SAFETY: the mapping is shared memory accessed through atomics (status page) and by the one
// playing thread (the period it reads and silences, which clients do not write meanwhile).
unsafe impl Send for VirtualDevice {}
// SAFETY: as above.
unsafe impl Sync for VirtualDevice {}

impl VirtualDevice {
    /// Create the device memfd, in RUNNING state at position 0, and check that the sink can
    /// take the format (the sink itself is opened by [`VirtualDevice::start`]).
    pub fn create(geom: VirtualGeometry, sink: SinkSpec) -> Result<VirtualDevice> {
        if let SinkSpec::Wav(p) = &sink {
            wav_format(geom.format).ok_or_else(|| {
                Error::config(format!(
                    "{}: a WAV file holds S16_LE, S24_3LE, S32_LE or U8, not {}; set \
                     slave.format",
                    p.display(),
                    hw::format_name(geom.format)
                ))
            })?;
        }
        let (off, len) = dma_range(geom.channels, geom.buffer_size, geom.sample_bits);
        let total = off as usize + len;
        let fd = nix::sys::memfd::memfd_create(
            c"rdmix-virtual-device",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::sys("memfd_create", e))?;
        nix::unistd::ftruncate(&fd, total as i64)
            .map_err(|e| Error::sys("ftruncate virtual device", e))?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_truncate(seals)),
        )
        .map_err(|e| Error::sys("seal virtual device", e))?;
        let map = MmapOptions::new().len(total).map_raw(&fd).map_err(|e| {
            Error::sys(
                "mmap virtual device",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        let name = format!("virtual:{}", sink.arg());
        let dev = VirtualDevice {
            fd,
            map,
            geom,
            sink,
            name,
        };
        let silence = silence_byte(geom.format);
        // SAFETY: the DMA range lies inside the fresh mapping, which nobody else sees yet.
        unsafe {
            std::ptr::write_bytes(dev.map.as_mut_ptr().add(off as usize), silence, len);
        }
        dev.status_i32(std::mem::offset_of!(SndPcmMmapStatus, state))
            .store(hw::SNDRV_PCM_STATE_RUNNING, Ordering::Release);
        dev.stamp_now();
        Ok(dev)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `virtual:<sink>`, for messages and the Welcome.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn geometry(&self) -> VirtualGeometry {
        self.geom
    }

    pub fn sink(&self) -> &SinkSpec {
        &self.sink
    }

    fn status_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is an 8-aligned field offset inside the status page at the start of
        // the live mapping; the page is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(off).cast()) }
    }
    fn status_i64(&self, off: usize) -> &AtomicI64 {
        // SAFETY: as in status_u64.
        unsafe { AtomicI64::from_ptr(self.map.as_mut_ptr().add(off).cast()) }
    }
    fn status_i32(&self, off: usize) -> &AtomicI32 {
        // SAFETY: as in status_u64, 4-aligned.
        unsafe { AtomicI32::from_ptr(self.map.as_mut_ptr().add(off).cast()) }
    }

    /// The position (0..boundary).
    pub fn hw_ptr(&self) -> u64 {
        self.status_u64(std::mem::offset_of!(SndPcmMmapStatus, hw_ptr))
            .load(Ordering::Acquire)
    }

    fn stamp_now(&self) {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| (t.tv_sec(), t.tv_nsec()))
            .unwrap_or((0, 0));
        let base = std::mem::offset_of!(SndPcmMmapStatus, tstamp);
        self.status_i64(base).store(t.0, Ordering::Relaxed);
        self.status_i64(base + 8).store(t.1, Ordering::Release);
    }

    /// Mark the device stopped (clients then fail with ENODEV instead of waiting for a clock
    /// that no longer runs).
    pub fn mark_stopped(&self) {
        self.status_i32(std::mem::offset_of!(SndPcmMmapStatus, state))
            .store(hw::SNDRV_PCM_STATE_DISCONNECTED, Ordering::Release);
    }

    /// Open the sink (before the server forks into the background, so that an unwritable
    /// file or a PCM that cannot open fails the application's open with the reason).
    pub fn open_sink(&self) -> Result<Sink> {
        Sink::open(&self.sink, &self.geom)
    }

    /// Start the playing thread on an opened sink (after the server has daemonized: a fork
    /// keeps only the forking thread).
    pub fn start(self: &Arc<Self>, sink: Sink) -> Result<Player> {
        let stop = Arc::new(AtomicBool::new(false));
        let dev = Arc::clone(self);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rdmix-virtual".into())
            .spawn(move || dev.play(sink, &flag))
            .map_err(|e| Error::new(ErrorKind::Io, libc::EAGAIN, format!("spawn: {e}")))?;
        Ok(Player {
            stop,
            thread: Some(thread),
        })
    }

    /// The playing loop: one period per period time, from absolute deadlines.
    fn play(&self, mut sink: Sink, stop: &AtomicBool) -> Result<u64> {
        let g = self.geom;
        let (off, _) = dma_range(g.channels, g.buffer_size, g.sample_bits);
        let fb = g.frame_bytes();
        let pbytes = g.period_size as usize * fb;
        let silence = silence_byte(g.format);
        let t0 = monotonic_ns();
        let mut periods: u64 = 0;
        let mut scratch = vec![0u8; pbytes];
        while !stop.load(Ordering::Acquire) {
            let due = t0
                + ((periods + 1) as u128 * g.period_size as u128 * 1_000_000_000 / g.rate as u128)
                    as u64;
            let now = monotonic_ns();
            if now < due {
                sleep_until(due.min(now + 100_000_000));
                continue;
            }
            let pos = self.hw_ptr();
            let idx = (pos % g.buffer_size) as usize;
            // SAFETY: the period lies inside the DMA range (the buffer is whole periods and the
            // position advances by periods); clients do not write the period the position is
            // in, and this thread is its only other user.
            unsafe {
                let p = self.map.as_mut_ptr().add(off as usize + idx * fb);
                std::ptr::copy_nonoverlapping(p, scratch.as_mut_ptr(), pbytes);
                std::ptr::write_bytes(p, silence, pbytes);
            }
            std::sync::atomic::fence(Ordering::SeqCst);
            self.status_u64(std::mem::offset_of!(SndPcmMmapStatus, hw_ptr))
                .store((pos + g.period_size) % g.boundary, Ordering::Release);
            self.stamp_now();
            periods += 1;
            sink.write(&scratch)?;
        }
        sink.finish()?;
        Ok(periods * g.period_size)
    }
}

/// The running device thread; [`Player::stop`] ends it and finishes the sink.
#[derive(Debug)]
pub struct Player {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl Player {
    /// Stop playing, finish the sink (a WAV file gets its final sizes) and return the frames
    /// played.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::new(
                ErrorKind::Io,
                libc::EIO,
                "the virtual device thread panicked",
            )),
            None => Ok(0),
        }
    }

    /// Has the thread ended by itself (a sink error)?
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_nanosleep reads `ts` and writes nothing (TIMER_ABSTIME, no remainder).
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// WAV `(format tag, bits per sample)` for a slave format a WAV file holds as is.
fn wav_format(format: i32) -> Option<(u16, u16)> {
    match format {
        hw::SNDRV_PCM_FORMAT_S16_LE => Some((1, 16)),
        hw::SNDRV_PCM_FORMAT_S24_3LE => Some((1, 24)),
        hw::SNDRV_PCM_FORMAT_S32_LE => Some((1, 32)),
        hw::SNDRV_PCM_FORMAT_U8 => Some((1, 8)),
        _ => None,
    }
}

/// A canonical 44-byte WAV header for `data_bytes` of PCM data.
pub fn wav_header(channels: u32, rate: u32, bits: u16, data_bytes: u32) -> [u8; 44] {
    let block = channels as u16 * bits / 8;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&(channels as u16).to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&bits.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// An open sink (see [`VirtualDevice::open_sink`]).
pub struct Sink(SinkKind);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            SinkKind::Null => "Sink(null)",
            SinkKind::Wav { .. } => "Sink(wav)",
            SinkKind::Pcm(_) => "Sink(pcm)",
        })
    }
}

enum SinkKind {
    Null,
    Wav {
        file: File,
        path: PathBuf,
        channels: u32,
        rate: u32,
        bits: u16,
        bytes: u64,
    },
    Pcm(crate::alsa_out::AlsaOut),
}

impl Sink {
    fn open(spec: &SinkSpec, g: &VirtualGeometry) -> Result<Sink> {
        Ok(Sink(match spec {
            SinkSpec::Null => SinkKind::Null,
            SinkSpec::Wav(path) => {
                let (_, bits) = wav_format(g.format).ok_or_else(|| {
                    Error::config(format!("{}: format not storable in WAV", path.display()))
                })?;
                let mut file = File::create(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("cannot create {}: {e}", path.display()),
                    )
                })?;
                file.write_all(&wav_header(g.channels, g.rate, bits, 0))
                    .map_err(|e| io_err(path, e))?;
                SinkKind::Wav {
                    file,
                    path: path.clone(),
                    channels: g.channels,
                    rate: g.rate,
                    bits,
                    bytes: 0,
                }
            }
            SinkSpec::Pcm(name) => SinkKind::Pcm(crate::alsa_out::AlsaOut::open(
                name,
                g.format,
                g.channels,
                g.rate,
                g.period_size,
                g.buffer_size,
            )?),
        }))
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.0 {
            SinkKind::Null => Ok(()),
            SinkKind::Wav {
                file,
                path,
                channels,
                rate,
                bits,
                bytes,
            } => {
                file.write_all(data).map_err(|e| io_err(path, e))?;
                *bytes += data.len() as u64;
                // Keep the header true as it grows, so the file is valid even if the server is
                // killed (a RIFF size stops at 4 GiB: the sizes saturate there).
                let n = u32::try_from(*bytes).unwrap_or(u32::MAX - 36);
                file.write_all_at(&wav_header(*channels, *rate, *bits, n), 0)
                    .map_err(|e| io_err(path, e))
            }
            SinkKind::Pcm(p) => p.write(data),
        }
    }

    fn finish(&mut self) -> Result<()> {
        match &mut self.0 {
            SinkKind::Wav { file, path, .. } => file.sync_data().map_err(|e| io_err(path, e)),
            SinkKind::Pcm(p) => {
                p.drain();
                Ok(())
            }
            SinkKind::Null => Ok(()),
        }
    }
}

fn io_err(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("{}: {e}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_spec_roundtrip() {
        for s in ["null", "wav:/tmp/x.wav", "pcm:bluealsa"] {
            assert_eq!(SinkSpec::parse(s).unwrap().arg(), s);
        }
        for bad in ["", "wav:", "pcm:", "file:/x", "nul"] {
            assert!(SinkSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn geometry_defaults_and_rounding() {
        let g = VirtualGeometry::choose(&HwRequest::default()).unwrap();
        assert_eq!(
            (g.format, g.rate, g.channels, g.period_size, g.buffer_size),
            (hw::SNDRV_PCM_FORMAT_S16_LE, 48000, 2, 1024, 4096)
        );
        assert_eq!(g.boundary % (g.buffer_size << 24), 0);
        let g = VirtualGeometry::choose(&HwRequest {
            period_size: Some(1000),
            buffer_size: Some(2500),
            ..HwRequest::default()
        })
        .unwrap();
        assert_eq!((g.period_size, g.buffer_size), (1000, 3000));
        let e = VirtualGeometry::choose(&HwRequest {
            format: Some(hw::SNDRV_PCM_FORMAT_FLOAT_LE),
            ..HwRequest::default()
        })
        .unwrap_err();
        assert!(e.message().contains("FLOAT_LE"), "{e}");
    }

    #[test]
    fn wav_sink_refuses_big_endian() {
        let g = VirtualGeometry::choose(&HwRequest {
            format: Some(hw::SNDRV_PCM_FORMAT_S16_BE),
            ..HwRequest::default()
        })
        .unwrap();
        let e = VirtualDevice::create(g, SinkSpec::Wav("/tmp/x.wav".into())).unwrap_err();
        assert!(e.message().contains("S16_BE"), "{e}");
    }

    #[test]
    fn device_plays_periods_into_a_wav_and_silences_them() {
        let dir = std::env::temp_dir().join(format!("rdmix-vdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.wav");
        let g = VirtualGeometry::choose(&HwRequest {
            rate: Some(48000),
            period_size: Some(480),
            periods: Some(4),
            ..HwRequest::default()
        })
        .unwrap();
        let dev = Arc::new(VirtualDevice::create(g, SinkSpec::Wav(path.clone())).unwrap());
        // Write a marker into the second period before the device starts.
        let (off, _) = dma_range(g.channels, g.buffer_size, g.sample_bits);
        // SAFETY: test-only write inside the mapping, before the playing thread exists.
        unsafe {
            let p = dev.map.as_mut_ptr().add(off as usize + 480 * 4) as *mut i16;
            *p = 1234;
        }
        let player = dev.start(dev.open_sink().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let frames = player.stop().unwrap();
        assert!(frames >= 480 * 4, "played {frames}");
        assert_eq!(dev.hw_ptr(), frames % g.boundary);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, 44 + frames * 4);
        assert_eq!(&data[40..44], &((frames * 4) as u32).to_le_bytes());
        let s = |f: usize| i16::from_le_bytes([data[44 + f * 4], data[45 + f * 4]]);
        assert_eq!(s(480), 1234);
        assert_eq!(s(481), 0);
        // A lap later the marker's slot has been silenced.
        assert_eq!(s(480 + 1920), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
