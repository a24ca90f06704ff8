//! One client's playback stream: where its frames land in the slave ring, when they are mixed,
//! and what position it reports to alsa-lib.
//!
//! # Positions
//!
//! - `slave`: the slave hardware position, unwrapped to a monotone counter that is congruent to
//!   the kernel's `hw_ptr` modulo the kernel's boundary (so lap numbers agree between clients).
//! - `base`: the slave position of this client's frame 0, fixed at start: the slave position
//!   after a fresh `HWSYNC` plus one slave period of headroom, so the first frame lands where
//!   the hardware has not read and nothing will silence.
//! - `written`: frames the application has handed over since prepare; `mixed`: frames already
//!   accumulated into the shared ring. Frames `mixed..written` wait in the private `ring` until
//!   the slave ring has room for them (never more than one slave buffer ahead of the hardware,
//!   never inside the period the hardware is in).
//! - The position reported to alsa-lib (`pointer`) is `slave - base`: the frames the hardware
//!   has consumed. So `delay` is exactly what is still to be heard, and drain ends when the last
//!   frame has been played.
//!
//! # Real-time contract
//!
//! `transfer`, `pointer`, `poll_revents` and `arm_timer` allocate nothing, take no lock and make
//! no call to the server: they touch the kernel's status page, the DMA buffer and the shared
//! sum ring through atomics, and make only kernel syscalls on the client's own fds (`HWSYNC` on
//! the hw fd, `timerfd_settime`/`read` on the timer). The private ring is allocated in
//! `hw_params`, outside the real-time path.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use crate::client::Connection;
use crate::config::{Alignment, PluginConfig};
use crate::error::{Error, Result};
use crate::hw::{self, DmaBuffer, HwPcm, StatusPage};
use crate::mix::{ChannelLayout, ClientFormat, SlaveFormat, Source, Target};
use crate::shm::{Geometry, SharedState};

/// Frames the first write of a stream must stay ahead of the extrapolated hardware position;
/// closer than that, the start moves one period later (writing the frames takes microseconds).
const START_MARGIN: u64 = 64;

/// The client's negotiated parameters (from alsa-lib's hw_params and sw_params).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientParams {
    pub channels: usize,
    pub format: Option<ClientFormat>,
    pub sample_bytes: usize,
    pub buffer_size: u64,
    pub period_size: u64,
    pub rate: u32,
    /// alsa-lib's boundary for this PCM (positions returned by `pointer` wrap at it).
    pub boundary: u64,
    pub stop_threshold: u64,
    pub avail_min: u64,
}

/// Where the client's stream is, as far as mixing goes (alsa-lib keeps the full PCM state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Prepared, set up, after a drop or an xrun: nothing is mixed.
    Stopped,
    Running,
    /// Unplayed frames were taken back out of the mix; they are mixed again on resume.
    Paused,
}

#[derive(Debug)]
pub struct Stream {
    /// `RDMIX_TRACE=1`: log callbacks to stderr (debugging only).
    pub trace: bool,
    // Field order is drop order: mappings and the hw fd go before the socket, so that the server,
    // seeing our EOF, knows we no longer hold the device.
    status: StatusPage,
    dma: DmaBuffer,
    hw: HwPcm,
    shared: SharedState,
    timer: OwnedFd,
    /// Never read: held open so the server sees this client go (EOF) when it is dropped, last.
    _sock: OwnedFd,
    layout: Vec<ChannelLayout>,
    geom: Geometry,
    format: SlaveFormat,
    /// Client channel -> slave channel (`None`: not played). Its length is the client's
    /// channel count.
    bindings: Vec<Option<u16>>,
    alignment: Alignment,
    slowptr: bool,
    slot: u32,
    pid: u32,
    p: ClientParams,
    /// The last `buffer_size` frames written, interleaved, in the client's sample format: the
    /// pending ones (`mixed..written`) and the mixed-but-unplayed ones, which a drop, pause or
    /// rewind takes back out of the mix.
    ring: Vec<u8>,
    run: Run,
    /// The client frame whose slave position may still move before it is first mixed (set by
    /// start and resume; cleared once a frame has been mixed from there).
    anchor: Option<u64>,
    /// Frames reported played so far: the reported position never goes back (a resume places
    /// the next frame later than the hardware position).
    floor: u64,
    /// While paused: the first client frame taken back out of the mix; the position stops there.
    cut: u64,
    /// An xrun happened (an underrun, or the application moved its pointer past the buffer,
    /// see `follow_appl`): every `pointer` reports it until the next prepare, as a hardware PCM
    /// stays in XRUN. (Reported once only, it could be consumed by a `delay` call, which does
    /// not change alsa-lib's state, and the stream would hang RUNNING with nothing to wait for.)
    xrun: Option<&'static str>,
    /// The hardware position's observed step (gcd of the deltas seen; 0 until known): the
    /// position can lag the truth by up to this much, so wakeups wait that much longer.
    granule: u64,
    /// How many position changes went into `granule`.
    granule_samples: u32,
    slave_raw: u64,
    slave: u64,
    /// CLOCK_MONOTONIC just before `slave` was read from the kernel.
    slave_clock_ns: u64,
    base: u64,
    written: u64,
    mixed: u64,
}

impl Stream {
    /// Map everything the server handed us and check it against the shared state.
    pub fn attach(conn: Connection, cfg: &PluginConfig) -> Result<Stream> {
        let bindings = cfg.bindings.as_deref();
        let Connection {
            sock,
            hw_fd,
            hw_path,
            shm_fd,
            slot,
        } = conn;
        let shared = SharedState::attach(shm_fd)?;
        let geom = shared.geometry();
        if geom.boundary % geom.buffer_size != 0
            || (geom.boundary / geom.buffer_size) % (1 << 24) != 0
        {
            return Err(Error::layout(format!(
                "slave boundary {} is not a buffer multiple of 2^24 laps",
                geom.boundary
            )));
        }
        let format = SlaveFormat::from_alsa(geom.format).ok_or_else(|| {
            Error::config(format!(
                "the device runs {}, which rdmix cannot mix; set slave.format to one of \
                 S16_LE, S16_BE, S32_LE, S32_BE, S24_LE, S24_3LE, U8",
                hw::format_name(geom.format)
            ))
        })?;
        let bindings = match bindings {
            Some(b) => {
                if let Some(bad) = b.iter().flatten().find(|&&c| c as u32 >= geom.channels) {
                    return Err(Error::config(format!(
                        "bindings name slave channel {bad}, but the device has {} channels",
                        geom.channels
                    )));
                }
                b.to_vec()
            }
            None => (0..geom.channels as u16).map(Some).collect(),
        };
        let st = nix::sys::stat::fstat(&hw_fd).map_err(|e| Error::sys("fstat hw fd", e))?;
        let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if is_file != (geom.slave_kind == crate::shm::SLAVE_VIRTUAL) {
            return Err(Error::protocol(format!(
                "the server handed a {} for a mixer of slave kind {}",
                if is_file { "file" } else { "device" },
                geom.slave_kind
            )));
        }
        let hw = if geom.slave_kind == crate::shm::SLAVE_VIRTUAL {
            HwPcm::virtual_from_fd(hw_fd, hw_path)
        } else {
            HwPcm::from_fd(hw_fd, hw_path)
        };
        let status = hw.map_status()?;
        let (dma, areas) = hw.map_dma_for_client(
            geom.channels,
            geom.buffer_size,
            geom.sample_bits,
            geom.interleaved,
        )?;
        let layout = areas
            .iter()
            .map(|a| ChannelLayout {
                first: (a.first / 8) as usize,
                step: (a.step / 8) as usize,
            })
            .collect::<Vec<_>>();
        let sb = geom.sample_bits as usize / 8;
        for l in &layout {
            let last = l.first + (geom.buffer_size as usize - 1) * l.step + sb;
            if last > dma.len() || l.first % sb != 0 || l.step % sb != 0 {
                return Err(Error::layout(format!(
                    "DMA channel layout (first {} step {}) does not fit the {}-byte mapping",
                    l.first,
                    l.step,
                    dma.len()
                )));
            }
        }
        let timer = nix::sys::timerfd::TimerFd::new(
            nix::sys::timerfd::ClockId::CLOCK_MONOTONIC,
            nix::sys::timerfd::TimerFlags::TFD_CLOEXEC
                | nix::sys::timerfd::TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("timerfd_create", e))?;
        let timer: OwnedFd = timer.into();
        let raw = status.hw_ptr();
        Ok(Stream {
            trace: std::env::var_os("RDMIX_TRACE").is_some_and(|v| v == "1"),
            status,
            dma,
            hw,
            shared,
            timer,
            _sock: sock,
            layout,
            geom,
            format,
            bindings,
            alignment: cfg.alignment,
            slowptr: cfg.slowptr,
            slot,
            pid: std::process::id(),
            p: ClientParams::default(),
            ring: Vec::new(),
            run: Run::Stopped,
            anchor: None,
            floor: 0,
            cut: 0,
            xrun: None,
            granule: 0,
            granule_samples: 0,
            slave_raw: raw,
            slave: raw,
            slave_clock_ns: monotonic_ns(),
            base: 0,
            written: 0,
            mixed: 0,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geom
    }

    pub fn timer_fd(&self) -> i32 {
        self.timer.as_raw_fd()
    }

    /// hw_params: allocate the private ring for the negotiated buffer.
    /// The client's channel count (the number of bindings).
    pub fn client_channels(&self) -> u32 {
        self.bindings.len() as u32
    }

    pub fn slave_format(&self) -> SlaveFormat {
        self.format
    }

    /// hw_params: check what alsa-lib negotiated and allocate the private ring.
    pub fn set_hw_params(
        &mut self,
        format: i32,
        channels: u32,
        rate: u32,
        period: u64,
        buffer: u64,
    ) -> Result<()> {
        let cf = if format == self.geom.format {
            ClientFormat::Native
        } else if format == hw::SNDRV_PCM_FORMAT_FLOAT_LE {
            ClientFormat::FloatLe
        } else {
            return Err(Error::config(format!(
                "sample format {} requested; the mixer takes {} or FLOAT_LE",
                hw::format_name(format),
                hw::format_name(self.geom.format)
            )));
        };
        if channels != self.client_channels() || rate != self.geom.rate {
            return Err(Error::config(format!(
                "{channels} channels at {rate} Hz requested; the mixer takes {} channels at {} Hz",
                self.client_channels(),
                self.geom.rate
            )));
        }
        // No longer than the slave ring, as with dmix: every frame written can then be mixed at
        // once (after the first period), so no wakeup is ever spent on mixing alone.
        let max = self.geom.buffer_size;
        if buffer == 0 || buffer > max {
            return Err(Error::config(format!(
                "buffer of {buffer} frames; the mixer allows 1..={max}"
            )));
        }
        let sb = cf.bytes(self.format);
        self.ring = vec![0u8; buffer as usize * channels as usize * sb];
        self.p.channels = channels as usize;
        self.p.format = Some(cf);
        self.p.sample_bytes = sb;
        self.p.buffer_size = buffer;
        self.p.period_size = period;
        self.p.rate = rate;
        self.p.boundary = buffer;
        self.p.stop_threshold = buffer;
        self.p.avail_min = period;
        if let Some(s) = self.shared.slot(self.slot) {
            s.format.store(format, Ordering::Relaxed);
            s.channels.store(channels, Ordering::Relaxed);
            s.rate.store(rate, Ordering::Relaxed);
            s.period_size.store(period, Ordering::Relaxed);
            s.buffer_size.store(buffer, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn set_sw_params(&mut self, boundary: u64, stop_threshold: u64, avail_min: u64) {
        self.p.boundary = boundary.max(1);
        self.p.stop_threshold = stop_threshold;
        self.p.avail_min = avail_min.max(1);
    }

    /// Prepare: back to the start, after checking the device is still there (a disconnected
    /// card fails here with ENODEV, which is how an application learns of it after the xrun
    /// its pointer reported).
    pub fn prepare(&mut self) -> Result<()> {
        self.hw.hwsync().map_err(|e| {
            if e.errno() == libc::ENODEV {
                Error::new(
                    crate::error::ErrorKind::Io,
                    libc::ENODEV,
                    format!("{} was disconnected", self.hw.path()),
                )
            } else {
                e
            }
        })?;
        if self.run != Run::Stopped {
            let _ = self.sync_slave();
            self.retract();
        }
        self.run = Run::Stopped;
        self.anchor = None;
        self.written = 0;
        self.mixed = 0;
        self.base = 0;
        self.floor = 0;
        self.cut = 0;
        self.xrun = None;
        Ok(())
    }

    /// Refresh the slave position: HWSYNC makes the kernel read the driver's pointer now.
    fn sync_slave(&mut self) -> Result<()> {
        self.slave_clock_ns = monotonic_ns();
        if self.hw.is_virtual() {
            self.check_virtual_clock()?;
        } else if self.slowptr {
            self.hw.hwsync()?;
        }
        let raw = self.status.hw_ptr();
        let b = self.geom.boundary;
        let delta = (raw + b - self.slave_raw) % b;
        if delta != 0 {
            self.granule = gcd(self.granule, delta);
            self.granule_samples = self.granule_samples.saturating_add(1);
        }
        self.slave += delta;
        self.slave_raw = raw;
        Ok(())
    }

    /// The virtual device runs in the server: if the server stopped it, or died (its clock has
    /// not moved for a second plus two buffers), fail with ENODEV as a removed card does,
    /// rather than wait for a position that will never move. No syscall: the status page and
    /// the vDSO clock.
    fn check_virtual_clock(&self) -> Result<()> {
        let gone = |why: &str| {
            Err(Error::new(
                crate::error::ErrorKind::Io,
                libc::ENODEV,
                format!("{} {why}", self.hw.path()),
            ))
        };
        if self.status.state() != hw::SNDRV_PCM_STATE_RUNNING {
            return gone("was stopped by rdmix-server");
        }
        let t = self.status.tstamp();
        let stamp = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
        let limit = 1_000_000_000
            + 2 * self.geom.buffer_size * 1_000_000_000 / self.geom.rate.max(1) as u64;
        if self.slave_clock_ns.saturating_sub(stamp) > limit {
            return gone("stopped moving: rdmix-server is gone");
        }
        Ok(())
    }

    /// The slave position now, extrapolated without a syscall (`clock_gettime` is in the vDSO)
    /// from the last synced position and the clock read just before that sync, plus one
    /// observed pointer step. The kernel read the position after that clock reading, so this
    /// can only over-estimate — a stall anywhere since moves a start later, never too early.
    /// (The status page's own timestamp is not refreshed by HWSYNC on every kernel, so it is
    /// not used.)
    fn estimate_slave_now(&self) -> u64 {
        let elapsed = monotonic_ns()
            .saturating_sub(self.slave_clock_ns)
            .min(10_000_000_000);
        self.slave + elapsed * self.geom.rate as u64 / 1_000_000_000 + self.pointer_step()
    }

    /// How far the reported hardware position may lag the truth: the gcd of the position changes
    /// seen, once four have been seen (one long gap between syncs is not a step size), at most a
    /// period; a quarter period until then.
    fn pointer_step(&self) -> u64 {
        let ps = self.geom.period_size;
        if self.granule_samples < 4 {
            ps / 4
        } else {
            self.granule.min(ps)
        }
    }

    /// Where frame 0 goes if the stream starts when the hardware is at `hw`: one slave period
    /// ahead (two without HWSYNC, when the status page may lag by a period), aligned as
    /// configured.
    fn start_position(&self, hw: u64) -> u64 {
        let ps = self.geom.period_size;
        let ahead = hw + if self.slowptr { ps } else { 2 * ps };
        match self.alignment {
            Alignment::No => ahead,
            Alignment::Roundup | Alignment::Rounddown => ahead.div_ceil(ps) * ps,
        }
    }

    pub fn start(&mut self) -> Result<()> {
        self.sync_slave()?;
        self.base = self.start_position(self.estimate_slave_now());
        self.run = Run::Running;
        self.anchor = Some(0);
        self.floor = 0;
        // Frames the application wrote before start go out now; mix_pending looks again after
        // writing and expires anything a preemption let the hardware overtake.
        self.mix_pending();
        self.arm_timer();
        Ok(())
    }

    /// Drop (alsa-lib's stop callback): take the frames the hardware has not reached back out
    /// of the mix, so the stream falls silent at once, as a hardware PCM does.
    pub fn stop(&mut self) {
        if self.run == Run::Running {
            let _ = self.sync_slave();
            self.retract();
        }
        self.run = Run::Stopped;
        self.anchor = None;
        self.xrun = None;
    }

    /// Pause: take the unplayed frames back out of the mix and keep them; the position runs on
    /// until the first of them, then stands still.
    pub fn pause(&mut self) -> Result<()> {
        if self.run == Run::Running {
            self.sync_slave()?;
            self.floor = self.played();
            self.cut = self.retract();
            self.run = Run::Paused;
            self.anchor = None;
        }
        Ok(())
    }

    /// Resume after pause: the first frame taken out goes one slave period ahead of the
    /// hardware (or straight after the tail, if that is still playing), and everything pending
    /// is mixed again.
    pub fn unpause(&mut self) -> Result<()> {
        if self.run != Run::Paused {
            return Ok(());
        }
        self.sync_slave()?;
        self.floor = self.played();
        let at = self.start_position(self.estimate_slave_now());
        if self.base + self.cut < at {
            self.base = at - self.cut;
        }
        self.run = Run::Running;
        self.anchor = Some(self.cut);
        self.mix_pending();
        self.arm_timer();
        Ok(())
    }

    /// Take frames `mixed_since..mixed` back out of the mix — all of them the hardware cannot
    /// reach before the subtraction is done — and return the first client frame taken out
    /// (frames before it stay mixed and play). `mixed` becomes that frame.
    fn retract_from(&mut self, mixed_since: u64) -> u64 {
        // A margin as for a start: the hardware must not reach a frame while it is taken out.
        let reach = self.estimate_slave_now() + START_MARGIN;
        let cut = reach
            .saturating_sub(self.base)
            .max(mixed_since)
            .min(self.mixed);
        if cut < self.mixed {
            let late = self.apply(cut, self.mixed, -1);
            self.count_late(late);
        }
        self.mixed = cut;
        self.publish_progress();
        cut
    }

    /// Take every frame the hardware has not reached back out of the mix.
    fn retract(&mut self) -> u64 {
        self.retract_from(0)
    }

    /// alsa-lib moves `appl_ptr` for rewind and forward without telling the plugin: compare it
    /// with the frames written and follow. A rewind takes the rewound frames back out of the
    /// mix (those the hardware is about to play stay, and the rewritten data for them is
    /// skipped); a forward writes silence.
    pub fn follow_appl(&mut self, appl: u64) {
        let b = self.p.boundary;
        if b == 0 || self.ring.is_empty() {
            return;
        }
        let ours = self.written % b;
        if appl == ours {
            return;
        }
        let ahead = (appl + b - ours) % b;
        if ahead <= self.p.buffer_size {
            // alsa-lib's ioplug does not clamp snd_pcm_forward to the room in the buffer (the
            // kernel does, for a hardware PCM): an application that skips further has lost
            // track of the stream, and its buffer would overrun. Treat it as the xrun it is.
            if self.run == Run::Running && self.written + ahead > self.played() + self.p.buffer_size
            {
                self.retract();
                self.run = Run::Stopped;
                self.xrun = Some("the application forwarded past the end of its buffer");
                self.written += ahead;
                return;
            }
            self.forward(ahead);
        } else {
            let back = (b - ahead).min(self.written);
            self.rewind(back);
        }
    }

    fn rewind(&mut self, k: u64) {
        let to = self.written - k;
        if self.run == Run::Running && self.mixed > to {
            let _ = self.sync_slave();
            self.retract_from(to);
        } else {
            self.mixed = self.mixed.min(to.max(self.cut_floor()));
        }
        self.written = to;
    }

    /// While paused, frames before the cut were played: they cannot be rewound out.
    fn cut_floor(&self) -> u64 {
        if self.run == Run::Paused {
            self.cut
        } else {
            0
        }
    }

    fn forward(&mut self, k: u64) {
        let fb = self.p.channels * self.p.sample_bytes;
        let bc = self.p.buffer_size;
        let silence = self.silence_byte();
        for i in 0..k.min(bc) {
            let idx = ((self.written + i) % bc) as usize;
            self.ring[idx * fb..(idx + 1) * fb].fill(silence);
        }
        self.written += k;
        if self.run == Run::Running {
            self.mix_pending();
        }
    }

    /// A byte that fills a silent sample in the client's format (all supported formats are
    /// silent at all-zero bytes except U8, whose zero is 0x80).
    fn silence_byte(&self) -> u8 {
        match (self.p.format, self.format) {
            (Some(ClientFormat::Native), SlaveFormat::U8) => 0x80,
            _ => 0,
        }
    }

    /// Frames the hardware has consumed of this stream: monotone while running, standing at
    /// the cut while paused.
    fn played(&self) -> u64 {
        match self.run {
            Run::Stopped => 0,
            Run::Running => self.slave.saturating_sub(self.base).max(self.floor),
            Run::Paused => self
                .slave
                .saturating_sub(self.base)
                .max(self.floor)
                .min(self.cut.max(self.floor)),
        }
    }

    /// Client channels that are played (bound to a slave channel): the samples per frame that
    /// a late frame costs.
    fn played_channels(&self) -> u64 {
        self.bindings.iter().flatten().count() as u64
    }

    /// This client's view of the shared mix: the DMA buffer and the sum ring.
    fn target(&self) -> Target<'_> {
        Target {
            dma: self.dma.as_ptr(),
            dma_len: self.dma.len(),
            sum: self.shared.sum_ring(),
            channels: &self.layout,
            buffer_size: self.geom.buffer_size,
            format: self.format,
        }
    }

    /// Accumulate pending frames whose slave slots are open.
    fn mix_pending(&mut self) {
        if self.run != Run::Running || self.ring.is_empty() {
            return;
        }
        let now = self.slave;
        // The slot of slave frame `now + buffer_size - 1` last held frame `now - 1`, which the
        // hardware has played and the kernel silenced before publishing `now` (free-running
        // silence runs before hw_ptr moves). Nothing later is free yet.
        let limit = now + self.geom.buffer_size;
        let mut late = 0u64;
        if let Some(a) = self.anchor {
            if self.mixed == a && self.written > a {
                // Nothing since the (re)start is in the ring yet, so it may still move: if a
                // stall (preemption between reading the position and now) ate the headroom,
                // start later rather than write frames the hardware is already playing.
                let est = self.estimate_slave_now();
                if self.base + a < est + START_MARGIN {
                    self.base = self.start_position(est) - a;
                }
                self.anchor = None;
            }
        }
        if self.written > self.mixed + self.p.buffer_size {
            // The ring holds only the last buffer of frames: older ones cannot be mixed (alsa-lib
            // keeps an application within its buffer; this guards the mix if it does not).
            let skip = self.written - self.p.buffer_size - self.mixed;
            self.mixed += skip;
            late += skip * self.played_channels();
        }
        let p = self.base + self.mixed;
        if p < now && self.mixed < self.written {
            // Too late for these: the hardware has played their slots. Dropping them is the
            // only way not to play them a buffer late.
            let skip = (now - self.base).min(self.written) - self.mixed;
            self.mixed += skip;
            late += skip * self.played_channels();
        }
        let end = self
            .written
            .min(limit.saturating_sub(self.base))
            .max(self.mixed);
        if end > self.mixed {
            late += self.apply(self.mixed, end, 1);
            self.mixed = end;
        }
        self.count_late(late);
        self.publish_progress();
    }

    /// Mix (`sign` 1) or take back out (`sign` -1) client frames `from..to`, which the ring
    /// holds, at their slave positions. Returns the samples that were late.
    ///
    /// If the process was preempted during the write, the hardware may have overtaken it — and
    /// a late add or subtraction re-publishes every client's sum into a slot the kernel has
    /// silenced, which would play it one buffer late. When the clock says the hardware could
    /// have come within a period of the first frame written, look again (HWSYNC) and expire
    /// whatever it passed. Otherwise (the usual case: written well ahead, quickly) no syscall.
    fn apply(&mut self, from: u64, to: u64, sign: i64) -> u64 {
        let bc = self.p.buffer_size;
        let fb = self.p.channels * self.p.sample_bytes;
        let mut late = 0u64;
        let mut f = from;
        while f < to {
            let idx = f % bc;
            let n = (to - f).min(bc - idx);
            let target = self.target();
            let src = Source {
                data: &self.ring[idx as usize * fb..(idx + n) as usize * fb],
                frames: n as usize,
                frame_bytes: fb,
                sample_bytes: self.p.sample_bytes,
                bindings: &self.bindings,
                format: self.p.format.unwrap_or(ClientFormat::Native),
            };
            // SAFETY: the DMA mapping and channel layout were checked against the geometry at
            // attach; the sum ring's size is checked by SharedState::attach.
            let st = unsafe { target.mix_stats(self.base + f, &src, sign) };
            late += st.late as u64;
            if sign > 0 {
                if let Some(s) = self.shared.slot(self.slot) {
                    s.peak.fetch_max(st.peak, Ordering::Relaxed);
                    if st.clips > 0 {
                        s.clips.fetch_add(st.clips, Ordering::Relaxed);
                    }
                }
            }
            f += n;
        }
        let (first, last) = (self.base + from, self.base + to);
        if first < last
            && self.estimate_slave_now() + self.geom.period_size >= first
            && self.sync_slave().is_ok()
        {
            let passed = self.slave.min(last);
            if passed > first {
                let target = self.target();
                // SAFETY: as for mix above.
                unsafe { target.expire(first, (passed - first) as usize, &self.bindings) };
                late += (passed - first) * self.played_channels();
            }
        }
        late
    }

    fn count_late(&self, late: u64) {
        if late > 0 {
            if let Some(s) = self.shared.slot(self.slot) {
                s.late
                    .fetch_add(late.min(u32::MAX as u64) as u32, Ordering::Relaxed);
            }
        }
    }

    fn publish_progress(&self) {
        if let Some(s) = self.shared.slot(self.slot) {
            s.start_pos.store(self.base, Ordering::Relaxed);
            s.mixed_to.store(self.base + self.mixed, Ordering::Relaxed);
            s.frames_mixed.store(self.mixed, Ordering::Relaxed);
        }
    }

    /// Accept `size` frames from the application's areas at `offset`.
    ///
    /// # Safety
    /// `areas` must point at `channels` valid channel areas covering `offset..offset+size`
    /// frames, as alsa-lib passes to the transfer callback.
    pub unsafe fn transfer(
        &mut self,
        areas: *const crate::ffi::snd_pcm_channel_area_t,
        offset: u64,
        size: u64,
    ) -> Result<u64> {
        let nch = self.p.channels;
        let sb = self.p.sample_bytes;
        let bc = self.p.buffer_size;
        if self.ring.is_empty() || nch == 0 {
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                libc::EBADFD,
                "transfer before hw_params",
            ));
        }
        let ring = self.ring.as_mut_ptr();
        let frame_bytes = nch * sb;
        let mut done = 0u64;
        while done < size {
            let idx = (self.written + done) % bc;
            let n = (size - done).min(bc - idx);
            // SAFETY: per the caller's contract the areas are valid for these frames; the ring
            // has room for `bc` frames and `idx + n <= bc`.
            unsafe {
                let a0 = &*areas;
                let interleaved = (0..nch).all(|c| {
                    let a = &*areas.add(c);
                    a.addr == a0.addr
                        && a.step as usize == frame_bytes * 8
                        && a.first as usize == c * sb * 8
                });
                if interleaved && a0.first % 8 == 0 {
                    let src = (a0.addr as *const u8)
                        .add(a0.first as usize / 8 + (offset + done) as usize * frame_bytes);
                    std::ptr::copy_nonoverlapping(
                        src,
                        ring.add(idx as usize * frame_bytes),
                        n as usize * frame_bytes,
                    );
                } else {
                    for c in 0..nch {
                        let a = &*areas.add(c);
                        for f in 0..n as usize {
                            let bit = a.first as usize
                                + (offset as usize + done as usize + f) * a.step as usize;
                            let src = (a.addr as *const u8).add(bit / 8);
                            let dst = ring.add((idx as usize + f) * frame_bytes + c * sb);
                            std::ptr::copy_nonoverlapping(src, dst, sb);
                        }
                    }
                }
            }
            done += n;
        }
        self.apply_volume(size);
        self.written += size;
        if self.run == Run::Running {
            self.sync_slave()?;
            self.mix_pending();
        }
        self.arm_timer();
        Ok(size)
    }

    /// Scale the `size` frames just copied into the ring (from `written`) by the slot's volume
    /// (`rdmix volume`), or silence them if it is muted. One load and a compare at unity.
    fn apply_volume(&mut self, size: u64) {
        let Some(s) = self.shared.slot(self.slot) else {
            return;
        };
        let gain = if s.muted.load(Ordering::Relaxed) != 0 {
            0
        } else {
            s.volume.load(Ordering::Relaxed).min(crate::shm::VOLUME_MAX)
        };
        if gain == crate::shm::VOLUME_UNITY {
            return;
        }
        let bc = self.p.buffer_size;
        let fb = self.p.channels * self.p.sample_bytes;
        let cf = self.p.format.unwrap_or(ClientFormat::Native);
        // The ring keeps the last `bc` frames of a longer write.
        let (first, len) = (self.written + size.saturating_sub(bc), size.min(bc));
        let mut done = 0;
        while done < len {
            let idx = (first + done) % bc;
            let n = (len - done).min(bc - idx);
            let chunk = &mut self.ring[idx as usize * fb..(idx + n) as usize * fb];
            crate::mix::scale_in_place(chunk, self.format, cf, gain);
            done += n;
        }
    }

    /// The position to report to alsa-lib, or an xrun.
    pub fn pointer(&mut self, draining: bool) -> Result<u64> {
        if let Some(why) = self.xrun {
            return Err(Error::new(crate::error::ErrorKind::Xrun, libc::EPIPE, why));
        }
        match self.run {
            Run::Stopped => return Ok(0),
            Run::Paused => {
                self.sync_slave()?;
                return Ok(self.played() % self.p.boundary);
            }
            Run::Running => {}
        }
        self.sync_slave()?;
        self.mix_pending();
        let played = self.played();
        if let Some(s) = self.shared.slot(self.slot) {
            s.played.store(played, Ordering::Relaxed);
            s.delay
                .store(self.written.saturating_sub(played), Ordering::Relaxed);
        }
        if draining {
            return Ok(played.min(self.written) % self.p.boundary);
        }
        if self.p.stop_threshold < self.p.boundary {
            let avail = self.p.buffer_size as i128 + played as i128 - self.written as i128;
            if avail >= self.p.stop_threshold as i128 {
                if let Some(s) = self.shared.slot(self.slot) {
                    s.xruns.fetch_add(1, Ordering::Relaxed);
                }
                // As a hardware PCM stops at an xrun: whatever is still mixed ahead (only with
                // a stop_threshold below the buffer size) must not play.
                self.retract();
                self.run = Run::Stopped;
                self.xrun = Some("underrun");
                return Err(Error::new(
                    crate::error::ErrorKind::Xrun,
                    libc::EPIPE,
                    "underrun",
                ));
            }
        }
        Ok(played % self.p.boundary)
    }

    /// Drain expirations of the wakeup timer.
    pub fn ack_timer(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.timer, &mut buf);
    }

    /// Frames until the application's wait condition holds (0 = now), given alsa-lib's state.
    fn frames_until_ready(&self, draining: bool) -> Option<u64> {
        if self.run == Run::Stopped && !draining {
            // Prepared, not started (or stopped by an xrun, which the application must learn
            // of): alsa-lib's avail is the room left, and a hardware PCM's poll says POLLOUT
            // while that reaches avail_min. A client that polls before its start threshold is
            // reached (cpal does) would otherwise wait forever on a disarmed timer.
            return (self.p.buffer_size.saturating_sub(self.written) >= self.p.avail_min)
                .then_some(0);
        }
        if self.run != Run::Running {
            return None;
        }
        let target_played = if draining {
            self.written
        } else {
            (self.written + self.p.avail_min).saturating_sub(self.p.buffer_size)
        };
        let target = self.base + target_played;
        let mut wait = target.saturating_sub(self.slave);
        // Pending frames (only ever the tail of what was written before start) must be mixed
        // before the hardware reaches them: wake by the time half a slave buffer is left before
        // the first of them is due, unless the application's own wakeup comes first.
        if self.mixed < self.written {
            let due = (self.base + self.mixed).saturating_sub(self.geom.buffer_size / 2);
            wait = wait.min(due.saturating_sub(self.slave));
        }
        Some(wait)
    }

    /// Arm the wakeup timer, one-shot: at once if the application's wait condition already
    /// holds (the poll fd then stays readable while it holds, as a hardware PCM's POLLOUT does),
    /// else for the moment it will hold plus one pointer step, so that the wakeup finds it met.
    /// A stream that is not running and not ready has nothing to wait for: disarmed. Every
    /// path that can change the condition re-arms (transfer, start, poll_descriptors,
    /// poll_revents), so no periodic fallback is needed — it would only wake early.
    pub fn arm_timer_for(&self, draining: bool, ready_now: bool) {
        let rate = self.p.rate.max(1) as u64;
        let ns = if ready_now {
            1
        } else {
            match self.frames_until_ready(draining) {
                Some(0) => 1,
                Some(f) => (f + self.pointer_step()) * 1_000_000_000 / rate + 200_000,
                None => 0,
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: our own timerfd and a fully initialised itimerspec.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    fn arm_timer(&self) {
        self.arm_timer_for(false, false);
    }

    pub fn debug_positions(&self) -> String {
        format!(
            "slave={} base={} written={} mixed={} played={}",
            self.slave,
            self.base,
            self.written,
            self.mixed,
            self.played()
        )
    }

    /// Whether alsa-lib's `avail` satisfies the application's wakeup threshold; counts the
    /// wakeup (and an early one) in the client's slot.
    pub fn ready(&self, avail: u64) -> bool {
        let ok = avail >= self.p.avail_min;
        if let Some(s) = self.shared.slot(self.slot) {
            s.wakeups.fetch_add(1, Ordering::Relaxed);
            if !ok {
                s.early_wakeups.fetch_add(1, Ordering::Relaxed);
            }
        }
        ok
    }

    /// One line of this client's counters (printed at close with `RDMIX_STATS=1`).
    pub fn stats_line(&self) -> String {
        self.shared.slot(self.slot).map_or(String::new(), |s| {
            format!(
                "frames_mixed={} late_samples={} xruns={} wakeups={} early_wakeups={}",
                s.frames_mixed.load(Ordering::Relaxed),
                s.late.load(Ordering::Relaxed),
                s.xruns.load(Ordering::Relaxed),
                s.wakeups.load(Ordering::Relaxed),
                s.early_wakeups.load(Ordering::Relaxed)
            )
        })
    }

    /// Frames written but not yet played.
    pub fn delay(&self) -> i64 {
        self.written as i64 - self.played().min(self.written) as i64
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.release_slot(self.slot, self.pid);
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
