//! The lock-free accumulation protocol of `mix` under real concurrency: threads and forked
//! processes mixing into one shared sum ring and DMA buffer, a writer SIGKILLed mid-write,
//! interleavings forced with page faults, and an exhaustive interleaving model of the CAS/publish
//! steps (sequentially consistent and x86-TSO).
//!
//! Every check is deterministic in outcome, not in timing: the expected state is computed from
//! plain `i64` sums of the known signals (or, where a race decides, from what each writer reports
//! and from ticket intervals that bound what it could have seen).
//!
//! Invariants checked (see `src/mix.rs`, "The accumulation protocol"):
//! - after every writer of a lap has returned, each accumulator holds `(lap, exact sum)` with the
//!   sum unsaturated, and the DMA sample holds exactly `encode(clamp(sum))` (for S24_LE the top
//!   byte is 0);
//! - subtracting a writer's frames (`sign = -1`) restores the exact saturated sum of the others;
//! - a late write (accumulator already on a newer lap) changes nothing, and is reported late iff
//!   another writer of a newer lap got there first (checked with ticket intervals);
//! - a writer killed at any point leaves its whole sample or none of it in the sum; only the one
//!   sample it was publishing may show a stale DMA value, and that value is the saturation of a
//!   sum the accumulator really held.
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(clippy::needless_range_loop)]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use asound_module_pcm_rdmix::mix::{
    accumulate, current_sum, lap_of, ChannelLayout, ClientFormat, SlaveFormat, Source, Target, LAPS,
};
use memmap2::MmapMut;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Slave buffer size in frames: small, so a run spans many laps.
const BS: u64 = 64;
/// Slave channels (interleaved).
const NCH: usize = 2;
/// Client channels: two bound (possibly swapped), one unbound carrying full-scale junk.
const CCH: usize = 3;
/// Spacing of the areas of the shared mapping: a multiple of any page size, so the sum ring and
/// the DMA buffer can be write-protected separately.
const AREA: usize = 1 << 16;
const BARRIER_TIMEOUT: Duration = Duration::from_secs(20);

// Control words (first area of the shared mapping).
const C_COUNT: usize = 0;
const C_GEN: usize = 1;
const C_ABORT: usize = 2;
const C_TICKET: usize = 3;
const C_GO: usize = 4;
const C_STARTED: usize = 5;
const C_PARKED: usize = 6;
const C_RELEASE: usize = 7;
const C_DONE: usize = 8;
const C_LATE: usize = 16;

// ---------------------------------------------------------------------------------------------
// Shared memory, test bed and signals
// ---------------------------------------------------------------------------------------------

/// A memfd mapped MAP_SHARED: control words, the sum ring, the DMA buffer, then records.
struct Shm {
    _map: MmapMut,
    base: *mut u8,
    records: usize,
}

// SAFETY: the mapping lives as long as `Shm`; after creation every access to it goes through
// atomics (control words, accumulators, DMA bytes, records), so sharing it between threads is
// sound.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    fn new(records: usize) -> Shm {
        let len = 3 * AREA + (records * 8).next_multiple_of(AREA).max(AREA);
        // SAFETY: a valid NUL-terminated name and flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"rdmix-accumulate".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).expect("ftruncate memfd");
        // SAFETY: the memfd is private to this test (and the children it forks) and is never
        // resized while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.expect("mmap memfd");
        let base = map.as_mut_ptr();
        Shm {
            _map: map,
            base,
            records,
        }
    }

    fn ctrl(&self, i: usize) -> &AtomicU64 {
        assert!(i < AREA / 8);
        // SAFETY: inside the first area of the live, 8-aligned mapping; only used atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(i * 8) as *mut u64) }
    }

    fn sums(&self) -> &[AtomicU64] {
        // SAFETY: the second area holds BS * NCH zero-initialised u64s (1 KiB < AREA), accessed
        // only atomically.
        unsafe {
            std::slice::from_raw_parts(self.base.add(AREA) as *const AtomicU64, BS as usize * NCH)
        }
    }

    fn sum_page(&self) -> *mut u8 {
        // SAFETY: offset inside the mapping.
        unsafe { self.base.add(AREA) }
    }

    fn dma(&self) -> *mut u8 {
        // SAFETY: offset inside the mapping.
        unsafe { self.base.add(2 * AREA) }
    }

    fn record(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.records);
        // SAFETY: inside the record area of the live mapping; only used atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(3 * AREA + i * 8) as *mut u64) }
    }
}

/// One mix target: sum ring + interleaved DMA buffer of `fmt`, frame 0 at slave position
/// `start`.
struct Bed {
    shm: Shm,
    fmt: SlaveFormat,
    layout: [ChannelLayout; NCH],
    start: u64,
}

impl Bed {
    /// A bed whose accumulators all hold `(lap(start) - 1, 0)` and whose DMA is silent: the
    /// state the hardware leaves after playing the lap before `start`.
    fn new(fmt: SlaveFormat, records: usize, start_lap: u64) -> Bed {
        let sb = fmt.bytes();
        let layout = [
            ChannelLayout {
                first: 0,
                step: NCH * sb,
            },
            ChannelLayout {
                first: sb,
                step: NCH * sb,
            },
        ];
        let bed = Bed {
            shm: Shm::new(records),
            fmt,
            layout,
            start: start_lap * BS,
        };
        // A fresh ring holds (lap 0, 0); walk it to the lap before `start` in steps of less
        // than half the lap space (each step is "newer", so it replaces).
        let target = ((start_lap + LAPS - 1) % LAPS) as u32;
        for acc in bed.shm.sums() {
            let mut cur = 0u32;
            while cur != target {
                cur = (cur + (1 << 22)).min(target);
                assert_eq!(accumulate(acc, cur, 0, 1), Some(0));
            }
        }
        bed.silence();
        bed
    }

    fn target(&self) -> Target<'_> {
        Target {
            dma: self.shm.dma(),
            dma_len: AREA,
            sum: self.shm.sums(),
            channels: &self.layout,
            buffer_size: BS,
            format: self.fmt,
        }
    }

    fn acc(&self, slot: usize, sc: usize) -> &AtomicU64 {
        &self.shm.sums()[slot * NCH + sc]
    }

    fn lap(&self, frame: usize) -> u32 {
        lap_of(self.start + frame as u64, BS)
    }

    fn dma_off(&self, slot: usize, sc: usize) -> usize {
        self.layout[sc].first + slot * self.layout[sc].step
    }

    fn dma_sample(&self, slot: usize, sc: usize) -> [u8; 4] {
        let off = self.dma_off(slot, sc);
        let mut out = [0u8; 4];
        for (i, b) in out.iter_mut().enumerate().take(self.fmt.bytes()) {
            // SAFETY: `off + i` is a byte of the DMA area of the live mapping, read atomically.
            *b = unsafe { AtomicU8::from_ptr(self.shm.dma().add(off + i)) }.load(Ordering::Acquire);
        }
        out
    }

    fn set_dma_sample(&self, slot: usize, sc: usize, bytes: [u8; 4]) {
        let off = self.dma_off(slot, sc);
        for (i, b) in bytes.iter().enumerate().take(self.fmt.bytes()) {
            // SAFETY: as in `dma_sample`, written atomically.
            unsafe { AtomicU8::from_ptr(self.shm.dma().add(off + i)) }.store(*b, Ordering::Release);
        }
    }

    /// What the hardware does after playing a lap: silence the whole DMA buffer.
    fn silence(&self) {
        let s = enc(self.fmt, 0);
        for slot in 0..BS as usize {
            for sc in 0..NCH {
                self.set_dma_sample(slot, sc, s);
            }
        }
    }

    fn barrier(&self, n: usize) -> SpinBarrier<'_> {
        SpinBarrier {
            count: self.shm.ctrl(C_COUNT),
            gen: self.shm.ctrl(C_GEN),
            abort: self.shm.ctrl(C_ABORT),
            n: n as u64,
        }
    }

    /// Check one sample against `(lap, sum)`: the accumulator holds exactly that, and the DMA
    /// holds `dma` (the saturated sum unless stated otherwise).
    fn check(
        &self,
        (slot, sc): (usize, usize),
        lap: u32,
        sum: i64,
        dma: [u8; 4],
        what: &str,
        e: &mut Errors,
    ) {
        let acc = self.acc(slot, sc).load(Ordering::Acquire);
        if current_sum(self.acc(slot, sc), lap) != Some(sum) {
            e.push(format!(
                "{what}: {:?} slot {slot} ch {sc}: accumulator {acc:#018x}, expected lap {lap} sum {sum}",
                self.fmt
            ));
        }
        let got = self.dma_sample(slot, sc);
        if got != dma {
            e.push(format!(
                "{what}: {:?} slot {slot} ch {sc}: DMA {:?} (= {}), expected {:?} (= {}); acc {acc:#018x} sum {sum}",
                self.fmt,
                &got[..self.fmt.bytes()],
                self.fmt.decode(&got),
                &dma[..self.fmt.bytes()],
                self.fmt.decode(&dma),
            ));
        }
    }
}

fn enc(fmt: SlaveFormat, v: i64) -> [u8; 4] {
    let mut out = [0u8; 4];
    fmt.encode(v, &mut out);
    out
}

fn sat(fmt: SlaveFormat, v: i64) -> i64 {
    let (lo, hi) = fmt.range();
    v.clamp(lo, hi)
}

fn enc_sat(fmt: SlaveFormat, v: i64) -> [u8; 4] {
    enc(fmt, sat(fmt, v))
}

#[derive(Default)]
struct Errors {
    n: usize,
    first: Vec<String>,
}

impl Errors {
    fn push(&mut self, m: String) {
        self.n += 1;
        if self.first.len() < 12 {
            self.first.push(m);
        }
    }

    fn assert_none(&self, what: &str) {
        assert!(
            self.n == 0,
            "{what}: {} violations, first:\n{}",
            self.n,
            self.first.join("\n")
        );
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED, |h, p| splitmix(h ^ p))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = std::env::var("RDMIX_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {s} (set RDMIX_TEST_SEED to repeat)");
    s
}

/// One writer's known signal: `frames` frames of CCH client channels, and the contribution each
/// frame makes to each slave channel, in slave units.
struct Wave {
    data: Vec<u8>,
    units: Vec<i64>,
    bindings: [Option<u16>; CCH],
    /// The client channel that plays on each slave channel.
    client_ch: [usize; NCH],
    format: ClientFormat,
    cb: usize,
}

impl Wave {
    /// Writer `w`: every 4th writer is a FLOAT_LE client, every odd writer plays its channels
    /// swapped. Values include full scale on both sides (so sums saturate), values that cancel
    /// between writers, zeros, and random values at several magnitudes. With `nonzero`, no
    /// contribution is 0.
    fn new(fmt: SlaveFormat, w: usize, seed: u64, frames: usize, nonzero: bool) -> Wave {
        let float = w % 4 == 3;
        let swap = w % 2 == 1;
        let (bindings, client_ch, junk) = if swap {
            ([None, Some(1), Some(0)], [2, 1], 0)
        } else {
            ([Some(0), Some(1), None], [0, 1], 2)
        };
        let cb = if float { 4 } else { fmt.bytes() };
        let fb = CCH * cb;
        let (lo, hi) = fmt.range();
        let scale = (1u64 << (fmt.bits() - 1)) as f64;
        let mut data = vec![0u8; frames * fb];
        let mut units = vec![0i64; frames * NCH];
        for f in 0..frames {
            for sc in 0..NCH {
                let h = hash(&[seed, w as u64, f as u64, sc as u64]);
                let r = lo + ((h >> 8) % (hi - lo + 1) as u64) as i64;
                let r = r >> ((h >> 58) % 6);
                let at = f * fb + client_ch[sc] * cb;
                if float {
                    let mut x: f32 = match h % 16 {
                        0 => 1.5,
                        1 => -1.0,
                        2 => 1.0,
                        3 => -0.0,
                        4 => f32::NAN,
                        _ => (r as f64 / scale) as f32,
                    };
                    if nonzero && fmt.from_float(x) == 0 {
                        x = -1.0;
                    }
                    units[f * NCH + sc] = fmt.from_float(x);
                    data[at..at + 4].copy_from_slice(&x.to_le_bytes());
                } else {
                    let mut v = match h % 16 {
                        0 => hi,
                        1 => lo,
                        2 => [hi, lo][w % 2],
                        3 => 0,
                        _ => r,
                    };
                    if nonzero && v == 0 {
                        v = hi;
                    }
                    units[f * NCH + sc] = v;
                    fmt.encode(v, &mut data[at..at + cb]);
                }
            }
            // The unbound channel carries full scale: it must never be heard.
            let at = f * fb + junk * cb;
            if float {
                data[at..at + 4].copy_from_slice(&1.0f32.to_le_bytes());
            } else {
                fmt.encode(hi, &mut data[at..at + cb]);
            }
        }
        let format = if float {
            ClientFormat::FloatLe
        } else {
            ClientFormat::Native
        };
        Wave {
            data,
            units,
            bindings,
            client_ch,
            format,
            cb,
        }
    }

    fn unit(&self, frame: usize, sc: usize) -> i64 {
        self.units[frame * NCH + sc]
    }

    fn source(&self, frame: usize, n: usize) -> Source<'_> {
        let fb = CCH * self.cb;
        Source {
            data: &self.data[frame * fb..(frame + n) * fb],
            frames: n,
            frame_bytes: fb,
            sample_bytes: self.cb,
            bindings: &self.bindings,
            format: self.format,
        }
    }
}

/// Mix frames `from..to` of `sig` (bed positions) in chunks of 1..=13 frames. Returns the late
/// sample count. Allocates nothing (it runs in forked children).
fn mix_chunks(
    bed: &Bed,
    t: &Target<'_>,
    sig: &Wave,
    from: usize,
    to: usize,
    sign: i64,
    rng: &mut Rng,
) -> u64 {
    let mut late = 0;
    let mut f = from;
    while f < to {
        let n = (1 + rng.below(13) as usize).min(to - f);
        let src = sig.source(f, n);
        // SAFETY: the target describes the bed's live mapping: BS frames of NCH interleaved
        // samples, BS * NCH accumulators.
        late += unsafe { t.mix(bed.start + f as u64, &src, sign) } as u64;
        f += n;
    }
    late
}

/// Mix one sample of `sig` (frame `frame`, slave channel `sc`). Returns whether it was late.
fn mix_one(bed: &Bed, t: &Target<'_>, sig: &Wave, frame: usize, sc: usize) -> bool {
    let mut b = [None; CCH];
    b[sig.client_ch[sc]] = Some(sc as u16);
    let fb = CCH * sig.cb;
    let src = Source {
        data: &sig.data[frame * fb..(frame + 1) * fb],
        frames: 1,
        frame_bytes: fb,
        sample_bytes: sig.cb,
        bindings: &b,
        format: sig.format,
    };
    // SAFETY: as in `mix_chunks`.
    (unsafe { t.mix(bed.start + frame as u64, &src, 1) }) != 0
}

/// Mix the single native value `v` into slave channel `sc` at slave position `pos`.
fn mix_value(bed: &Bed, pos: u64, sc: usize, v: i64, sign: i64) -> u32 {
    let mut data = [0u8; 4];
    bed.fmt.encode(v, &mut data);
    let b = [Some(sc as u16)];
    let sb = bed.fmt.bytes();
    let src = Source {
        data: &data[..sb],
        frames: 1,
        frame_bytes: sb,
        sample_bytes: sb,
        bindings: &b,
        format: ClientFormat::Native,
    };
    // SAFETY: as in `mix_chunks`.
    unsafe { bed.target().mix(pos, &src, sign) }
}

// ---------------------------------------------------------------------------------------------
// Running writers as threads or as forked processes
// ---------------------------------------------------------------------------------------------

/// A sense-reversing spin barrier in shared memory (works across fork). Gives up (returning
/// false) on abort or after BARRIER_TIMEOUT, so a broken run fails instead of hanging.
struct SpinBarrier<'a> {
    count: &'a AtomicU64,
    gen: &'a AtomicU64,
    abort: &'a AtomicU64,
    n: u64,
}

impl SpinBarrier<'_> {
    fn wait(&self) -> bool {
        let g = self.gen.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.gen.store(g + 1, Ordering::Release);
            return true;
        }
        let t0 = Instant::now();
        let mut spins = 0u32;
        while self.gen.load(Ordering::Acquire) == g {
            if self.abort.load(Ordering::Acquire) != 0 {
                return false;
            }
            spins = spins.saturating_add(1);
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
                if t0.elapsed() > BARRIER_TIMEOUT {
                    self.abort.store(1, Ordering::Release);
                    return false;
                }
            }
        }
        true
    }
}

fn wait_flag(flag: &AtomicU64, abort: &AtomicU64) -> bool {
    let t0 = Instant::now();
    while flag.load(Ordering::Acquire) == 0 {
        if abort.load(Ordering::Acquire) != 0 || t0.elapsed() > BARRIER_TIMEOUT {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Forked children, killed and reaped if the parent panics.
#[derive(Default)]
struct Kids {
    pids: Vec<Pid>,
}

impl Kids {
    /// Fork a child running `f`, which must allocate nothing and take no lock (the parent has
    /// other threads: the test harness's), and exits with its return value.
    fn spawn(&mut self, f: impl FnOnce() -> i32) -> Pid {
        self.pids.reserve(1);
        // SAFETY: the child only runs `f` (allocation-free, lock-free by the contract above),
        // catches a panic rather than unwinding into the harness, and leaves with `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
                // SAFETY: ends the child without running the parent's atexit handlers or
                // destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                self.pids.push(child);
                child
            }
        }
    }

    /// Reap one child (blocking, with a timeout after which it is killed).
    fn wait(&mut self, pid: Pid) -> WaitStatus {
        let t0 = Instant::now();
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if t0.elapsed() > BARRIER_TIMEOUT * 2 {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(s) => {
                    self.pids.retain(|p| *p != pid);
                    return s;
                }
                Err(e) => panic!("waitpid {pid}: {e}"),
            }
        }
    }

    fn wait_all(&mut self) -> Vec<WaitStatus> {
        let pids = self.pids.clone();
        pids.into_iter().map(|p| self.wait(p)).collect()
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for p in self.pids.drain(..) {
            let _ = kill(p, Signal::SIGKILL);
            let _ = waitpid(p, None);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Threads,
    Processes,
}

/// Run `worker(w)` for `w in 0..k` as threads or forked processes while this thread runs
/// `coordinator`; returns the coordinator's result and every worker's exit code (0 = fine).
fn run_parallel<R>(
    mode: Mode,
    k: usize,
    worker: &(dyn Fn(usize) -> i32 + Sync),
    coordinator: impl FnOnce() -> R,
) -> (R, Vec<i32>) {
    match mode {
        Mode::Threads => std::thread::scope(|s| {
            let hs: Vec<_> = (0..k).map(|w| s.spawn(move || worker(w))).collect();
            let r = coordinator();
            let codes = hs.into_iter().map(|h| h.join().unwrap_or(101)).collect();
            (r, codes)
        }),
        Mode::Processes => {
            let mut kids = Kids::default();
            for w in 0..k {
                kids.spawn(|| worker(w));
            }
            let r = coordinator();
            let codes = kids
                .wait_all()
                .into_iter()
                .map(|s| match s {
                    WaitStatus::Exited(_, c) => c,
                    WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                    _ => -1,
                })
                .collect();
            (r, codes)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1 + 2. K writers, one barrier per lap (threads and processes)
// ---------------------------------------------------------------------------------------------

const LAP_RUNS: usize = 8;
/// Laps wrap from 2^24 - 1 to 0 in the middle of a run.
const WRAP_START_LAP: u64 = LAPS - 3;

/// Frames of lap `l` the writers write: lap 2 leaves the second half of the ring unwritten (it
/// must stay silent, and the next lap must restart those sums from two laps back).
fn lap_len(l: usize) -> usize {
    if l == 2 {
        BS as usize / 2
    } else {
        BS as usize
    }
}

/// On odd laps the first half of the writers take their frames back out.
fn subtracts(l: usize, w: usize, k: usize) -> bool {
    l % 2 == 1 && w < (k / 2).max(1)
}

fn lap_worker(bed: &Bed, sig: &Wave, w: usize, k: usize, seed: u64) -> i32 {
    let t = bed.target();
    let bar = bed.barrier(k + 1);
    let mut rng = Rng(seed ^ ((w as u64) << 40));
    let mut late = 0;
    for l in 0..LAP_RUNS {
        let from = l * BS as usize;
        if !bar.wait() {
            return 2;
        }
        late += mix_chunks(bed, &t, sig, from, from + lap_len(l), 1, &mut rng);
        if !bar.wait() || !bar.wait() {
            return 2;
        }
        if subtracts(l, w, k) {
            late += mix_chunks(bed, &t, sig, from, from + lap_len(l), -1, &mut rng);
        }
        if !bar.wait() {
            return 2;
        }
    }
    bed.shm.ctrl(C_LATE + w).store(late, Ordering::Release);
    0
}

/// Between the barriers: check every sample of the lap, then silence the DMA as the hardware
/// would after playing it.
fn lap_coordinator(bed: &Bed, sigs: &[Wave]) -> Errors {
    let k = sigs.len();
    let bar = bed.barrier(k + 1);
    let mut e = Errors::default();
    // Per (slot, ch): the lap and sum the accumulator last held, for slots a lap leaves alone.
    let mut prev = vec![(bed.lap(0).wrapping_sub(1) & (LAPS as u32 - 1), 0i64); BS as usize * NCH];
    'laps: for l in 0..LAP_RUNS {
        for phase in 0..2 {
            if !bar.wait() || !bar.wait() {
                e.push(format!("barrier timed out in lap {l} phase {phase}"));
                break 'laps;
            }
            for slot in 0..BS as usize {
                for sc in 0..NCH {
                    let i = slot * NCH + sc;
                    let what = format!("lap {l} phase {phase} (k={k})");
                    if slot < lap_len(l) {
                        let f = l * BS as usize + slot;
                        let sum: i64 = (0..k)
                            .filter(|&w| phase == 0 || !subtracts(l, w, k))
                            .map(|w| sigs[w].unit(f, sc))
                            .sum();
                        let lap = bed.lap(f);
                        bed.check((slot, sc), lap, sum, enc_sat(bed.fmt, sum), &what, &mut e);
                        prev[i] = (lap, sum);
                    } else {
                        let (lap, sum) = prev[i];
                        bed.check((slot, sc), lap, sum, enc(bed.fmt, 0), &what, &mut e);
                    }
                }
            }
        }
        bed.silence();
    }
    if e.n > 0 {
        bed.shm.ctrl(C_ABORT).store(1, Ordering::Release);
    }
    e
}

fn run_lap_barrier(mode: Mode, fmt: SlaveFormat, k: usize, seed: u64) {
    let bed = Bed::new(fmt, 0, WRAP_START_LAP);
    let frames = LAP_RUNS * BS as usize;
    let sigs: Vec<Wave> = (0..k)
        .map(|w| Wave::new(fmt, w, seed, frames, false))
        .collect();
    let worker = |w: usize| lap_worker(&bed, &sigs[w], w, k, seed);
    let (errors, codes) = run_parallel(mode, k, &worker, || lap_coordinator(&bed, &sigs));
    errors.assert_none(&format!("{mode:?} {fmt:?} k={k}"));
    assert!(
        codes.iter().all(|&c| c == 0),
        "{mode:?} {fmt:?} k={k}: worker exit codes {codes:?}"
    );
    for w in 0..k {
        let late = bed.shm.ctrl(C_LATE + w).load(Ordering::Acquire);
        assert_eq!(
            late, 0,
            "{mode:?} {fmt:?} k={k}: writer {w} reported {late} late samples in lockstep laps"
        );
    }
}

#[test]
fn threads_lap_barrier_every_format() {
    let seed = seed();
    let t0 = Instant::now();
    for fmt in SlaveFormat::ALL {
        for k in [2, 4, 8, 16] {
            run_lap_barrier(Mode::Threads, fmt, k, seed);
        }
    }
    eprintln!("threads_lap_barrier_every_format: {:?}", t0.elapsed());
}

#[test]
fn processes_lap_barrier_every_format() {
    let seed = seed();
    let t0 = Instant::now();
    for fmt in SlaveFormat::ALL {
        run_lap_barrier(Mode::Processes, fmt, 8, seed);
    }
    eprintln!("processes_lap_barrier_every_format: {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 1b + 2b. K writers racing across laps, no barrier: late writes happen
// ---------------------------------------------------------------------------------------------

const RACE_LAPS: usize = 16;
const RACE_FRAMES: usize = RACE_LAPS * BS as usize;
const RACE_START_LAP: u64 = LAPS - 8;

/// Each sample write is bracketed by two tickets from one SeqCst counter: `t0` before, `t1`
/// after. Record: `t0 << 33 | t1 << 1 | late`.
fn race_worker(bed: &Bed, sig: &Wave, w: usize, k: usize, seed: u64) -> i32 {
    let t = bed.target();
    let ticket = bed.shm.ctrl(C_TICKET);
    let mut rng = Rng(seed ^ 0xACE ^ ((w as u64) << 40));
    // Writers run at different speeds, so they drift laps apart.
    let yield_every = [3u64, 11, 40, 1000][w % 4];
    if !bed.barrier(k + 1).wait() {
        return 2;
    }
    for f in 0..RACE_FRAMES {
        for j in 0..NCH {
            let sc = if w % 2 == 1 { NCH - 1 - j } else { j };
            if rng.below(yield_every) == 0 {
                std::thread::yield_now();
            }
            let t0 = ticket.fetch_add(1, Ordering::SeqCst);
            let late = mix_one(bed, &t, sig, f, sc);
            let t1 = ticket.fetch_add(1, Ordering::SeqCst);
            bed.shm
                .record((w * RACE_FRAMES + f) * NCH + sc)
                .store(t0 << 33 | t1 << 1 | late as u64, Ordering::Relaxed);
        }
    }
    0
}

/// Verify a racing run from the records. Returns the number of late samples.
fn race_verify(bed: &Bed, sigs: &[Wave], e: &mut Errors) -> u64 {
    let k = sigs.len();
    let mut late_total = 0;
    for slot in 0..BS as usize {
        for sc in 0..NCH {
            // Per lap index: earliest start and earliest end of an accepted write.
            let mut min_t0 = [u64::MAX; RACE_LAPS + 1];
            let mut min_t1 = [u64::MAX; RACE_LAPS + 1];
            let rec = |w: usize, l: usize| {
                let r = bed
                    .shm
                    .record((w * RACE_FRAMES + l * BS as usize + slot) * NCH + sc)
                    .load(Ordering::Relaxed);
                (r >> 33, (r >> 1) & 0xFFFF_FFFF, r & 1 == 1)
            };
            for w in 0..k {
                for l in 0..RACE_LAPS {
                    let (t0, t1, late) = rec(w, l);
                    if !late {
                        min_t0[l] = min_t0[l].min(t0);
                        min_t1[l] = min_t1[l].min(t1);
                    }
                }
            }
            // Suffix minima over strictly newer laps.
            for l in (0..RACE_LAPS).rev() {
                min_t0[l] = min_t0[l].min(min_t0[l + 1]);
                min_t1[l] = min_t1[l].min(min_t1[l + 1]);
            }
            for w in 0..k {
                for l in 0..RACE_LAPS {
                    let (t0, t1, late) = rec(w, l);
                    if late {
                        late_total += 1;
                        // Late only if a newer lap's accepted write began before this one ended.
                        if min_t0[l + 1] >= t1 {
                            e.push(format!("{:?} writer {w} lap {l} slot {slot} ch {sc}: reported late [{t0},{t1}] but no newer-lap write started before it ended", bed.fmt));
                        }
                    } else if min_t1[l + 1] < t0 {
                        // Accepted although a newer lap's write had already completed.
                        e.push(format!("{:?} writer {w} lap {l} slot {slot} ch {sc}: accepted at [{t0},{t1}] after a newer-lap write ended at {}", bed.fmt, min_t1[l + 1]));
                    }
                }
            }
            // Final state: the last lap, summed over exactly the writers not late on it.
            let l = RACE_LAPS - 1;
            let f = l * BS as usize + slot;
            let sum: i64 = (0..k)
                .filter(|&w| !rec(w, l).2)
                .map(|w| sigs[w].unit(f, sc))
                .sum();
            bed.check(
                (slot, sc),
                bed.lap(f),
                sum,
                enc_sat(bed.fmt, sum),
                "final lap of race",
                e,
            );
        }
    }
    late_total
}

fn run_race(mode: Mode, fmt: SlaveFormat, k: usize, seed: u64) -> u64 {
    let bed = Bed::new(fmt, k * RACE_FRAMES * NCH, RACE_START_LAP);
    let sigs: Vec<Wave> = (0..k)
        .map(|w| Wave::new(fmt, w, seed, RACE_FRAMES, false))
        .collect();
    let worker = |w: usize| race_worker(&bed, &sigs[w], w, k, seed);
    let (ok, codes) = run_parallel(mode, k, &worker, || bed.barrier(k + 1).wait());
    assert!(
        ok && codes.iter().all(|&c| c == 0),
        "{mode:?} {fmt:?} k={k}: start {ok}, exit codes {codes:?}"
    );
    let mut e = Errors::default();
    let late = race_verify(&bed, &sigs, &mut e);
    e.assert_none(&format!("{mode:?} race {fmt:?} k={k}"));
    late
}

#[test]
fn threads_racing_laps_every_format() {
    let seed = seed();
    let t0 = Instant::now();
    for k in [2, 4, 8, 16] {
        let late: u64 = SlaveFormat::ALL
            .iter()
            .map(|&fmt| run_race(Mode::Threads, fmt, k, seed))
            .sum();
        eprintln!("racing threads k={k}: {late} late samples over all formats");
    }
    eprintln!("threads_racing_laps_every_format: {:?}", t0.elapsed());
}

#[test]
fn processes_racing_laps_every_format() {
    let seed = seed();
    let t0 = Instant::now();
    let late: u64 = SlaveFormat::ALL
        .iter()
        .map(|&fmt| run_race(Mode::Processes, fmt, 8, seed))
        .sum();
    eprintln!(
        "racing processes k=8: {late} late samples over all formats; {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A writer SIGKILLed mid-write while 3 others write
// ---------------------------------------------------------------------------------------------

const KILL_ROUNDS: usize = 150;

/// The outcome of one kill, for the summary.
struct KillOutcome {
    present: usize,
    prefix: bool,
    in_flight_stale: bool,
    others_done: u64,
}

/// Verify after the victim (writer 0) was killed and the others (1..=3) finished. The victim
/// sweeps the lap in order, alternately adding and subtracting its nonzero signal, so its
/// contributions must form a prefix (killed while adding) or a suffix (killed while
/// subtracting) of the sweep, and the only sample that may show a stale DMA value is the last
/// one it touched.
fn kill_verify(bed: &Bed, sigs: &[Wave], e: &mut Errors) -> KillOutcome {
    let fmt = bed.fmt;
    let n = BS as usize * NCH;
    let lap = bed.lap(0);
    let idx = |i: usize| (i / NCH, i % NCH); // the victim's sweep order: frame-major, ch 0 then 1
    let others = |f: usize, sc: usize| (1..sigs.len()).map(|w| sigs[w].unit(f, sc)).sum::<i64>();
    let mut present = vec![false; n];
    let mut sums = vec![0i64; n];
    for i in 0..n {
        let (f, sc) = idx(i);
        let Some(s) = current_sum(bed.acc(f, sc), lap) else {
            e.push(format!(
                "{fmt:?} slot {f} ch {sc}: accumulator left lap {lap}"
            ));
            continue;
        };
        sums[i] = s;
        let d = s - others(f, sc);
        let v = sigs[0].unit(f, sc);
        if d == v {
            present[i] = true;
        } else if d != 0 {
            e.push(format!(
                "{fmt:?} slot {f} ch {sc}: sum {s} = others + {d}, neither 0 nor the victim's {v}"
            ));
        }
    }
    let cnt = present.iter().filter(|&&p| p).count();
    let prefix = present[..cnt].iter().all(|&p| p);
    let suffix = present[n - cnt..].iter().all(|&p| p);
    if !prefix && !suffix {
        e.push(format!("{fmt:?}: the victim's samples in the sum are neither a prefix nor a suffix of its sweep: {present:?}"));
    }
    let in_flight = if cnt == 0 || cnt == n {
        n - 1
    } else if prefix {
        cnt - 1
    } else {
        n - cnt - 1
    };
    let mut in_flight_stale = false;
    for i in 0..n {
        let (f, sc) = idx(i);
        let want = enc_sat(fmt, sums[i]);
        let got = bed.dma_sample(f, sc);
        if got == want {
            continue;
        }
        if i != in_flight {
            e.push(format!("{fmt:?} slot {f} ch {sc}: DMA {} != saturated sum {} (not the victim's in-flight sample {in_flight})", fmt.decode(&got), sat(fmt, sums[i])));
            continue;
        }
        // The victim died publishing this sample: the DMA may hold any sum the accumulator
        // held from just before the victim's last CAS on: others' partial sums, with or
        // without the victim's sample. A 3-byte format may mix bytes of two of them.
        in_flight_stale = true;
        let mut cands = Vec::new();
        for mask in 0..1u32 << (sigs.len() - 1) {
            let o: i64 = (1..sigs.len())
                .filter(|w| mask >> (w - 1) & 1 == 1)
                .map(|w| sigs[w].unit(f, sc))
                .sum();
            cands.push(enc_sat(fmt, o));
            cands.push(enc_sat(fmt, o + sigs[0].unit(f, sc)));
        }
        let ok = if fmt == SlaveFormat::S24_3Le {
            (0..3).all(|b| cands.iter().any(|c| c[b] == got[b]))
        } else {
            cands.contains(&got)
        };
        if !ok {
            e.push(format!("{fmt:?} slot {f} ch {sc}: in-flight sample's DMA {} is no sum the accumulator could have held", fmt.decode(&got)));
        }
    }
    KillOutcome {
        present: cnt,
        prefix,
        in_flight_stale,
        others_done: 0,
    }
}

#[test]
fn process_killed_mid_write_at_random_moments() {
    let seed = seed();
    let t0 = Instant::now();
    let mut rng = Rng(seed ^ 0xDEAD);
    let mut summary = Vec::new();
    for rep in 0..20 {
        let fmt = SlaveFormat::ALL[rep % SlaveFormat::ALL.len()];
        let bed = Bed::new(fmt, 0, 1000 + rep as u64);
        let sigs: Vec<Wave> = (0..4)
            .map(|w| Wave::new(fmt, w, seed ^ rep as u64, BS as usize, w == 0))
            .collect();
        let (go, abort) = (bed.shm.ctrl(C_GO), bed.shm.ctrl(C_ABORT));
        let mut kids = Kids::default();
        let victim = kids.spawn(|| {
            let t = bed.target();
            let mut rng = Rng(seed ^ 7);
            if !wait_flag(go, abort) {
                return 2;
            }
            let t0 = Instant::now();
            loop {
                mix_chunks(&bed, &t, &sigs[0], 0, BS as usize, 1, &mut rng);
                bed.shm.ctrl(C_STARTED).store(1, Ordering::Release);
                mix_chunks(&bed, &t, &sigs[0], 0, BS as usize, -1, &mut rng);
                if t0.elapsed() > BARRIER_TIMEOUT {
                    return 3;
                }
            }
        });
        for w in 1..4 {
            let (bed, sig) = (&bed, &sigs[w]);
            kids.spawn(move || {
                let t = bed.target();
                let mut rng = Rng(seed ^ w as u64);
                if !wait_flag(go, abort) {
                    return 2;
                }
                for _ in 0..KILL_ROUNDS {
                    mix_chunks(bed, &t, sig, 0, BS as usize, 1, &mut rng);
                    mix_chunks(bed, &t, sig, 0, BS as usize, -1, &mut rng);
                }
                let late = mix_chunks(bed, &t, sig, 0, BS as usize, 1, &mut rng);
                bed.shm.ctrl(C_DONE).fetch_add(1, Ordering::AcqRel);
                if late == 0 {
                    0
                } else {
                    4
                }
            });
        }
        go.store(1, Ordering::Release);
        assert!(
            wait_flag(bed.shm.ctrl(C_STARTED), abort),
            "victim never started"
        );
        let delay = Duration::from_micros(rng.below(3000));
        let t_kill = Instant::now();
        while t_kill.elapsed() < delay {
            std::hint::spin_loop();
        }
        let others_done = bed.shm.ctrl(C_DONE).load(Ordering::Acquire);
        kill(victim, Signal::SIGKILL).expect("kill victim");
        let vs = kids.wait(victim);
        assert!(
            matches!(vs, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "victim: {vs:?}"
        );
        for s in kids.wait_all() {
            assert!(matches!(s, WaitStatus::Exited(_, 0)), "other writer: {s:?}");
        }
        let mut e = Errors::default();
        let mut out = kill_verify(&bed, &sigs, &mut e);
        out.others_done = others_done;
        e.assert_none(&format!("rep {rep} {fmt:?} killed after {delay:?}"));
        summary.push(out);
    }
    let adding = summary
        .iter()
        .filter(|o| o.prefix && o.present > 0 && o.present < BS as usize * NCH)
        .count();
    let subtracting = summary.iter().filter(|o| !o.prefix).count();
    let stale = summary.iter().filter(|o| o.in_flight_stale).count();
    let during = summary.iter().filter(|o| o.others_done < 3).count();
    eprintln!(
        "killed mid-add {adding}, mid-subtract {subtracting}, at a sweep edge {}; \
         killed while others still wrote {during}/20; in-flight sample left stale {stale}; {:?}",
        20 - adding - subtracting,
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Forced interleavings: a write-protected page parks a forked writer at its CAS or its DMA store
// ---------------------------------------------------------------------------------------------

static PARK_CTRL: AtomicUsize = AtomicUsize::new(0);
static PARK_PAGE: AtomicUsize = AtomicUsize::new(0);

/// SIGSEGV handler of a parked child: report "parked", wait for "release", then make the page
/// writable again and return, so the faulting instruction runs again.
extern "C" fn park_on_fault(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let page = PARK_PAGE.load(Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if addr < page || addr >= page + AREA {
        // SAFETY: async-signal-safe exit on an unexpected fault.
        unsafe { libc::_exit(90) }
    }
    let ctrl = PARK_CTRL.load(Ordering::Relaxed) as *mut u64;
    // SAFETY: `ctrl` is the control area of the shared mapping, live in this process; only
    // atomics are used on it.
    let (parked, release) = unsafe {
        (
            AtomicU64::from_ptr(ctrl.add(C_PARKED)),
            AtomicU64::from_ptr(ctrl.add(C_RELEASE)),
        )
    };
    parked.store(1, Ordering::Release);
    let t0 = Instant::now();
    while release.load(Ordering::Acquire) == 0 {
        if t0.elapsed() > BARRIER_TIMEOUT {
            // SAFETY: async-signal-safe exit.
            unsafe { libc::_exit(91) }
        }
        // SAFETY: sched_yield is async-signal-safe.
        unsafe { libc::sched_yield() };
    }
    // SAFETY: `page` is the start of a page-aligned area of the live mapping.
    unsafe {
        libc::mprotect(
            page as *mut libc::c_void,
            AREA,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
}

/// In a forked child: write-protect `page` (this process's view only) and park on the next
/// write to it.
fn arm_park(bed: &Bed, page: *mut u8) {
    PARK_CTRL.store(bed.shm.base as usize, Ordering::Relaxed);
    PARK_PAGE.store(page as usize, Ordering::Relaxed);
    let act = SigAction::new(
        SigHandler::SigAction(park_on_fault),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only uses atomics, sched_yield, mprotect and _exit; this runs in a
    // single-threaded forked child.
    unsafe { sigaction(Signal::SIGSEGV, &act) }.expect("sigaction");
    // SAFETY: `page` starts a page-aligned area of AREA bytes inside the live mapping.
    let r = unsafe { libc::mprotect(page as *mut libc::c_void, AREA, libc::PROT_READ) };
    assert_eq!(r, 0);
}

fn wait_parked(bed: &Bed) {
    assert!(
        wait_flag(bed.shm.ctrl(C_PARKED), bed.shm.ctrl(C_ABORT)),
        "writer never parked"
    );
}

/// Writer A adds `a` and is parked between its CAS and its DMA store while writer B adds `b`
/// completely; A then stores its stale `sat(a)`, re-reads and must publish `sat(a + b)`.
#[test]
fn forced_same_lap_interleaving_is_republished() {
    for fmt in SlaveFormat::ALL {
        let (lo, hi) = fmt.range();
        for (a, b) in [(hi - hi / 4, hi - hi / 4), (hi, lo), (lo / 3, hi / 5)] {
            let bed = Bed::new(fmt, 0, 5);
            let pos = bed.start + 9;
            let slot = 9;
            let mut kids = Kids::default();
            let pa = kids.spawn(|| {
                arm_park(&bed, bed.shm.dma());
                mix_value(&bed, pos, 1, a, 1) as i32
            });
            wait_parked(&bed);
            let mut e = Errors::default();
            let lap = bed.lap(9);
            bed.check(
                (slot, 1),
                lap,
                a,
                enc(fmt, 0),
                "A parked after its CAS",
                &mut e,
            );
            assert_eq!(mix_value(&bed, pos, 1, b, 1), 0);
            bed.check((slot, 1), lap, a + b, enc_sat(fmt, a + b), "B done", &mut e);
            bed.shm.ctrl(C_RELEASE).store(1, Ordering::Release);
            let s = kids.wait(pa);
            assert!(
                matches!(s, WaitStatus::Exited(_, 0)),
                "{fmt:?}: writer A {s:?}"
            );
            bed.check(
                (slot, 1),
                lap,
                a + b,
                enc_sat(fmt, a + b),
                "A resumed",
                &mut e,
            );
            e.assert_none(&format!("{fmt:?} a={a} b={b}"));
        }
    }
}

/// BUG (src/mix.rs `publish`): writer A (lap L) is parked between its CAS and its DMA store;
/// the hardware plays and silences the slot; writer B of lap L+1 replaces the sum and publishes
/// it. A then stores its stale lap-L sum over B's, re-reads, sees another lap and returns: the
/// DMA keeps lap L's value although the accumulator says `(L+1, b)` and every writer is done.
#[test]
fn forced_cross_lap_stale_publish_is_repaired() {
    let mut e = Errors::default();
    for fmt in SlaveFormat::ALL {
        let (lo, hi) = fmt.range();
        let (a, b) = (hi / 2, lo / 3);
        let bed = Bed::new(fmt, 0, 5);
        let mut kids = Kids::default();
        let pa = kids.spawn(|| {
            arm_park(&bed, bed.shm.dma());
            mix_value(&bed, bed.start + 3, 0, a, 1) as i32
        });
        wait_parked(&bed);
        bed.silence();
        assert_eq!(
            mix_value(&bed, bed.start + BS + 3, 0, b, 1),
            0,
            "{fmt:?}: B late"
        );
        bed.shm.ctrl(C_RELEASE).store(1, Ordering::Release);
        let s = kids.wait(pa);
        assert!(
            matches!(s, WaitStatus::Exited(_, 0)),
            "{fmt:?}: writer A {s:?}"
        );
        bed.check(
            (3, 0),
            bed.lap(BS as usize),
            b,
            enc_sat(fmt, b),
            "lap L writer resumed after lap L+1 published",
            &mut e,
        );
    }
    e.assert_none("a lap-L writer's stale store over a lap-L+1 sum");
}

/// A writer killed at its CAS leaves nothing; killed between its CAS and its DMA store it
/// leaves its whole sample in the sum and the DMA at the saturated sum from before its add,
/// until the next writer of that sample publishes both.
#[test]
fn process_killed_at_forced_points() {
    for fmt in SlaveFormat::ALL {
        let (lo, hi) = fmt.range();
        let (o1, v, o2) = (hi / 2 + 1, hi / 2 + 3, lo / 4);
        for at_cas in [true, false] {
            let bed = Bed::new(fmt, 0, 77);
            let (pos, slot, lap) = (bed.start + 5, 5, bed.lap(5));
            assert_eq!(mix_value(&bed, pos, 0, o1, 1), 0);
            let mut kids = Kids::default();
            let victim = kids.spawn(|| {
                arm_park(
                    &bed,
                    if at_cas {
                        bed.shm.sum_page()
                    } else {
                        bed.shm.dma()
                    },
                );
                mix_value(&bed, pos, 0, v, 1) as i32
            });
            wait_parked(&bed);
            kill(victim, Signal::SIGKILL).expect("kill");
            let s = kids.wait(victim);
            assert!(
                matches!(s, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
                "{s:?}"
            );
            let mut e = Errors::default();
            let what = if at_cas {
                "killed at its CAS"
            } else {
                "killed between CAS and store"
            };
            let sum = if at_cas { o1 } else { o1 + v };
            bed.check((slot, 0), lap, sum, enc_sat(fmt, o1), what, &mut e);
            assert_eq!(mix_value(&bed, pos, 0, o2, 1), 0);
            bed.check(
                (slot, 0),
                lap,
                sum + o2,
                enc_sat(fmt, sum + o2),
                "next writer",
                &mut e,
            );
            e.assert_none(&format!("{fmt:?} {what}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The StoreLoad race of `publish`, on real hardware
// ---------------------------------------------------------------------------------------------

fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid
    // pointers and the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// BUG (src/mix.rs `publish`): two writers on two CPUs add to the same samples in lockstep,
/// lap after lap, and after each lap every sample is checked. `publish` stores the DMA sample
/// with Release and re-reads the accumulator with Acquire: nothing orders the store before the
/// load, and x86 (any TSO machine) lets the load pass the store still in the store buffer. So
/// writer A re-reads its own sum (B's CAS not yet there), B publishes `a+b`, then A's buffered
/// `sat(a)` lands last: the DMA keeps one writer's partial sum for good.
#[test]
fn publish_store_load_race_on_two_cpus() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let seed = seed();
    let beds: Vec<Bed> = SlaveFormat::ALL
        .iter()
        .map(|&f| Bed::new(f, 0, 1))
        .collect();
    let sigs: Vec<[Wave; 2]> = SlaveFormat::ALL
        .iter()
        .map(|&f| [0, 1].map(|w| Wave::new(f, w, seed, BS as usize, false)))
        .collect();
    let ctl = Bed::new(SlaveFormat::S16Le, 0, 1);
    let bar = ctl.barrier(2);
    let abort = ctl.shm.ctrl(C_ABORT);
    let deadline = Duration::from_millis(1500);
    let (mut e, mut rounds) = (Errors::default(), 0u64);
    std::thread::scope(|s| {
        let (beds, sigs, bar) = (&beds, &sigs, &bar);
        let writer = move |w: usize, check: Option<(&mut Errors, &mut u64)>| {
            let pinned = pin_to_cpu(w);
            let t0 = Instant::now();
            let mut check = check;
            for r in 0u64.. {
                let b = (r % beds.len() as u64) as usize;
                let (bed, sig) = (&beds[b], &sigs[b][w]);
                let pos = (r / beds.len() as u64 + 1) * BS;
                let stop = match check.as_mut() {
                    Some((e, _)) => t0.elapsed() > deadline || e.n > 500,
                    None => false,
                };
                if stop {
                    abort.store(1, Ordering::Release);
                    return pinned;
                }
                if !bar.wait() {
                    return pinned;
                }
                let src = sig.source(0, BS as usize);
                // SAFETY: as in `mix_chunks`.
                unsafe { bed.target().mix(pos, &src, 1) };
                if !bar.wait() {
                    return pinned;
                }
                if let Some((e, rounds)) = check.as_mut() {
                    **rounds = r + 1;
                    for slot in 0..BS as usize {
                        for sc in 0..NCH {
                            let sum = sigs[b][0].unit(slot, sc) + sigs[b][1].unit(slot, sc);
                            bed.check(
                                (slot, sc),
                                lap_of(pos, BS),
                                sum,
                                enc_sat(bed.fmt, sum),
                                &format!("round {r}"),
                                e,
                            );
                        }
                    }
                }
            }
            pinned
        };
        let h = s.spawn(move || writer(1, None));
        let pinned = writer(0, Some((&mut e, &mut rounds)));
        let pinned1 = h.join().unwrap();
        eprintln!("{rounds} lockstep laps, {} samples checked, pinned {pinned}/{pinned1}: {} lost publishes", rounds * BS * NCH as u64, e.n);
    });
    e.assert_none("DMA != saturate(accumulator) after both writers returned");
}

// ---------------------------------------------------------------------------------------------
// Negative controls: the harness can fail
// ---------------------------------------------------------------------------------------------

/// The checker catches a wrong DMA sample and a wrong accumulator.
#[test]
fn negative_control_checker_detects_corruption() {
    let fmt = SlaveFormat::S16Le;
    let bed = Bed::new(fmt, 0, 3);
    let sigs: Vec<Wave> = (0..2)
        .map(|w| Wave::new(fmt, w, 42, BS as usize, false))
        .collect();
    let t = bed.target();
    for s in &sigs {
        mix_chunks(&bed, &t, s, 0, BS as usize, 1, &mut Rng(1));
    }
    let expect = |e: &mut Errors| {
        for slot in 0..BS as usize {
            for sc in 0..NCH {
                let sum = sigs[0].unit(slot, sc) + sigs[1].unit(slot, sc);
                bed.check(
                    (slot, sc),
                    bed.lap(slot),
                    sum,
                    enc_sat(fmt, sum),
                    "control",
                    e,
                );
            }
        }
    };
    let mut e = Errors::default();
    expect(&mut e);
    e.assert_none("clean state");
    let orig = bed.dma_sample(7, 1);
    let v = fmt.decode(&orig);
    bed.set_dma_sample(
        7,
        1,
        enc(fmt, if v == fmt.range().1 { v - 1 } else { v + 1 }),
    );
    let mut e = Errors::default();
    expect(&mut e);
    assert_eq!(e.n, 1, "corrupted DMA sample not caught: {:?}", e.first);
    bed.set_dma_sample(7, 1, orig);
    accumulate(bed.acc(9, 0), bed.lap(9), 1, 1).unwrap();
    let mut e = Errors::default();
    expect(&mut e);
    assert_eq!(e.n, 1, "corrupted accumulator not caught: {:?}", e.first);
}

/// What the protocol would lose without a single CAS: a load-compute-store accumulate (the
/// packing documented in src/mix.rs: lap in the top 24 bits, 40-bit sum below).
fn non_atomic_accumulate(acc: &AtomicU64, lap: u32, sample: i64) -> Option<i64> {
    let cur = acc.load(Ordering::Acquire);
    let (l, s) = ((cur >> 40) as u32, ((cur << 24) as i64) >> 24);
    let sum = if l == lap { s + sample } else { sample };
    std::hint::spin_loop();
    acc.store(
        ((lap as u64) << 40) | (sum as u64 & ((1 << 40) - 1)),
        Ordering::Release,
    );
    Some(sum)
}

fn count_lost(
    acc_fn: fn(&AtomicU64, u32, i64) -> Option<i64>,
    threads: usize,
    passes: usize,
) -> i64 {
    let accs: Vec<AtomicU64> = (0..256).map(|_| AtomicU64::new(0)).collect();
    let bar = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                bar.wait();
                for _ in 0..passes {
                    for a in &accs {
                        acc_fn(a, 1, 1);
                    }
                }
            });
        }
    });
    accs.iter()
        .map(|a| (threads * passes) as i64 - current_sum(a, 1).unwrap_or(0))
        .sum()
}

/// The same harness loses updates with a non-atomic accumulate (printed, timing-dependent) and
/// none with `mix::accumulate` (asserted).
#[test]
fn negative_control_non_atomic_accumulate_loses_updates() {
    let lost = count_lost(non_atomic_accumulate, 4, 2000);
    eprintln!(
        "non-atomic accumulate: {lost} of {} updates lost",
        4 * 2000 * 256
    );
    assert_eq!(
        count_lost(|a, l, v| accumulate(a, l, v, 1), 4, 2000),
        0,
        "mix::accumulate lost updates"
    );
}

/// The lap tag's reach (documented in src/mix.rs as "within half the lap space"): a slot last
/// written 2^23 laps ago is restarted; one written 2^23 + 1 laps ago looks newer, and every write
/// to it is refused as late; one written exactly 2^24 laps ago aliases the current lap, and the
/// new sample is added to that ancient sum. A limitation for slots idle that long, which the
/// server's periodic `mix::refresh_stale` sweep keeps from arising (it re-tags stale slots to a
/// few laps back every 10 s).
#[test]
fn lap_tag_half_space_boundary() {
    let a = AtomicU64::new(0);
    assert_eq!(accumulate(&a, 10, 5, 1), Some(5));
    assert_eq!(accumulate(&a, 10 + (1 << 23), 7, 1), Some(7));
    let b = AtomicU64::new(0);
    assert_eq!(accumulate(&b, 10, 5, 1), Some(5));
    assert_eq!(accumulate(&b, 10 + (1 << 23) + 1, 7, 1), None);
    assert_eq!(accumulate(&b, 10 + (1 << 24) - 1, 7, 1), None);
    assert_eq!(current_sum(&b, 10), Some(5));
    assert_eq!(
        accumulate(&b, (10 + (1 << 24)) & ((1 << 24) - 1), 9, 1),
        Some(14)
    );
    for (bs, rate) in [(64u64, 48_000u64), (1024, 48_000), (16384, 48_000)] {
        let h = (1u64 << 23) * bs / rate / 3600;
        eprintln!("buffer {bs} @ {rate} Hz: a slot idle for ~{h} h refuses writes for ~{h} h more");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Exhaustive interleavings of the CAS / store / re-read steps (hand-rolled model)
// ---------------------------------------------------------------------------------------------

mod model {
    //! One accumulator and one DMA sample; each writer runs `accumulate` (one atomic step), then
    //! `publish`: store `sat(sum)`, re-read, store again while the sum changed. Under TSO each
    //! writer's DMA stores go through a FIFO store buffer that drains at any moment; the CAS
    //! (a locked instruction) needs an empty buffer; loads of the accumulator come from memory
    //! (it is never in a store buffer: only CASes write it). A "fence" lets the re-read run only
    //! once the writer's own stores have drained (a SeqCst store, `xchg`, or an `mfence`).
    use std::collections::HashSet;

    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    enum Pc {
        Cas,
        Store,
        Reread,
        Done,
        Dead,
    }

    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct W {
        pc: Pc,
        lap: u32,
        sum: i64,
        buf: Vec<i64>,
        applied: Option<bool>,
        killed_in_flight: bool,
    }

    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct St {
        acc: (u32, i64),
        dma: i64,
        ws: Vec<W>,
        silenced: bool,
        /// Accumulator sums from just before the victim's CAS on.
        hist: Vec<i64>,
    }

    #[derive(Clone, Copy, Debug)]
    pub struct Cfg {
        pub tso: bool,
        pub fence: bool,
        /// `publish` as written returns when the re-read finds another lap; the alternative
        /// publishes whatever (newer) lap and sum the accumulator holds.
        pub follow_newest: bool,
        /// The hardware silences the sample (once, at any moment) before any writer of this lap
        /// may CAS it.
        pub silence_before: Option<u32>,
        pub victim: Option<usize>,
        pub range: (i64, i64),
    }

    pub struct Outcome {
        pub states: usize,
        pub counterexample: Option<Vec<String>>,
    }

    pub fn explore(cfg: Cfg, init: (u32, i64), ops: &[(u32, i64)]) -> Outcome {
        let sat = |v: i64| v.clamp(cfg.range.0, cfg.range.1);
        let st = St {
            acc: init,
            dma: sat(init.1),
            ws: ops
                .iter()
                .map(|&(lap, _)| W {
                    pc: Pc::Cas,
                    lap,
                    sum: 0,
                    buf: Vec::new(),
                    applied: None,
                    killed_in_flight: false,
                })
                .collect(),
            silenced: false,
            hist: Vec::new(),
        };
        let mut seen = HashSet::new();
        let mut path = Vec::new();
        let cx = dfs(&cfg, init, ops, st, &mut seen, &mut path);
        Outcome {
            states: seen.len(),
            counterexample: cx,
        }
    }

    fn successors(cfg: &Cfg, ops: &[(u32, i64)], st: &St) -> Vec<(String, St)> {
        let sat = |v: i64| v.clamp(cfg.range.0, cfg.range.1);
        let mut out = Vec::new();
        for i in 0..st.ws.len() {
            let w = &st.ws[i];
            let (lap, v) = ops[i];
            match w.pc {
                Pc::Cas if w.buf.is_empty() && (cfg.silence_before != Some(lap) || st.silenced) => {
                    let mut n = st.clone();
                    let (al, asum) = st.acc;
                    if al > lap {
                        n.ws[i].applied = Some(false);
                        n.ws[i].pc = Pc::Done;
                        out.push((format!("w{i} CAS: late (acc lap {al})"), n));
                    } else {
                        let sum = if al == lap { asum + v } else { v };
                        n.acc = (lap, sum);
                        if cfg.victim == Some(i) {
                            n.hist = vec![asum];
                        }
                        if !n.hist.is_empty() {
                            n.hist.push(sum);
                        }
                        n.ws[i].applied = Some(true);
                        n.ws[i].sum = sum;
                        n.ws[i].pc = Pc::Store;
                        out.push((format!("w{i} CAS: acc = ({lap}, {sum})"), n));
                    }
                }
                Pc::Store => {
                    let mut n = st.clone();
                    let x = sat(w.sum);
                    if cfg.tso {
                        n.ws[i].buf.push(x);
                    } else {
                        n.dma = x;
                    }
                    n.ws[i].pc = Pc::Reread;
                    out.push((
                        format!(
                            "w{i} store dma = {x}{}",
                            if cfg.tso { " (buffered)" } else { "" }
                        ),
                        n,
                    ));
                }
                Pc::Reread if !(cfg.tso && cfg.fence) || w.buf.is_empty() => {
                    let mut n = st.clone();
                    let again = if cfg.follow_newest {
                        st.acc != (w.lap, w.sum)
                    } else {
                        st.acc.0 == w.lap && st.acc.1 != w.sum
                    };
                    if again {
                        n.ws[i].lap = st.acc.0;
                        n.ws[i].sum = st.acc.1;
                        n.ws[i].pc = Pc::Store;
                    } else {
                        n.ws[i].pc = Pc::Done;
                    }
                    out.push((
                        format!(
                            "w{i} re-read acc = {:?}: {}",
                            st.acc,
                            if again { "store again" } else { "done" }
                        ),
                        n,
                    ));
                }
                _ => {}
            }
            if !w.buf.is_empty() {
                let mut n = st.clone();
                n.dma = n.ws[i].buf.remove(0);
                out.push((format!("w{i} store buffer drains: dma = {}", n.dma), n));
            }
            if cfg.victim == Some(i) && matches!(w.pc, Pc::Cas | Pc::Store | Pc::Reread) {
                let mut n = st.clone();
                n.ws[i].killed_in_flight = w.pc != Pc::Cas;
                n.ws[i].pc = Pc::Dead;
                out.push((format!("w{i} killed"), n));
            }
        }
        if cfg.silence_before.is_some() && !st.silenced {
            let mut n = st.clone();
            n.silenced = true;
            n.dma = 0;
            out.push(("hardware plays and silences the sample".to_string(), n));
        }
        out
    }

    fn check_final(cfg: &Cfg, init: (u32, i64), ops: &[(u32, i64)], st: &St) -> Result<(), String> {
        let sat = |v: i64| v.clamp(cfg.range.0, cfg.range.1);
        // The accumulator: the newest accepted lap, summed exactly.
        let applied = |i: usize| st.ws[i].applied == Some(true);
        let lap = (0..ops.len())
            .filter(|&i| applied(i))
            .map(|i| ops[i].0)
            .max()
            .unwrap_or(init.0)
            .max(init.0);
        let base = if lap == init.0 { init.1 } else { 0 };
        let sum = base
            + (0..ops.len())
                .filter(|&i| applied(i) && ops[i].0 == lap)
                .map(|i| ops[i].1)
                .sum::<i64>();
        if st.acc != (lap, sum) {
            return Err(format!(
                "accumulator {:?}, expected {:?}",
                st.acc,
                (lap, sum)
            ));
        }
        let victim_in_flight = cfg.victim.is_some_and(|v| st.ws[v].killed_in_flight);
        if victim_in_flight {
            if !st.hist.iter().any(|&h| sat(h) == st.dma) {
                return Err(format!("dma {} is none of sat({:?})", st.dma, st.hist));
            }
        } else if st.dma != sat(st.acc.1) {
            return Err(format!(
                "dma {} != sat({}) = {}",
                st.dma,
                st.acc.1,
                sat(st.acc.1)
            ));
        }
        Ok(())
    }

    fn dfs(
        cfg: &Cfg,
        init: (u32, i64),
        ops: &[(u32, i64)],
        st: St,
        seen: &mut HashSet<St>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if !seen.insert(st.clone()) {
            return None;
        }
        let next = successors(cfg, ops, &st);
        if next.is_empty() {
            return check_final(cfg, init, ops, &st).err().map(|m| {
                let mut t = path.clone();
                t.push(format!("final: {m}"));
                t
            });
        }
        for (label, n) in next {
            path.push(label);
            if let Some(cx) = dfs(cfg, init, ops, n, seen, path) {
                return Some(cx);
            }
            path.pop();
        }
        None
    }
}

const S16: (i64, i64) = (-32768, 32767);

fn model_cfg(tso: bool, fence: bool, follow_newest: bool) -> model::Cfg {
    model::Cfg {
        tso,
        fence,
        follow_newest,
        silence_before: None,
        victim: None,
        range: S16,
    }
}

/// Same-lap scenarios: saturating pairs, saturation released by a negative writer, a writer
/// taking another's sample back out. Starting from an older lap, so the first CAS replaces.
const SAME_LAP: [&[(u32, i64)]; 4] = [
    &[(1, 20000), (1, 20000)],
    &[(1, 30000), (1, 30000), (1, -30000)],
    &[(1, 1000), (1, -1000), (1, 7)],
    &[(1, 20000), (1, 5), (1, -20000)],
];

fn assert_model_ok(cfg: model::Cfg, init: (u32, i64), ops: &[(u32, i64)]) -> usize {
    let o = model::explore(cfg, init, ops);
    if let Some(cx) = o.counterexample {
        panic!("{cfg:?} {ops:?}: counterexample\n  {}", cx.join("\n  "));
    }
    o.states
}

/// Sequential consistency: every interleaving of 2 and 3 writers ends with DMA = sat(sum).
#[test]
fn model_same_lap_sequentially_consistent() {
    let mut states = 0;
    for ops in SAME_LAP {
        for follow in [false, true] {
            states += assert_model_ok(model_cfg(false, false, follow), (0, 0), ops);
        }
    }
    eprintln!("{states} states explored");
}

/// x86-TSO with a StoreLoad fence between the DMA store and the re-read: still exact.
#[test]
fn model_same_lap_tso_with_storeload_fence() {
    let mut states = 0;
    for ops in SAME_LAP {
        states += assert_model_ok(model_cfg(true, true, false), (0, 0), ops);
        states += assert_model_ok(model_cfg(true, true, true), (0, 0), ops);
    }
    eprintln!("{states} states explored");
}

/// x86-TSO without that fence (what `publish` compiles to: a plain store, then a plain load):
/// the model finds the lost publish that `publish_store_load_race_on_two_cpus` hits on hardware.
#[test]
fn model_same_lap_tso_without_fence_loses_a_publish() {
    let o = model::explore(model_cfg(true, false, false), (0, 0), SAME_LAP[0]);
    let cx = o
        .counterexample
        .expect("TSO without a fence should lose a publish");
    eprintln!(
        "counterexample ({} states):\n  {}",
        o.states,
        cx.join("\n  ")
    );
}

/// Cross-lap: a lap-1 writer racing a lap-2 writer, the hardware silencing the sample in between.
/// As written (`publish` returns when the lap changed), the lap-1 writer's stale store can land
/// over the lap-2 sum; publishing the newest lap's sum instead is exact, also under TSO with a
/// fence.
#[test]
fn model_cross_lap_stale_publish() {
    let cross: [&[(u32, i64)]; 3] = [
        &[(1, 1000), (2, 7)],
        &[(1, 1000), (1, 2000), (2, 7)],
        &[(1, 30000), (2, 7), (2, 30000)],
    ];
    let mut c = model_cfg(false, false, false);
    c.silence_before = Some(2);
    let o = model::explore(c, (0, 0), cross[0]);
    let cx = o
        .counterexample
        .expect("as written, a lap-1 writer can overwrite the lap-2 sum");
    eprintln!("as written:\n  {}", cx.join("\n  "));
    let mut states = 0;
    for ops in cross {
        for tso in [false, true] {
            let mut c = model_cfg(tso, true, true);
            c.silence_before = Some(2);
            states += assert_model_ok(c, (0, 0), ops);
        }
    }
    eprintln!("follow-newest publish: {states} states, no counterexample");
}

/// A writer killed at any step: the sum holds all or none of its sample, and the DMA holds
/// sat(sum) unless it died between its CAS and the end of its publish, in which case the DMA
/// holds the saturation of some sum the accumulator held from just before its CAS on.
#[test]
fn model_killed_writer() {
    let mut states = 0;
    for ops in SAME_LAP {
        for victim in 0..ops.len() {
            for (tso, fence) in [(false, false), (true, true)] {
                let mut c = model_cfg(tso, fence, false);
                c.victim = Some(victim);
                states += assert_model_ok(c, (0, 0), ops);
            }
        }
    }
    eprintln!("{states} states explored");
}
