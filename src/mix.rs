//! Mix kernels: accumulate one client's samples into the shared sum ring and publish the
//! saturated sum into the DMA buffer.
//!
//! # The accumulation protocol
//!
//! Every slave sample has one `AtomicU64` accumulator in the shared sum ring, packing
//! `lap` (24 bits, high) and `sum` (40-bit two's complement, low). `lap` is the slave position
//! divided by the buffer size, modulo 2^24: it names which pass of the ring the sum belongs to.
//! A writer for a sample at lap `L`:
//!
//! 1. CAS loop on the accumulator: if its lap is `L`, add the sample to the sum; if its lap is
//!    older than `L`, replace it with `(L, sample)` (the slot was last used one or more passes ago
//!    and the kernel has silenced it since); if its lap is newer, the writer is late: it writes
//!    nothing and reports the sample as late.
//! 2. Publish: store `saturate(sum)` into the DMA sample, then re-read the accumulator
//!    (sequentially consistent); if it changed meanwhile (another writer added, or a newer lap
//!    took the slot), store what it holds now. The last writer to change an accumulator
//!    re-reads after its own store, so once all writers are done the DMA holds the saturated
//!    exact sum of the newest lap.
//!
//! Step 1 is a single atomic instruction per sample: a writer killed at any point leaves either
//! its whole sample or none of it in the sum, never a half state, and holds no lock. (dmix's
//! lock-free variant — "cmpxchg dst 0→1, then subtract the stale sum, then add" — can drop a
//! concurrent writer's sample between its steps; the lap tag removes that window, and the
//! un-clamped 40-bit sum releases saturation exactly, as dmix's 32-bit sum does.)
//!
//! The kernel's part: the hardware runs with `silence_size = boundary`, so the kernel zeroes each
//! DMA area right after it is played. A sample nobody writes for lap `L` therefore plays as
//! silence, and the accumulator's stale lap tells the first writer of the new pass to restart
//! the sum rather than add to last pass's value.
//!
//! # Formats and rounding
//!
//! Sums are kept in the slave format's own integer units and saturated to its range:
//!
//! | slave format | range | stored as |
//! | --- | --- | --- |
//! | S16_LE/BE | −2^15 … 2^15−1 | 16-bit word |
//! | S32_LE/BE | −2^31 … 2^31−1 | 32-bit word, **full 32-bit precision** (dmix keeps 24 bits) |
//! | S24_LE | −2^23 … 2^23−1 | low 3 bytes of a 32-bit word; the top byte is written 0 |
//! | S24_3LE | −2^23 … 2^23−1 | 3 bytes |
//! | U8 | −128 … 127 | byte, offset by 0x80 |
//!
//! A client in the slave's format is summed as is. A FLOAT_LE client sample `x` becomes
//! `clamp(round_half_even(x · 2^(bits−1)), min, max)` in the slave's units (`bits` = 16, 32, 24,
//! 24, 8); NaN becomes 0. So ±1.0 maps to full scale, +1.0 clips to max, and the float is clipped
//! per client before it is summed (one loud float client cannot push another's sum past its own
//! clip).
//!
//! The real-time contract: these functions allocate nothing, take no lock and make no syscall.

use std::sync::atomic::{AtomicI16, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::hw;

const SUM_BITS: u32 = 40;
const SUM_MASK: u64 = (1 << SUM_BITS) - 1;
const LAP_BITS: u32 = 24;
const LAP_MASK: u64 = (1 << LAP_BITS) - 1;

/// How many laps the lap tag distinguishes: the kernel boundary must be a multiple of
/// `buffer_size * LAPS` so that lap numbers agree across the boundary wrap.
pub const LAPS: u64 = 1 << LAP_BITS;

/// The lap number of slave position `pos` (in the kernel's boundary space).
#[inline]
pub fn lap_of(pos: u64, buffer_size: u64) -> u32 {
    ((pos / buffer_size) & LAP_MASK) as u32
}

#[inline]
fn pack(lap: u32, sum: i64) -> u64 {
    ((lap as u64) << SUM_BITS) | (sum as u64 & SUM_MASK)
}

#[inline]
fn unpack(v: u64) -> (u32, i64) {
    let lap = (v >> SUM_BITS) as u32;
    // Sign-extend the 40-bit sum.
    let sum = ((v << (64 - SUM_BITS)) as i64) >> (64 - SUM_BITS);
    (lap, sum)
}

/// Is `a` newer than `b` in modular lap arithmetic (within half the lap space)?
#[inline]
fn lap_newer(a: u32, b: u32) -> bool {
    let d = (a.wrapping_sub(b)) & LAP_MASK as u32;
    d != 0 && d < (1 << (LAP_BITS - 1))
}

/// Add `sample` to accumulator `acc` for lap `lap`. Returns the new sum, or `None` if the
/// accumulator already belongs to a newer lap (the writer is late).
///
/// A negative `sign` retracts a sample mixed before: only from an accumulator still holding
/// lap `lap` (an older or newer lap means the sample is not there: `None`, nothing changes).
#[inline]
pub fn accumulate(acc: &AtomicU64, lap: u32, sample: i64, sign: i64) -> Option<i64> {
    let mut cur = acc.load(Ordering::Acquire);
    loop {
        let (l, s) = unpack(cur);
        let new_sum = if l == lap {
            s + sample * sign
        } else if lap_newer(l, lap) || sign < 0 {
            return None;
        } else {
            sample
        };
        match acc.compare_exchange_weak(cur, pack(lap, new_sum), Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return Some(new_sum),
            Err(v) => cur = v,
        }
    }
}

/// How far behind the current lap a stale accumulator is re-tagged by [`refresh_stale`].
const STALE_LAPS: u32 = 4;

/// Re-tag stale accumulators (server housekeeping, off the real-time path): an accumulator
/// nobody has written for a long time keeps its old lap, and after 2^23 laps modular
/// comparison would take that lap for a newer one (a writer would then be refused as late).
/// Every accumulator more than [`STALE_LAPS`] laps older than the lap its slot plays next
/// (given the hardware position `hw`) is set, with a CAS, to that many laps back and sum 0 —
/// still older than anything a writer writes, so the next writer restarts it as before. Live
/// accumulators and ones a writer changes meanwhile are left alone; the DMA buffer is not
/// touched (a stale slot's samples were silenced by the kernel when it played them). Returns
/// how many were re-tagged.
pub fn refresh_stale(sum: &[AtomicU64], channels: usize, buffer_size: u64, hw: u64) -> usize {
    let mut n = 0;
    if channels == 0 || buffer_size == 0 {
        return 0;
    }
    let start = hw - hw % buffer_size;
    for (i, acc) in sum.iter().enumerate().take(buffer_size as usize * channels) {
        let slot = (i / channels) as u64;
        // The position this slot plays next: in [hw, hw + buffer_size).
        let pos = if start + slot >= hw {
            start + slot
        } else {
            start + buffer_size + slot
        };
        let cur = lap_of(pos, buffer_size);
        let floor = cur.wrapping_sub(STALE_LAPS) & LAP_MASK as u32;
        let v = acc.load(Ordering::Acquire);
        let (l, _) = unpack(v);
        if l != floor
            && lap_newer(floor, l)
            && acc
                .compare_exchange(v, pack(floor, 0), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            n += 1;
        }
    }
    n
}

/// The current sum of an accumulator for `lap`, or `None` if it holds another lap.
#[inline]
pub fn current_sum(acc: &AtomicU64, lap: u32) -> Option<i64> {
    let (l, s) = unpack(acc.load(Ordering::Acquire));
    (l == lap).then_some(s)
}

/// A slave sample format rdmix can mix into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlaveFormat {
    S16Le,
    S16Be,
    S32Le,
    S32Be,
    /// 24 bits in the low three bytes of a little-endian 32-bit word.
    S24Le,
    /// 24 bits in three bytes, little-endian.
    S24_3Le,
    U8,
}

impl SlaveFormat {
    pub const ALL: [SlaveFormat; 7] = [
        SlaveFormat::S16Le,
        SlaveFormat::S16Be,
        SlaveFormat::S32Le,
        SlaveFormat::S32Be,
        SlaveFormat::S24Le,
        SlaveFormat::S24_3Le,
        SlaveFormat::U8,
    ];

    pub fn from_alsa(f: i32) -> Option<SlaveFormat> {
        Some(match f {
            hw::SNDRV_PCM_FORMAT_S16_LE => SlaveFormat::S16Le,
            hw::SNDRV_PCM_FORMAT_S16_BE => SlaveFormat::S16Be,
            hw::SNDRV_PCM_FORMAT_S32_LE => SlaveFormat::S32Le,
            hw::SNDRV_PCM_FORMAT_S32_BE => SlaveFormat::S32Be,
            hw::SNDRV_PCM_FORMAT_S24_LE => SlaveFormat::S24Le,
            hw::SNDRV_PCM_FORMAT_S24_3LE => SlaveFormat::S24_3Le,
            hw::SNDRV_PCM_FORMAT_U8 => SlaveFormat::U8,
            _ => return None,
        })
    }

    pub fn alsa(self) -> i32 {
        match self {
            SlaveFormat::S16Le => hw::SNDRV_PCM_FORMAT_S16_LE,
            SlaveFormat::S16Be => hw::SNDRV_PCM_FORMAT_S16_BE,
            SlaveFormat::S32Le => hw::SNDRV_PCM_FORMAT_S32_LE,
            SlaveFormat::S32Be => hw::SNDRV_PCM_FORMAT_S32_BE,
            SlaveFormat::S24Le => hw::SNDRV_PCM_FORMAT_S24_LE,
            SlaveFormat::S24_3Le => hw::SNDRV_PCM_FORMAT_S24_3LE,
            SlaveFormat::U8 => hw::SNDRV_PCM_FORMAT_U8,
        }
    }

    /// The format's alsa-lib name.
    pub fn name(self) -> &'static str {
        match self {
            SlaveFormat::S16Le => "S16_LE",
            SlaveFormat::S16Be => "S16_BE",
            SlaveFormat::S32Le => "S32_LE",
            SlaveFormat::S32Be => "S32_BE",
            SlaveFormat::S24Le => "S24_LE",
            SlaveFormat::S24_3Le => "S24_3LE",
            SlaveFormat::U8 => "U8",
        }
    }

    /// Bytes per sample in memory.
    pub fn bytes(self) -> usize {
        match self {
            SlaveFormat::S16Le | SlaveFormat::S16Be => 2,
            SlaveFormat::S32Le | SlaveFormat::S32Be | SlaveFormat::S24Le => 4,
            SlaveFormat::S24_3Le => 3,
            SlaveFormat::U8 => 1,
        }
    }

    /// Significant bits (the full-scale exponent for float conversion is `bits - 1`).
    pub fn bits(self) -> u32 {
        match self {
            SlaveFormat::S16Le | SlaveFormat::S16Be => 16,
            SlaveFormat::S32Le | SlaveFormat::S32Be => 32,
            SlaveFormat::S24Le | SlaveFormat::S24_3Le => 24,
            SlaveFormat::U8 => 8,
        }
    }

    /// Saturation range, in the format's signed units.
    pub fn range(self) -> (i64, i64) {
        let b = self.bits();
        (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1)
    }

    /// Decode one stored sample into signed units (tests and introspection).
    pub fn decode(self, b: &[u8]) -> i64 {
        match self {
            SlaveFormat::S16Le => i16::from_le_bytes([b[0], b[1]]) as i64,
            SlaveFormat::S16Be => i16::from_be_bytes([b[0], b[1]]) as i64,
            SlaveFormat::S32Le => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            SlaveFormat::S32Be => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
            SlaveFormat::S24Le | SlaveFormat::S24_3Le => {
                (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as i64
            }
            SlaveFormat::U8 => b[0] as i64 - 0x80,
        }
    }

    /// Encode a sample in signed units (already in range) into bytes (tests, signal files).
    pub fn encode(self, v: i64, out: &mut [u8]) {
        match self {
            SlaveFormat::S16Le => out[..2].copy_from_slice(&(v as i16).to_le_bytes()),
            SlaveFormat::S16Be => out[..2].copy_from_slice(&(v as i16).to_be_bytes()),
            SlaveFormat::S32Le => out[..4].copy_from_slice(&(v as i32).to_le_bytes()),
            SlaveFormat::S32Be => out[..4].copy_from_slice(&(v as i32).to_be_bytes()),
            SlaveFormat::S24Le => out[..4].copy_from_slice(&((v as u32) & 0xff_ffff).to_le_bytes()),
            SlaveFormat::S24_3Le => out[..3].copy_from_slice(&(v as i32).to_le_bytes()[..3]),
            SlaveFormat::U8 => out[0] = (v + 0x80) as u8,
        }
    }

    /// Convert a float sample to this format's units: scale by 2^(bits-1), round half to even,
    /// clip to the range; NaN is 0.
    #[inline]
    pub fn from_float(self, x: f32) -> i64 {
        if x.is_nan() {
            return 0;
        }
        let (lo, hi) = self.range();
        let v = (x as f64 * (1u64 << (self.bits() - 1)) as f64).round_ties_even();
        v.clamp(lo as f64, hi as f64) as i64
    }
}

/// The sample format a client hands over: the slave's own, or FLOAT_LE (converted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFormat {
    Native,
    FloatLe,
}

impl ClientFormat {
    pub fn bytes(self, slave: SlaveFormat) -> usize {
        match self {
            ClientFormat::Native => slave.bytes(),
            ClientFormat::FloatLe => 4,
        }
    }
}

/// Where one slave channel's samples live in the DMA mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    /// Byte offset of the channel's sample in frame 0.
    pub first: usize,
    /// Bytes between consecutive frames.
    pub step: usize,
}

/// One client's view of the mix target: the DMA buffer and the sum ring.
#[derive(Debug)]
pub struct Target<'a> {
    pub dma: *mut u8,
    pub dma_len: usize,
    pub sum: &'a [AtomicU64],
    /// One entry per slave channel.
    pub channels: &'a [ChannelLayout],
    pub buffer_size: u64,
    pub format: SlaveFormat,
}

/// How a slave format is published: saturate and store atomically.
trait Store {
    const RANGE: (i64, i64);
    /// # Safety
    /// `dst` points at a live, suitably aligned sample of this format.
    unsafe fn store(dst: *mut u8, v: i64);
}

macro_rules! word_store {
    ($name:ident, $atomic:ty, $int:ty, $conv:ident) => {
        struct $name;
        impl Store for $name {
            const RANGE: (i64, i64) = (<$int>::MIN as i64, <$int>::MAX as i64);
            #[inline]
            unsafe fn store(dst: *mut u8, v: i64) {
                let v = v.clamp(Self::RANGE.0, Self::RANGE.1) as $int;
                // SAFETY: the caller guarantees a live, aligned sample; shared memory is only
                // touched atomically.
                unsafe { <$atomic>::from_ptr(dst as *mut _) }
                    .store(<$int>::$conv(v), Ordering::SeqCst);
            }
        }
    };
}

word_store!(S16Le, AtomicI16, i16, to_le);
word_store!(S16Be, AtomicI16, i16, to_be);
word_store!(S32Le, AtomicI32, i32, to_le);
word_store!(S32Be, AtomicI32, i32, to_be);

struct S24Le;
impl Store for S24Le {
    const RANGE: (i64, i64) = (-(1 << 23), (1 << 23) - 1);
    #[inline]
    unsafe fn store(dst: *mut u8, v: i64) {
        let v = (v.clamp(Self::RANGE.0, Self::RANGE.1) as u32) & 0xff_ffff;
        // SAFETY: as in word_store; a 4-byte aligned S24_LE container.
        unsafe { AtomicU32::from_ptr(dst as *mut u32) }.store(v.to_le(), Ordering::SeqCst);
    }
}

struct S24_3Le;
impl Store for S24_3Le {
    const RANGE: (i64, i64) = (-(1 << 23), (1 << 23) - 1);
    #[inline]
    unsafe fn store(dst: *mut u8, v: i64) {
        let b = (v.clamp(Self::RANGE.0, Self::RANGE.1) as i32).to_le_bytes();
        // SAFETY: three live bytes. They are stored one by one; the publish loop re-reads the
        // sum after the last byte, so a torn value left by a concurrent writer is rewritten.
        unsafe {
            for (i, byte) in b.iter().take(3).enumerate() {
                AtomicU8::from_ptr(dst.add(i)).store(*byte, Ordering::SeqCst);
            }
        }
    }
}

struct U8;
impl Store for U8 {
    const RANGE: (i64, i64) = (-128, 127);
    #[inline]
    unsafe fn store(dst: *mut u8, v: i64) {
        let v = (v.clamp(Self::RANGE.0, Self::RANGE.1) + 0x80) as u8;
        // SAFETY: one live byte.
        unsafe { AtomicU8::from_ptr(dst) }.store(v, Ordering::SeqCst);
    }
}

/// Reading one client sample, in the slave's units.
trait Load {
    /// # Safety
    /// `src` points at a readable client sample of this format.
    unsafe fn load(src: *const u8) -> i64;
}

struct Native<S>(std::marker::PhantomData<S>);
struct Float<S>(std::marker::PhantomData<S>);

macro_rules! native_load {
    ($store:ty, |$p:ident| $e:expr) => {
        impl Load for Native<$store> {
            #[inline]
            unsafe fn load($p: *const u8) -> i64 {
                // SAFETY: the caller guarantees a readable sample; the client ring may be
                // unaligned for 3-byte formats, so every read is unaligned-safe.
                unsafe { $e }
            }
        }
    };
}

native_load!(S16Le, |p| i16::from_le((p as *const i16).read_unaligned())
    as i64);
native_load!(S16Be, |p| i16::from_be((p as *const i16).read_unaligned())
    as i64);
native_load!(S32Le, |p| i32::from_le((p as *const i32).read_unaligned())
    as i64);
native_load!(S32Be, |p| i32::from_be((p as *const i32).read_unaligned())
    as i64);
native_load!(
    S24Le,
    |p| ((i32::from_le((p as *const i32).read_unaligned()) << 8) >> 8) as i64
);
native_load!(S24_3Le, |p| {
    let b = [*p, *p.add(1), *p.add(2)];
    (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as i64
});
native_load!(U8, |p| *p as i64 - 0x80);

macro_rules! float_load {
    ($store:ty, $fmt:expr) => {
        impl Load for Float<$store> {
            #[inline]
            unsafe fn load(p: *const u8) -> i64 {
                // SAFETY: the caller guarantees a readable 4-byte float.
                let x = f32::from_bits(u32::from_le(unsafe { (p as *const u32).read_unaligned() }));
                $fmt.from_float(x)
            }
        }
    };
}

float_load!(S16Le, SlaveFormat::S16Le);
float_load!(S16Be, SlaveFormat::S16Be);
float_load!(S32Le, SlaveFormat::S32Le);
float_load!(S32Be, SlaveFormat::S32Be);
float_load!(S24Le, SlaveFormat::S24Le);
float_load!(S24_3Le, SlaveFormat::S24_3Le);
float_load!(U8, SlaveFormat::U8);

/// Publish the saturated sum of `acc` into `dst`, retrying while other writers change it.
///
/// Two rules make the last store win (both found by `tests/accumulate.rs`):
/// - the store and the re-read are `SeqCst`: with `Release`/`Acquire` the re-read may be
///   satisfied before the store leaves the CPU's store buffer, so a writer that saw "no change"
///   could have its stale store land after another writer's newer one;
/// - a re-read that finds a newer lap publishes that lap's sum: the newest lap owns the slot,
///   and a writer delayed between its CAS and its store must not leave the previous lap's value
///   over the next lap's.
#[inline]
unsafe fn publish<S: Store>(dst: *mut u8, acc: &AtomicU64, lap: u32, sum: i64) {
    let mut cur = (lap, sum);
    loop {
        // SAFETY: forwarded from the caller.
        unsafe { S::store(dst, cur.1) };
        let now = unpack(acc.load(Ordering::SeqCst));
        if now == cur || lap_newer(cur.0, now.0) {
            return;
        }
        cur = now;
    }
}

/// Expire one accumulator of lap `lap` whose frame the hardware has passed: advance it to
/// `lap + 1` with sum 0 and publish that (silence), which is what the kernel's silence fill
/// means for the slot. Used when a write may have landed after the kernel silenced the slot:
/// left alone, it would play one buffer late. A newer lap already there is left alone.
#[inline]
unsafe fn expire<S: Store>(dst: *mut u8, acc: &AtomicU64, lap: u32) {
    let next = (lap + 1) & LAP_MASK as u32;
    let mut cur = acc.load(Ordering::SeqCst);
    loop {
        let (l, _) = unpack(cur);
        if l != lap {
            return;
        }
        match acc.compare_exchange_weak(cur, pack(next, 0), Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break,
            Err(v) => cur = v,
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { publish::<S>(dst, acc, next, 0) };
}

/// What one [`Target::mix_stats`] call saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixStats {
    /// Samples the hardware had passed (not mixed).
    pub late: u32,
    /// The largest |sample| of the source, in 1/65536 of full scale.
    pub peak: u32,
    /// Samples whose sum, right after this write, was out of the slave's range (published
    /// saturated).
    pub clips: u32,
}

/// Apply gain `volume` (Q16.16, [`crate::shm::VOLUME_UNITY`] = 1.0) to client samples in place,
/// rounding to nearest and saturating to the format's range (0 writes silence). The caller
/// skips this at unity, so an untouched client pays nothing. Runs on the private ring, before
/// the frames are mixed: a later retraction subtracts exactly what was added.
pub fn scale_in_place(data: &mut [u8], slave: SlaveFormat, client: ClientFormat, volume: u32) {
    let g = i64::from(volume);
    match client {
        ClientFormat::FloatLe => {
            let k = volume as f32 / crate::shm::VOLUME_UNITY as f32;
            for b in data.chunks_exact_mut(4) {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                b.copy_from_slice(&(x * k).to_le_bytes());
            }
        }
        ClientFormat::Native => {
            let (lo, hi) = slave.range();
            let n = slave.bytes();
            for b in data.chunks_exact_mut(n) {
                let v = slave.decode(b);
                let scaled = ((v * g + (1 << 15)) >> 16).clamp(lo, hi);
                slave.encode(scaled, b);
            }
        }
    }
}

/// A client's frames to mix: `frames` frames of `channels` samples each, `frame_bytes` apart,
/// channel `c` at byte `c * sample_bytes`; `bindings[c]` is the slave channel client channel
/// `c` plays on (`None`: not played).
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub data: &'a [u8],
    pub frames: usize,
    pub frame_bytes: usize,
    pub sample_bytes: usize,
    pub bindings: &'a [Option<u16>],
    pub format: ClientFormat,
}

impl Target<'_> {
    /// Mix `src` at slave positions `pos..pos + src.frames`, adding `sign` (1, or -1 to take
    /// previously mixed frames back out). Returns the number of samples that were late.
    ///
    /// # Safety
    /// `dma` must point at a live mapping of `dma_len` bytes laid out as `channels` says, for
    /// `buffer_size` frames of `format`; `sum` must hold `buffer_size * channels.len()`
    /// accumulators. `src` must satisfy its own description (checked).
    pub unsafe fn mix(&self, pos: u64, src: &Source<'_>, sign: i64) -> u32 {
        // SAFETY: forwarded.
        unsafe { self.mix_stats(pos, src, sign) }.late
    }

    /// [`Target::mix`], also measuring the source's peak and the samples published saturated
    /// (for introspection; the measuring costs a compare or two per sample).
    ///
    /// # Safety
    /// As for [`Target::mix`].
    pub unsafe fn mix_stats(&self, pos: u64, src: &Source<'_>, sign: i64) -> MixStats {
        macro_rules! go {
            ($s:ty) => {
                match src.format {
                    // SAFETY: forwarded.
                    ClientFormat::Native => unsafe {
                        self.mix_with::<Native<$s>, $s>(pos, src, sign)
                    },
                    // SAFETY: forwarded.
                    ClientFormat::FloatLe => unsafe {
                        self.mix_with::<Float<$s>, $s>(pos, src, sign)
                    },
                }
            };
        }
        match self.format {
            SlaveFormat::S16Le => go!(S16Le),
            SlaveFormat::S16Be => go!(S16Be),
            SlaveFormat::S32Le => go!(S32Le),
            SlaveFormat::S32Be => go!(S32Be),
            SlaveFormat::S24Le => go!(S24Le),
            SlaveFormat::S24_3Le => go!(S24_3Le),
            SlaveFormat::U8 => go!(U8),
        }
    }

    /// Expire the slots of frames `pos..pos + frames` on the slave channels in `bindings` (see
    /// [`expire`]): after a write the hardware overtook, so none of it can play a buffer late.
    ///
    /// # Safety
    /// As for [`Target::mix`].
    pub unsafe fn expire(&self, pos: u64, frames: usize, bindings: &[Option<u16>]) {
        macro_rules! go {
            ($s:ty) => {
                // SAFETY: forwarded.
                unsafe { self.expire_with::<$s>(pos, frames, bindings) }
            };
        }
        match self.format {
            SlaveFormat::S16Le => go!(S16Le),
            SlaveFormat::S16Be => go!(S16Be),
            SlaveFormat::S32Le => go!(S32Le),
            SlaveFormat::S32Be => go!(S32Be),
            SlaveFormat::S24Le => go!(S24Le),
            SlaveFormat::S24_3Le => go!(S24_3Le),
            SlaveFormat::U8 => go!(U8),
        }
    }

    unsafe fn expire_with<S: Store>(&self, pos: u64, frames: usize, bindings: &[Option<u16>]) {
        let nch = self.channels.len();
        if self.sum.len() < self.buffer_size as usize * nch {
            return;
        }
        for f in 0..frames {
            let p = pos + f as u64;
            let slot = (p % self.buffer_size) as usize;
            let lap = lap_of(p, self.buffer_size);
            for sc in bindings.iter().flatten() {
                let sc = *sc as usize;
                if sc >= nch {
                    continue;
                }
                let lay = self.channels[sc];
                let off = lay.first + slot * lay.step;
                // SAFETY: as in mix_with.
                unsafe { expire::<S>(self.dma.add(off), &self.sum[slot * nch + sc], lap) };
            }
        }
    }

    #[inline(never)]
    unsafe fn mix_with<L: Load, S: Store>(
        &self,
        pos: u64,
        src: &Source<'_>,
        sign: i64,
    ) -> MixStats {
        let nch = self.channels.len();
        let need = src.frames.saturating_sub(1) * src.frame_bytes
            + src.bindings.len().saturating_sub(1) * src.sample_bytes
            + src.sample_bytes;
        if src.frames == 0
            || src.data.len() < need
            || self.sum.len() < self.buffer_size as usize * nch
        {
            return MixStats::default();
        }
        let base = src.data.as_ptr();
        let mut late = 0;
        let mut peak = 0u64;
        let mut clips = 0u32;
        for f in 0..src.frames {
            let p = pos + f as u64;
            let slot = (p % self.buffer_size) as usize;
            let lap = lap_of(p, self.buffer_size);
            for (c, bind) in src.bindings.iter().enumerate() {
                let Some(sc) = *bind else { continue };
                let sc = sc as usize;
                if sc >= nch {
                    continue;
                }
                let lay = self.channels[sc];
                let off = lay.first + slot * lay.step;
                debug_assert!(off + self.format.bytes() <= self.dma_len);
                // SAFETY: `need` was checked against the source length above.
                let v = unsafe { L::load(base.add(f * src.frame_bytes + c * src.sample_bytes)) };
                let acc = &self.sum[slot * nch + sc];
                peak = peak.max(v.unsigned_abs());
                match accumulate(acc, lap, v, sign) {
                    Some(sum) => {
                        clips += u32::from(sum < S::RANGE.0 || sum > S::RANGE.1);
                        // SAFETY: the caller guarantees the DMA mapping and layout; `off` is a
                        // sample inside it.
                        unsafe { publish::<S>(self.dma.add(off), acc, lap, sum) }
                    }
                    None => late += 1,
                }
            }
        }
        let full = S::RANGE.1.unsigned_abs() + 1;
        MixStats {
            late,
            peak: (peak.min(full) * u64::from(crate::shm::PEAK_FULL_SCALE) / full) as u32,
            clips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONO: [ChannelLayout; 1] = [ChannelLayout { first: 0, step: 2 }];
    const BIND0: [Option<u16>; 1] = [Some(0)];

    /// A mono S16 target of `dma.len()` frames.
    fn mono_s16<'a>(dma: &mut [i16], sum: &'a [AtomicU64]) -> Target<'a> {
        Target {
            dma: dma.as_mut_ptr() as *mut u8,
            dma_len: dma.len() * 2,
            sum,
            channels: &MONO,
            buffer_size: dma.len() as u64,
            format: SlaveFormat::S16Le,
        }
    }

    /// `data` as mono client frames of `sample_bytes` each, played on slave channel 0.
    fn mono_src(data: &[u8], sample_bytes: usize, format: ClientFormat) -> Source<'_> {
        Source {
            data,
            frames: data.len() / sample_bytes,
            frame_bytes: sample_bytes,
            sample_bytes,
            bindings: &BIND0,
            format,
        }
    }

    #[test]
    fn pack_roundtrip_extremes() {
        for lap in [0u32, 1, 12345, LAP_MASK as u32] {
            for sum in [
                0i64,
                1,
                -1,
                32767 * 64,
                -32768 * 64,
                (1 << 39) - 1,
                -(1 << 39),
            ] {
                assert_eq!(unpack(pack(lap, sum)), (lap, sum));
            }
        }
    }

    #[test]
    fn lap_ordering_wraps() {
        assert!(lap_newer(1, 0));
        assert!(!lap_newer(0, 1));
        assert!(lap_newer(0, LAP_MASK as u32));
        assert!(!lap_newer(5, 5));
    }

    #[test]
    fn accumulate_resets_on_new_lap_and_refuses_old() {
        let a = AtomicU64::new(0);
        assert_eq!(accumulate(&a, 0, 5, 1), Some(5));
        assert_eq!(accumulate(&a, 0, -7, 1), Some(-2));
        assert_eq!(accumulate(&a, 1, 3, 1), Some(3));
        assert_eq!(accumulate(&a, 0, 100, 1), None);
        assert_eq!(current_sum(&a, 1), Some(3));
    }

    #[test]
    fn refresh_keeps_stale_slots_older_than_any_writer() {
        let bs = 4u64;
        let sum: Vec<AtomicU64> = (0..bs).map(|_| AtomicU64::new(0)).collect();
        let hw = 1000 * bs + 1;
        let cur = lap_of(hw, bs);
        // Slot 0 was last written 2^23 - 1 laps ago: about to look newer than the current lap.
        let ancient = cur.wrapping_sub((1 << 23) - 1) & LAP_MASK as u32;
        sum[0].store(pack(ancient, 77), Ordering::Relaxed);
        // Slot 1 holds live data for the coming pass, slot 2 a recent stale lap.
        sum[1].store(pack(cur, 5), Ordering::Relaxed);
        sum[2].store(pack(cur - 1, 9), Ordering::Relaxed);
        // Slot 3 never written (lap 0) is stale too.
        assert_eq!(refresh_stale(&sum, 1, bs, hw), 2);
        assert_eq!(sum[1].load(Ordering::Relaxed), pack(cur, 5));
        assert_eq!(sum[2].load(Ordering::Relaxed), pack(cur - 1, 9));
        // Slot 0 plays next at lap cur + 1 (it is behind hw in this pass); a writer of that lap
        // restarts it, and so would a writer 2^23 - 5 laps later still.
        let next = lap_of(hw - 1 + bs, bs);
        assert_eq!(accumulate(&sum[0], next, 3, 1), Some(3));
        sum[0].store(pack(next.wrapping_sub(STALE_LAPS), 0), Ordering::Relaxed);
        let much_later = (next + (1 << 23) - 5) & LAP_MASK as u32;
        assert_eq!(accumulate(&sum[0], much_later, 4, 1), Some(4));
        // Refreshing twice changes nothing more.
        assert_eq!(refresh_stale(&sum, 1, bs, hw), 0);
    }

    #[test]
    fn retraction_only_touches_its_own_lap() {
        let a = AtomicU64::new(0);
        assert_eq!(accumulate(&a, 4, 5, 1), Some(5));
        assert_eq!(accumulate(&a, 4, 2, -1), Some(3));
        // An expired (newer) or stale (older) slot does not hold the sample: nothing to take.
        assert_eq!(accumulate(&a, 3, 3, -1), None);
        assert_eq!(accumulate(&a, 5, 3, -1), None);
        assert_eq!(current_sum(&a, 4), Some(3));
    }

    #[test]
    fn float_conversion_rounds_half_even_and_clips() {
        let f = SlaveFormat::S16Le;
        assert_eq!(f.from_float(0.0), 0);
        assert_eq!(f.from_float(1.0), 32767);
        assert_eq!(f.from_float(-1.0), -32768);
        assert_eq!(f.from_float(2.5), 32767);
        assert_eq!(f.from_float(f32::NAN), 0);
        assert_eq!(f.from_float(0.5 / 32768.0), 0); // 0.5 -> 0 (even)
        assert_eq!(f.from_float(1.5 / 32768.0), 2); // 1.5 -> 2 (even)
        assert_eq!(f.from_float(-2.5 / 32768.0), -2);
        assert_eq!(SlaveFormat::S32Le.from_float(-1.0), i32::MIN as i64);
        assert_eq!(SlaveFormat::S32Le.from_float(1.0), i32::MAX as i64);
        assert_eq!(SlaveFormat::U8.from_float(0.5), 64);
    }

    /// Every format: two writers summed and saturated exactly, compared with a plain reference.
    #[test]
    fn mix_every_format_against_reference() {
        let bs = 16u64;
        for fmt in SlaveFormat::ALL {
            let nch = 2;
            let sb = fmt.bytes();
            let mut dma = vec![0u8; bs as usize * nch * sb + 8];
            if fmt == SlaveFormat::U8 {
                dma.iter_mut().for_each(|b| *b = 0x80);
            }
            let sum: Vec<AtomicU64> = (0..bs as usize * nch).map(|_| AtomicU64::new(0)).collect();
            let lay = [
                ChannelLayout {
                    first: 0,
                    step: nch * sb,
                },
                ChannelLayout {
                    first: sb,
                    step: nch * sb,
                },
            ];
            let t = Target {
                dma: dma.as_mut_ptr(),
                dma_len: dma.len(),
                sum: &sum,
                channels: &lay,
                buffer_size: bs,
                format: fmt,
            };
            let (lo, hi) = fmt.range();
            let vals = |k: i64| -> Vec<i64> {
                (0..24)
                    .map(|i| ((i * 7919 + k) % (hi - lo + 1)) + lo)
                    .collect()
            };
            let (a, b) = (vals(3), vals(hi / 3 + 11));
            let enc = |v: &[i64]| -> Vec<u8> {
                let mut out = vec![0u8; v.len() * sb];
                for (i, x) in v.iter().enumerate() {
                    fmt.encode(*x, &mut out[i * sb..]);
                }
                out
            };
            let binds = [Some(0u16), Some(1)];
            for v in [&a, &b] {
                let data = enc(v);
                let src = Source {
                    data: &data,
                    frames: 12,
                    frame_bytes: nch * sb,
                    sample_bytes: sb,
                    bindings: &binds,
                    format: ClientFormat::Native,
                };
                // SAFETY: dma is a live interleaved buffer of bs frames.
                assert_eq!(unsafe { t.mix(4, &src, 1) }, 0);
            }
            for i in 0..24usize {
                let p = 4 + i / 2;
                let slot = p % bs as usize;
                let got = fmt.decode(&dma[(slot * nch + i % 2) * sb..]);
                assert_eq!(got, (a[i] + b[i]).clamp(lo, hi), "{fmt:?} sample {i}");
            }
        }
    }

    #[test]
    fn bindings_route_and_drop_channels() {
        let bs = 8u64;
        let mut dma = vec![0i16; bs as usize * 2];
        let sum: Vec<AtomicU64> = (0..bs as usize * 2).map(|_| AtomicU64::new(0)).collect();
        let lay = [
            ChannelLayout { first: 0, step: 4 },
            ChannelLayout { first: 2, step: 4 },
        ];
        let t = Target {
            dma: dma.as_mut_ptr() as *mut u8,
            dma_len: 32,
            sum: &sum,
            channels: &lay,
            buffer_size: bs,
            format: SlaveFormat::S16Le,
        };
        // A 3-channel client: ch0 -> slave 1, ch1 dropped, ch2 -> slave 0.
        let data: Vec<u8> = [10i16, 20, 30]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let binds = [Some(1u16), None, Some(0)];
        let src = Source {
            data: &data,
            frames: 1,
            frame_bytes: 6,
            sample_bytes: 2,
            bindings: &binds,
            format: ClientFormat::Native,
        };
        // SAFETY: live buffer.
        unsafe { t.mix(0, &src, 1) };
        assert_eq!(&dma[..2], &[30, 10]);
        // Taking it back out leaves silence.
        // SAFETY: live buffer.
        unsafe { t.mix(0, &src, -1) };
        assert_eq!(&dma[..2], &[0, 0]);
    }

    #[test]
    fn expire_silences_a_late_write_and_spares_a_newer_lap() {
        let mut dma = vec![0i16; 4];
        let sum: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let t = mono_s16(&mut dma, &sum);
        let data: Vec<u8> = [100i16, 200].iter().flat_map(|v| v.to_le_bytes()).collect();
        let src = mono_src(&data, 2, ClientFormat::Native);
        // SAFETY: live buffer.
        unsafe { t.mix(4, &src, 1) }; // lap 1, slots 0 and 1
                                      // A lap-2 writer takes slot 1 before the expiry.
        let one: Vec<u8> = 7i16.to_le_bytes().to_vec();
        let src1 = mono_src(&one, 2, ClientFormat::Native);
        // SAFETY: live buffer.
        unsafe { t.mix(9, &src1, 1) };
        // SAFETY: live buffer.
        unsafe { t.expire(4, 2, &BIND0) };
        assert_eq!(&dma[..2], &[0, 7]);
        // The expired slot now belongs to lap 2: a late lap-1 writer is refused, a lap-2 one adds.
        // SAFETY: live buffer.
        assert_eq!(unsafe { t.mix(4, &src1, 1) }, 1);
        // SAFETY: live buffer.
        unsafe { t.mix(8, &src1, 1) };
        assert_eq!(dma[0], 7);
    }

    #[test]
    fn saturation_releases_exactly() {
        let mut dma = vec![0i16; 4];
        let sum: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let t = mono_s16(&mut dma, &sum);
        let full: Vec<u8> = 30000i16.to_le_bytes().to_vec();
        let src = mono_src(&full, 2, ClientFormat::Native);
        // SAFETY: live buffer.
        unsafe {
            t.mix(0, &src, 1);
            t.mix(0, &src, 1);
        }
        assert_eq!(dma[0], i16::MAX);
        // SAFETY: live buffer.
        unsafe { t.mix(0, &src, -1) };
        assert_eq!(dma[0], 30000);
    }

    #[test]
    fn stats_measure_peak_and_clips() {
        let mut dma = vec![0i16; 4];
        let sum: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let t = mono_s16(&mut dma, &sum);
        let data: Vec<u8> = [16384i16, -30000, 100]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let src = mono_src(&data, 2, ClientFormat::Native);
        // SAFETY: live buffer.
        let a = unsafe { t.mix_stats(0, &src, 1) };
        assert_eq!((a.late, a.clips), (0, 0));
        assert_eq!(a.peak, (30000u64 * 65536 / 32768) as u32);
        // The same again: -60000 clips, 32768 clips, 200 does not.
        // SAFETY: live buffer.
        let b = unsafe { t.mix_stats(0, &src, 1) };
        assert_eq!(b.clips, 2);
        assert_eq!(&dma[..3], &[i16::MAX, i16::MIN, 200]);
    }

    #[test]
    fn scale_rounds_saturates_and_silences() {
        let mut d: Vec<u8> = [1000i16, -1001, 3, 30000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        scale_in_place(&mut d, SlaveFormat::S16Le, ClientFormat::Native, 1 << 15);
        let v: Vec<i16> = d
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        // Half, rounded to nearest (ties up): 500, -500.5 -> -500, 1.5 -> 2, 15000.
        assert_eq!(v, [500, -500, 2, 15000]);
        scale_in_place(&mut d, SlaveFormat::S16Le, ClientFormat::Native, 4 << 16);
        let v: Vec<i16> = d
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(v, [2000, -2000, 8, i16::MAX]);
        let mut u = vec![0x80u8 + 100, 0x80 - 100];
        scale_in_place(&mut u, SlaveFormat::U8, ClientFormat::Native, 0);
        assert_eq!(u, [0x80, 0x80], "U8 silence is 0x80");
        let mut f: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        scale_in_place(&mut f, SlaveFormat::S16Le, ClientFormat::FloatLe, 1 << 15);
        let v: Vec<f32> = f
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(v, [0.25, -0.5]);
        for fmt in SlaveFormat::ALL {
            let (lo, hi) = fmt.range();
            let mut b = vec![0u8; fmt.bytes() * 2];
            fmt.encode(lo, &mut b[..fmt.bytes()]);
            fmt.encode(hi, &mut b[fmt.bytes()..]);
            scale_in_place(&mut b, fmt, ClientFormat::Native, 3 << 16);
            assert_eq!(fmt.decode(&b[..fmt.bytes()]), lo, "{fmt:?}");
            assert_eq!(fmt.decode(&b[fmt.bytes()..]), hi, "{fmt:?}");
        }
    }

    #[test]
    fn float_client_into_s16() {
        let mut dma = vec![0i16; 4];
        let sum: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let t = mono_s16(&mut dma, &sum);
        let data: Vec<u8> = [0.25f32, -1.5, 1.5 / 32768.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let src = mono_src(&data, 4, ClientFormat::FloatLe);
        // SAFETY: live buffer.
        unsafe { t.mix(0, &src, 1) };
        assert_eq!(&dma[..3], &[8192, -32768, 2]);
    }
}
