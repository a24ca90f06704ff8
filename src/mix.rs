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
//! 2. Publish: store `saturate(sum)` into the DMA sample, then re-read the accumulator; if it
//!    changed meanwhile (another writer added), store again. The last writer to change a sum is
//!    the last to publish it, so the DMA holds the saturated exact sum once all writers are done.
//!
//! Step 1 is a single atomic instruction per sample: a writer killed at any point leaves either
//! its whole sample or none of it in the sum, never a half state, and holds no lock. (dmix's
//! lock-free variant — "cmpxchg dst 0→1, then subtract the stale sum" — can drop a concurrent
//! writer's sample between the two steps; the lap tag removes that window.)
//!
//! Why the kernel's silence matters: the hardware runs with `silence_size = boundary`, so the
//! kernel zeroes each DMA area right after it is played. A sample nobody writes for lap `L`
//! therefore plays as 0 (silence), and the accumulator's stale lap tells the first writer of the
//! new pass to restart the sum rather than add to last pass's value.
//!
//! The real-time contract: these functions allocate nothing, take no lock and make no syscall.

use std::sync::atomic::{AtomicI16, AtomicI32, AtomicU64, Ordering};

const SUM_BITS: u32 = 40;
const SUM_MASK: u64 = (1 << SUM_BITS) - 1;
const LAP_BITS: u32 = 24;
const LAP_MASK: u64 = (1 << LAP_BITS) - 1;

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
#[inline]
pub fn accumulate(acc: &AtomicU64, lap: u32, sample: i64) -> Option<i64> {
    let mut cur = acc.load(Ordering::Acquire);
    loop {
        let (l, s) = unpack(cur);
        let new_sum = if l == lap {
            s + sample
        } else if lap_newer(l, lap) {
            return None;
        } else {
            sample
        };
        match acc.compare_exchange_weak(
            cur,
            pack(lap, new_sum),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(new_sum),
            Err(v) => cur = v,
        }
    }
}

/// Read the current sum of an accumulator for `lap` (0 if it holds another lap).
#[inline]
pub fn current_sum(acc: &AtomicU64, lap: u32) -> Option<i64> {
    let (l, s) = unpack(acc.load(Ordering::Acquire));
    (l == lap).then_some(s)
}

#[inline]
pub fn saturate_s16(v: i64) -> i16 {
    v.clamp(i16::MIN as i64, i16::MAX as i64) as i16
}

/// Publish the saturated sum of `acc` into a 16-bit DMA sample, retrying while other writers
/// change the sum.
#[inline]
fn publish_s16(dst: &AtomicI16, acc: &AtomicU64, lap: u32, mut sum: i64, swap: bool) {
    loop {
        let v = saturate_s16(sum);
        dst.store(if swap { v.swap_bytes() } else { v }, Ordering::Release);
        match current_sum(acc, lap) {
            Some(s) if s != sum => sum = s,
            _ => return,
        }
    }
}

#[inline]
pub fn saturate_s32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// Publish into a 32-bit DMA sample (full 32-bit precision: the 40-bit sum holds 256
/// full-scale writers before it could overflow).
#[inline]
fn publish_s32(dst: &AtomicI32, acc: &AtomicU64, lap: u32, mut sum: i64, swap: bool) {
    loop {
        let v = saturate_s32(sum);
        dst.store(if swap { v.swap_bytes() } else { v }, Ordering::Release);
        match current_sum(acc, lap) {
            Some(s) if s != sum => sum = s,
            _ => return,
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
    pub channels: &'a [ChannelLayout],
    pub buffer_size: u64,
}

impl Target<'_> {
    /// Mix `frames` interleaved S16 frames from `src` (one sample per slave channel per frame,
    /// in host byte order) at slave positions `pos..pos+frames`. `swap` selects a byte-swapped
    /// (opposite-endian) slave. Returns the number of samples that were late.
    ///
    /// # Safety
    /// `dma` must point at a live mapping of `dma_len` bytes laid out as `channels` says, for
    /// `buffer_size` frames, with 2-byte samples.
    pub unsafe fn mix_s16(&self, pos: u64, src: &[i16], swap: bool) -> u32 {
        let nch = self.channels.len();
        let frames = src.len() / nch;
        let mut late = 0;
        for f in 0..frames {
            let p = pos + f as u64;
            let slot = (p % self.buffer_size) as usize;
            let lap = lap_of(p, self.buffer_size);
            for (ch, lay) in self.channels.iter().enumerate() {
                let off = lay.first + slot * lay.step;
                debug_assert!(off + 2 <= self.dma_len);
                let acc = &self.sum[slot * nch + ch];
                // SAFETY: the caller guarantees the mapping; `off` is inside it and 2-aligned
                // (ALSA sample layouts are naturally aligned). The DMA buffer is shared with
                // other processes and the kernel, so it is only accessed atomically.
                let dst = unsafe { AtomicI16::from_ptr(self.dma.add(off) as *mut i16) };
                match accumulate(acc, lap, src[f * nch + ch] as i64) {
                    Some(sum) => publish_s16(dst, acc, lap, sum, swap),
                    None => late += 1,
                }
            }
        }
        late
    }

    /// As [`Target::mix_s16`], for 32-bit samples.
    ///
    /// # Safety
    /// As for `mix_s16`, with 4-byte samples.
    pub unsafe fn mix_s32(&self, pos: u64, src: &[i32], swap: bool) -> u32 {
        let nch = self.channels.len();
        let frames = src.len() / nch;
        let mut late = 0;
        for f in 0..frames {
            let p = pos + f as u64;
            let slot = (p % self.buffer_size) as usize;
            let lap = lap_of(p, self.buffer_size);
            for (ch, lay) in self.channels.iter().enumerate() {
                let off = lay.first + slot * lay.step;
                debug_assert!(off + 4 <= self.dma_len);
                let acc = &self.sum[slot * nch + ch];
                // SAFETY: as in mix_s16, with 4-aligned 4-byte samples.
                let dst = unsafe { AtomicI32::from_ptr(self.dma.add(off) as *mut i32) };
                match accumulate(acc, lap, src[f * nch + ch] as i64) {
                    Some(sum) => publish_s32(dst, acc, lap, sum, swap),
                    None => late += 1,
                }
            }
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(accumulate(&a, 0, 5), Some(5));
        assert_eq!(accumulate(&a, 0, -7), Some(-2));
        assert_eq!(accumulate(&a, 1, 3), Some(3));
        assert_eq!(accumulate(&a, 0, 100), None);
        assert_eq!(current_sum(&a, 1), Some(3));
    }

    #[test]
    fn mix_s16_single_writer_wraps_ring() {
        let bs = 8u64;
        let nch = 2;
        let mut dma = vec![0i16; bs as usize * nch];
        let sum: Vec<AtomicU64> = (0..bs as usize * nch).map(|_| AtomicU64::new(0)).collect();
        let lay = [
            ChannelLayout { first: 0, step: 4 },
            ChannelLayout { first: 2, step: 4 },
        ];
        let t = Target {
            dma: dma.as_mut_ptr() as *mut u8,
            dma_len: dma.len() * 2,
            sum: &sum,
            channels: &lay,
            buffer_size: bs,
        };
        let src: Vec<i16> = (0..12).map(|i| i as i16 * 100).collect();
        // SAFETY: `dma` is a live interleaved buffer of bs frames × 2 channels.
        let late = unsafe { t.mix_s16(6, &src, false) };
        assert_eq!(late, 0);
        // positions 6,7 -> slots 6,7; 8..11 -> slots 0..3
        assert_eq!(&dma[12..16], &[0, 100, 200, 300]);
        assert_eq!(&dma[0..8], &[400, 500, 600, 700, 800, 900, 1000, 1100]);
        // A second writer on the same positions sums and saturates.
        let big = vec![i16::MAX; 12];
        // SAFETY: as above.
        unsafe { t.mix_s16(6, &big, false) };
        assert_eq!(dma[12], i16::MAX);
        assert_eq!(dma[0], i16::MAX);
    }
}
