//! Host-side checker for captures of N clients mixed together (2..16 at once).
//!
//! Each client plays a deterministic pseudo-random signal ([`client_signal`],
//! [`full_scale_signal`], [`float_signal`]). The mixer puts each client's stream at an offset we
//! do not know, and a loopback capture records the mix. The checker
//!
//! 1. recovers each client's offset in the capture ([`find_offsets`]): FFT cross-correlation of
//!    the whole client signal with the whole capture, all channels at once;
//! 2. checks that every captured frame is exactly the saturated sum of the client frames due at
//!    that frame, silence where no client plays ([`verify`], [`check`]). Runs of wrong frames
//!    are explained where possible: a client missing, shifted by a few frames (a dropped or
//!    repeated frame), or an extra copy of a client's frames (a replayed head);
//! 3. for alsa-lib's dmix, checks the same modulo its known edge race ([`verify_with_edges`]):
//!    a client may lose up to `slack` frames at its head and/or tail, and a lost head frame may be
//!    replayed exactly one slave buffer later, summed on top (vm-testing.md §8.3).
//!
//! Samples are `i64` in the slave format's signed units ([`SlaveFormat::range`]); a signal is
//! `Vec<frame>`, a frame `Vec<i64>` of one sample per channel. Everything returns data; tests
//! assert on it and print the reports (`Display`: a summary line, then one line per client).

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use asound_module_pcm_rdmix::mix::SlaveFormat;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// One stream: frames of one sample per channel, in the slave format's signed units.
pub type Signal = Vec<Vec<i64>>;

/// Correlation peaks below this many noise standard deviations are "not found". A present client
/// of M frames and C channels mixed with N others scores about sqrt(M·C/N) (measured, stereo,
/// 16 clients: 2000 frames ~15, 20000 ~48, 48000 ~75; 2 full-scale saturating clients of 48000
/// frames ~215); the best lag of an absent client, and any wrong lag, about 3 to 6. So give
/// each client of a 16-client test at least ~10000 frames.
pub const MIN_SCORE: f64 = 12.0;
/// Mismatches listed in full in a report.
const MAX_SHOWN: usize = 8;
/// Runs of mismatches listed (and explained) in a report.
const MAX_RUNS: usize = 16;
/// Mismatching frames closer than this belong to one run.
const RUN_GAP: usize = 8;
/// Largest shift tried when explaining a run (dropped or repeated frames).
const MAX_SHIFT: i64 = 8;
/// Runs whose first frame is looked up among all client frames (an extra copy of a client).
const MAX_EXTRA_LOOKUPS: usize = 4;
/// Flip sets tried per frame by the edge model before a frame is called unexplained.
const EDGE_BUDGET: usize = 1 << 17;

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// splitmix64, seeded through its own finaliser so that nearby seeds give unrelated streams.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ 0x6A09_E667_F3BC_C908);
        let first = s.next_u64();
        SplitMix(first)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (modulo bias below 2^-30 for our ranges).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `frames` frames of `channels` independent pseudo-random samples in `[-amp, amp]`, never an
/// all-zero frame (so silence is not signal). Different seeds give independent signals; give
/// every client of a test its own seed. Mixing N clients without saturation needs
/// `amp <= max / N` (`max = fmt.range().1`).
pub fn client_signal(seed: u64, frames: usize, channels: usize, amp: i64) -> Signal {
    assert!(
        amp >= 1 && channels >= 1,
        "client_signal: amp >= 1 and channels >= 1"
    );
    let mut rng = SplitMix::new(seed);
    (0..frames)
        .map(|_| loop {
            let f: Vec<i64> = (0..channels).map(|_| rng.range(-amp, amp)).collect();
            if f.iter().any(|&v| v != 0) {
                break f;
            }
        })
        .collect()
}

/// A full-scale signal for saturation tests: every sample has magnitude in `[max/2, max]` with a
/// random sign (`max` being `fmt`'s rail on that side), and one sample in eight sits exactly on
/// a rail. Two of these summed saturate about half the time.
pub fn full_scale_signal(seed: u64, frames: usize, channels: usize, fmt: SlaveFormat) -> Signal {
    let (lo, hi) = fmt.range();
    let mut rng = SplitMix::new(seed ^ 0xF011_5CA1E);
    (0..frames)
        .map(|_| {
            (0..channels)
                .map(|_| {
                    let neg = rng.next_u64() & 1 == 1;
                    let rail = rng.next_u64() % 8 == 0;
                    match (neg, rail) {
                        (true, true) => lo,
                        (false, true) => hi,
                        (true, false) => rng.range(lo, lo / 2),
                        (false, false) => rng.range(hi / 2, hi),
                    }
                })
                .collect()
        })
        .collect()
}

/// A FLOAT_LE client signal: samples uniform in `[-amp, amp]` (amp > 1 exercises clipping).
/// Its samples are arbitrary floats, so the conversion's rounding matters; what the mixer must
/// sum is [`float_to_units`] of it. Frames may convert to all-zero for tiny `amp`.
pub fn float_signal(seed: u64, frames: usize, channels: usize, amp: f32) -> Vec<Vec<f32>> {
    let mut rng = SplitMix::new(seed ^ 0xF10A7);
    (0..frames)
        .map(|_| {
            (0..channels)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * amp as f64) as f32)
                .collect()
        })
        .collect()
}

/// A FLOAT_LE signal converted to `fmt`'s units by the mixer's own rule
/// ([`SlaveFormat::from_float`]): the client as the checker must see it.
pub fn float_to_units(fmt: SlaveFormat, sig: &[Vec<f32>]) -> Signal {
    sig.iter()
        .map(|f| f.iter().map(|&x| fmt.from_float(x)).collect())
        .collect()
}

/// Clamp to `fmt`'s range: what a saturating mixer stores for the sum `v`.
pub fn saturate(fmt: SlaveFormat, v: i64) -> i64 {
    let (lo, hi) = fmt.range();
    v.clamp(lo, hi)
}

/// A synthetic capture of `frames` frames: the saturated sum of `parts`, each `(at, signal)`
/// placed with its frame 0 at capture frame `at` (may be negative; what falls outside is cut),
/// silence elsewhere. Model artifacts by splitting a client into parts (a dropped frame: two
/// parts, the second one frame early; a replayed head: an extra part one buffer later).
pub fn mix(
    fmt: SlaveFormat,
    frames: usize,
    channels: usize,
    parts: &[(i64, &[Vec<i64>])],
) -> Signal {
    let mut sum = vec![vec![0i64; channels]; frames];
    for &(at, sig) in parts {
        for (k, f) in sig.iter().enumerate() {
            let p = at + k as i64;
            if p >= 0 && (p as usize) < frames {
                for (s, v) in sum[p as usize].iter_mut().zip(f) {
                    *s += v;
                }
            }
        }
    }
    for f in &mut sum {
        for s in f.iter_mut() {
            *s = saturate(fmt, *s);
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Raw files
// ---------------------------------------------------------------------------------------------

/// Write `sig` as raw interleaved samples in `fmt` (what `aplay -t raw -f <fmt>` plays).
pub fn write_raw(path: &Path, fmt: SlaveFormat, sig: &[Vec<i64>]) {
    let bytes = fmt.bytes();
    let mut b = vec![0u8; sig.iter().map(|f| f.len()).sum::<usize>() * bytes];
    let mut out = b.chunks_exact_mut(bytes);
    for f in sig {
        for &v in f {
            fmt.encode(v, out.next().unwrap());
        }
    }
    std::fs::write(path, b).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Write `sig` as raw interleaved FLOAT_LE samples.
pub fn write_raw_float(path: &Path, sig: &[Vec<f32>]) {
    let b: Vec<u8> = sig.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, b).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Read a raw interleaved capture in `fmt` with `channels` channels (a trailing partial frame
/// is ignored).
pub fn read_raw(path: &Path, fmt: SlaveFormat, channels: usize) -> Signal {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    b.chunks_exact(fmt.bytes() * channels)
        .map(|f| f.chunks_exact(fmt.bytes()).map(|s| fmt.decode(s)).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Offsets
// ---------------------------------------------------------------------------------------------

/// How a client's offset was found.
#[derive(Clone, Debug, PartialEq)]
pub struct OffsetFit {
    /// Capture frame of the client's frame 0, if the correlation peak is significant.
    pub offset: Option<i64>,
    /// The lag of the highest correlation, significant or not.
    pub best_lag: i64,
    /// Height of that peak in noise standard deviations (see [`MIN_SCORE`]).
    pub score: f64,
    /// The second-highest correlation (any other lag), in the same units. A dropped or repeated
    /// frame mid-stream splits the peak in two; a replayed head adds a small one a buffer later.
    pub runner_up: f64,
}

/// The offset of each client's frame 0 in capture frames (negative if the capture cut its head),
/// `None` where the client is not found. See [`find_offset_fits`].
pub fn find_offsets(capture: &[Vec<i64>], clients: &[&[Vec<i64>]]) -> Vec<Option<i64>> {
    find_offset_fits(capture, clients)
        .into_iter()
        .map(|f| f.offset)
        .collect()
}

/// Cross-correlate each whole client signal with the whole capture, summed over channels, and
/// take the best lag.
///
/// Why the peak is unambiguous: client signals are independent pseudo-random sequences, so at a
/// wrong lag the correlation is a sum of M·C zero-mean products (noise ~ sqrt(M·C)), while at
/// the right lag it is the client's energy (~ M·C, about half of it when two full-scale clients
/// saturate), whatever the other clients and the silence around them. A lost head or tail only
/// lowers the peak in proportion. The noise level is measured (median of |correlation| over
/// lags where the client lies wholly inside the capture) and the peak must exceed [`MIN_SCORE`]
/// times it. The exact check of every frame is then [`verify`]'s job.
///
/// One FFT length serves all clients (capture + longest client, rounded up to 2^a·3^b); two
/// channels are packed as the real and imaginary parts of one complex signal, whose complex
/// cross-correlation has the channel-summed correlation as its real part, so each client costs
/// one forward and one inverse FFT per channel pair. Clients are spread over the CPUs.
pub fn find_offset_fits(capture: &[Vec<i64>], clients: &[&[Vec<i64>]]) -> Vec<OffsetFit> {
    let none = OffsetFit {
        offset: None,
        best_lag: 0,
        score: 0.0,
        runner_up: 0.0,
    };
    let nc = capture.len();
    let longest = clients.iter().map(|c| c.len()).max().unwrap_or(0);
    if nc == 0 || longest == 0 {
        return vec![none; clients.len()];
    }
    let ch = capture[0].len();
    for (i, c) in clients.iter().enumerate() {
        assert!(
            c.iter().all(|f| f.len() == ch),
            "client {i}: frames must have {ch} channels like the capture"
        );
    }
    let n = fft_len(nc + longest - 1);
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut scratch = vec![Complex::default(); fwd.get_inplace_scratch_len()];
    let cap_spec: Vec<Vec<Complex<f64>>> = (0..ch.div_ceil(2))
        .map(|pair| {
            let mut buf = vec![Complex::default(); n];
            pack(capture, pair, &mut buf);
            fwd.process_with_scratch(&mut buf, &mut scratch);
            buf
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(clients.len());
    let mut fits = vec![none; clients.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (fwd, inv, cap_spec) = (Arc::clone(&fwd), Arc::clone(&inv), &cap_spec);
                s.spawn(move || {
                    let mut work = Work::new(n, &fwd, &inv);
                    (t..clients.len())
                        .step_by(threads)
                        .map(|i| (i, work.fit(cap_spec, clients[i], nc)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, fit) in h.join().unwrap() {
                fits[i] = fit;
            }
        }
    });
    fits
}

/// The smallest 2^a, 3·2^a or 9·2^a that is at least `need` (fast sizes for rustfft).
fn fft_len(need: usize) -> usize {
    [1usize, 3, 9]
        .iter()
        .map(|&m| {
            let mut p = m;
            while p < need {
                p *= 2;
            }
            p
        })
        .min()
        .unwrap()
}

/// Channels `2·pair` (real) and `2·pair + 1` (imaginary, if any) of `sig`, zero-padded.
fn pack(sig: &[Vec<i64>], pair: usize, buf: &mut [Complex<f64>]) {
    buf.fill(Complex::default());
    for (z, f) in buf.iter_mut().zip(sig) {
        *z = Complex::new(
            f[2 * pair] as f64,
            f.get(2 * pair + 1).map_or(0.0, |&v| v as f64),
        );
    }
}

/// One thread's FFT buffers.
struct Work {
    fwd: Arc<dyn Fft<f64>>,
    inv: Arc<dyn Fft<f64>>,
    buf: Vec<Complex<f64>>,
    acc: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Work {
    fn new(n: usize, fwd: &Arc<dyn Fft<f64>>, inv: &Arc<dyn Fft<f64>>) -> Work {
        let scratch = fwd
            .get_inplace_scratch_len()
            .max(inv.get_inplace_scratch_len());
        Work {
            fwd: Arc::clone(fwd),
            inv: Arc::clone(inv),
            buf: vec![Complex::default(); n],
            acc: vec![Complex::default(); n],
            scratch: vec![Complex::default(); scratch],
        }
    }

    fn fit(&mut self, cap_spec: &[Vec<Complex<f64>>], client: &[Vec<i64>], nc: usize) -> OffsetFit {
        let n = self.buf.len();
        let m = client.len();
        if m == 0 {
            return OffsetFit {
                offset: None,
                best_lag: 0,
                score: 0.0,
                runner_up: 0.0,
            };
        }
        self.acc.fill(Complex::default());
        for (pair, spec) in cap_spec.iter().enumerate() {
            pack(client, pair, &mut self.buf);
            self.fwd
                .process_with_scratch(&mut self.buf, &mut self.scratch);
            for ((a, c), y) in self.acc.iter_mut().zip(spec).zip(&self.buf) {
                *a += c * y.conj();
            }
        }
        self.inv
            .process_with_scratch(&mut self.acc, &mut self.scratch);
        // corr(lag) = sum_k sum_c capture[k + lag][c] * client[k][c], lag in -(m-1) ..= nc-1.
        let corr = |lag: i64| self.acc[lag.rem_euclid(n as i64) as usize].re;
        let lags = -(m as i64 - 1)..nc as i64;
        let (mut best, mut best_lag, mut second) = (f64::MIN, 0i64, f64::MIN);
        for lag in lags.clone() {
            let v = corr(lag);
            if v > best {
                second = best;
                best = v;
                best_lag = lag;
            } else if v > second {
                second = v;
            }
        }
        // Noise: lags with the whole client inside the capture, if there are enough of them.
        let noise_lags = if nc >= m && nc - m + 1 >= 64 {
            0..(nc - m) as i64 + 1
        } else {
            lags
        };
        let step = ((noise_lags.end - noise_lags.start) as usize / 65_536).max(1);
        let mut mags: Vec<f64> = noise_lags.step_by(step).map(|l| corr(l).abs()).collect();
        let mid = mags.len() / 2;
        let median = *mags.select_nth_unstable_by(mid, f64::total_cmp).1;
        let sigma = median / 0.6745;
        let in_sigmas = |v: f64| {
            if sigma > 0.0 {
                v / sigma
            } else if v > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        };
        let score = in_sigmas(best);
        OffsetFit {
            offset: (best > 0.0 && score >= MIN_SCORE).then_some(best_lag),
            best_lag,
            score,
            runner_up: in_sigmas(second),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strict check
// ---------------------------------------------------------------------------------------------

/// One wrong frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Capture frame.
    pub index: usize,
    pub expected: Vec<i64>,
    pub got: Vec<i64>,
    /// The clients due at this frame: (client, client frame).
    pub active: Vec<(usize, i64)>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {}: expected {:?}, got {:?}; active:",
            self.index, self.expected, self.got
        )?;
        if self.active.is_empty() {
            write!(f, " none")?;
        }
        for (c, k) in &self.active {
            write!(f, " c{c}[{k}]")?;
        }
        Ok(())
    }
}

/// What makes a run of wrong frames right again, if one simple change does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Explanation {
    /// These frames of `client` are not in the capture.
    Missing { client: usize, frames: Range<i64> },
    /// These frames of `client` are in the capture `by` frames later than its offset puts them
    /// (`by < 0`: earlier). At the boundary with the rest of the stream, `|by|` frames were
    /// dropped or repeated (or silence inserted).
    Shifted {
        client: usize,
        by: i64,
        frames: Range<i64>,
    },
    /// A second copy of these frames of `client` is summed in, with its frame 0 at capture frame
    /// `at` (a replayed head: `at` = offset + slave buffer).
    Extra {
        client: usize,
        at: i64,
        frames: Range<i64>,
    },
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Missing { client, frames } => {
                write!(f, "client {client}'s frames {frames:?} are missing")
            }
            Explanation::Shifted { client, by, frames } => write!(
                f,
                "client {client}'s frames {frames:?} are {} frame(s) {} than the rest of it \
                 (frames dropped or repeated at a boundary)",
                by.abs(),
                if *by > 0 { "later" } else { "earlier" }
            ),
            Explanation::Extra { client, at, frames } => write!(
                f,
                "client {client}'s frames {frames:?} are summed in a second time, its frame 0 at \
                 capture frame {at}"
            ),
        }
    }
}

/// A stretch of wrong frames (separated by fewer than 8 right ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Capture frames `start..end`, first and last wrong frame included.
    pub start: usize,
    pub end: usize,
    /// Wrong frames in it.
    pub mismatches: usize,
    pub explanation: Option<Explanation>,
}

/// Where a client was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    pub offset: Option<i64>,
    pub frames: usize,
    /// Found, and all its frames lie inside the capture.
    pub inside: bool,
}

impl fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            None => write!(f, "NOT FOUND ({} frames)", self.frames),
            Some(o) => write!(
                f,
                "offset {o}, {} frames, {}",
                self.frames,
                if self.inside {
                    "inside the capture"
                } else {
                    "NOT wholly inside the capture"
                }
            ),
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub frames_checked: usize,
    /// Wrong frames in all.
    pub mismatches: usize,
    /// The first few wrong frames.
    pub first: Vec<Mismatch>,
    /// Number of runs of wrong frames.
    pub runs_total: usize,
    /// The first few runs, explained where possible.
    pub runs: Vec<Run>,
    pub clients: Vec<ClientStatus>,
}

impl Report {
    /// Every frame right, every client found and wholly inside the capture.
    pub fn is_exact(&self) -> bool {
        self.mismatches == 0 && self.clients.iter().all(|c| c.inside)
    }
}

impl Report {
    /// One line: exact or not, how many frames are wrong, clients not found or cut, and the
    /// first run's explanation.
    pub fn summary(&self) -> String {
        let n = self.clients.len();
        if self.is_exact() {
            return format!("exact: {} frames checked, {n} clients", self.frames_checked);
        }
        let missing = self.clients.iter().filter(|c| c.offset.is_none()).count();
        let cut = self
            .clients
            .iter()
            .filter(|c| c.offset.is_some() && !c.inside)
            .count();
        let mut s = format!(
            "NOT exact: {} of {} frames wrong in {} run(s); {missing} of {n} clients not found, \
             {cut} not wholly inside",
            self.mismatches, self.frames_checked, self.runs_total
        );
        if let Some(r) = self.runs.first() {
            s += &format!("; first run {}..{}: ", r.start, r.end);
            match &r.explanation {
                Some(e) => s += &e.to_string(),
                None => s += "not explained by one simple change",
            }
        }
        s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for (i, c) in self.clients.iter().enumerate() {
            writeln!(f, "  client {i}: {c}")?;
        }
        for r in &self.runs {
            write!(f, "  run {}..{} ({} wrong): ", r.start, r.end, r.mismatches)?;
            match &r.explanation {
                Some(e) => writeln!(f, "{e}")?,
                None => writeln!(f, "not explained by one simple change")?,
            }
        }
        for m in &self.first {
            writeln!(f, "  {m}")?;
        }
        Ok(())
    }
}

/// [`find_offsets`] then [`verify`].
pub fn check(capture: &[Vec<i64>], fmt: SlaveFormat, clients: &[&[Vec<i64>]]) -> Report {
    let offsets = find_offsets(capture, clients);
    verify(capture, fmt, clients, &offsets)
}

/// Check that every capture frame is exactly the saturated sum of the frames of the clients due
/// there (client `i`'s frame `k` at capture frame `offsets[i] + k`), and silence where none is.
pub fn verify(
    capture: &[Vec<i64>],
    fmt: SlaveFormat,
    clients: &[&[Vec<i64>]],
    offsets: &[Option<i64>],
) -> Report {
    assert_eq!(clients.len(), offsets.len(), "one offset per client");
    let ctx = Ctx::new(capture, fmt, clients, offsets);
    let wrong: Vec<usize> = (0..capture.len()).filter(|&p| !ctx.nominal_ok(p)).collect();
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for &p in &wrong {
        match runs.last_mut() {
            Some(r) if p < r.end + RUN_GAP => {
                r.end = p + 1;
                *counts.last_mut().unwrap() += 1;
            }
            _ => {
                runs.push(p..p + 1);
                counts.push(1);
            }
        }
    }
    let runs_total = runs.len();
    let runs = runs
        .into_iter()
        .zip(counts)
        .take(MAX_RUNS)
        .enumerate()
        .map(|(i, (r, n))| Run {
            start: r.start,
            end: r.end,
            mismatches: n,
            explanation: ctx.explain(r, i < MAX_EXTRA_LOOKUPS),
        })
        .collect();
    Report {
        frames_checked: capture.len(),
        mismatches: wrong.len(),
        first: wrong
            .iter()
            .take(MAX_SHOWN)
            .map(|&p| ctx.mismatch(p, ctx.sat(ctx.nominal(p))))
            .collect(),
        runs_total,
        runs,
        clients: clients
            .iter()
            .zip(offsets)
            .map(|(c, &o)| ClientStatus {
                offset: o,
                frames: c.len(),
                inside: o.is_some_and(|o| o >= 0 && o + c.len() as i64 <= capture.len() as i64),
            })
            .collect(),
    }
}

/// The capture, the clients, and the un-saturated nominal sum of every capture frame.
struct Ctx<'a> {
    cap: &'a [Vec<i64>],
    fmt: SlaveFormat,
    ch: usize,
    clients: &'a [&'a [Vec<i64>]],
    offsets: &'a [Option<i64>],
    /// `sum[p * ch + c]`: sum of the client samples due at capture frame `p`, channel `c`.
    sum: Vec<i64>,
}

impl<'a> Ctx<'a> {
    fn new(
        cap: &'a [Vec<i64>],
        fmt: SlaveFormat,
        clients: &'a [&'a [Vec<i64>]],
        offsets: &'a [Option<i64>],
    ) -> Ctx<'a> {
        let ch = cap.first().map_or(0, |f| f.len());
        let mut sum = vec![0i64; cap.len() * ch];
        for (i, (c, o)) in clients.iter().zip(offsets).enumerate() {
            let Some(o) = o.filter(|_| ch > 0) else {
                continue;
            };
            for (k, f) in c.iter().enumerate() {
                assert_eq!(f.len(), ch, "client {i}: frames must have {ch} channels");
                let p = o + k as i64;
                if p >= 0 && (p as usize) < cap.len() {
                    let p = p as usize;
                    for (s, v) in sum[p * ch..(p + 1) * ch].iter_mut().zip(f) {
                        *s += v;
                    }
                }
            }
        }
        Ctx {
            cap,
            fmt,
            ch,
            clients,
            offsets,
            sum,
        }
    }

    fn nominal(&self, p: usize) -> &[i64] {
        &self.sum[p * self.ch..(p + 1) * self.ch]
    }

    fn sat(&self, v: &[i64]) -> Vec<i64> {
        v.iter().map(|&s| saturate(self.fmt, s)).collect()
    }

    fn nominal_ok(&self, p: usize) -> bool {
        let got = &self.cap[p];
        self.nominal(p)
            .iter()
            .zip(got)
            .all(|(&s, &g)| saturate(self.fmt, s) == g)
            && got.len() == self.ch
    }

    /// Client `i`'s frame due at capture frame `p` if its frame 0 is at `base`.
    fn frame_at(&self, i: usize, base: i64, p: usize) -> Option<&'a [i64]> {
        let k = p as i64 - base;
        let c: &'a [Vec<i64>] = self.clients[i];
        (k >= 0 && (k as usize) < c.len()).then(|| c[k as usize].as_slice())
    }

    fn mismatch(&self, p: usize, expected: Vec<i64>) -> Mismatch {
        Mismatch {
            index: p,
            expected,
            got: self.cap[p].clone(),
            active: self
                .offsets
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    let k = p as i64 - (*o)?;
                    (k >= 0 && (k as usize) < self.clients[i].len()).then_some((i, k))
                })
                .collect(),
        }
    }

    /// Do frames `r` match with client `remove.0` taken out (frame 0 at `remove.1`) and/or
    /// client `add.0` put in (frame 0 at `add.1`)?
    fn matches_with(
        &self,
        r: &Range<usize>,
        remove: Option<(usize, i64)>,
        add: Option<(usize, i64)>,
    ) -> bool {
        let mut v = vec![0i64; self.ch];
        r.clone().all(|p| {
            v.copy_from_slice(self.nominal(p));
            if let Some(f) = remove.and_then(|(i, b)| self.frame_at(i, b, p)) {
                v.iter_mut().zip(f).for_each(|(s, x)| *s -= x);
            }
            if let Some(f) = add.and_then(|(i, b)| self.frame_at(i, b, p)) {
                v.iter_mut().zip(f).for_each(|(s, x)| *s += x);
            }
            v.iter()
                .zip(&self.cap[p])
                .all(|(&s, &g)| saturate(self.fmt, s) == g)
        })
    }

    /// Client frames covered by capture frames `r` for frame 0 at `base`.
    fn covered(&self, i: usize, base: i64, r: &Range<usize>) -> Range<i64> {
        let m = self.clients[i].len() as i64;
        (r.start as i64 - base).clamp(0, m)..(r.end as i64 - base).clamp(0, m)
    }

    fn explain(&self, r: Range<usize>, lookup: bool) -> Option<Explanation> {
        let overlaps = |i: usize, base: i64| !self.covered(i, base, &r).is_empty();
        let found: Vec<(usize, i64)> = self
            .offsets
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((i, (*o)?)))
            .collect();
        for &(i, o) in &found {
            if overlaps(i, o) && self.matches_with(&r, Some((i, o)), None) {
                return Some(Explanation::Missing {
                    client: i,
                    frames: self.covered(i, o, &r),
                });
            }
        }
        for d in (1..=MAX_SHIFT).flat_map(|d| [d, -d]) {
            for &(i, o) in &found {
                if (overlaps(i, o) || overlaps(i, o + d))
                    && self.matches_with(&r, Some((i, o)), Some((i, o + d)))
                {
                    return Some(Explanation::Shifted {
                        client: i,
                        by: d,
                        frames: self.covered(i, o + d, &r),
                    });
                }
            }
        }
        if !lookup {
            return None;
        }
        // An extra copy: the residual of a wrong frame where nothing saturates is a client
        // frame, which gives the copy's position; then check the whole run.
        let (lo, hi) = self.fmt.range();
        let usable = r.clone().filter(|&p| {
            !self.nominal_ok(p)
                && !self.cap[p].iter().any(|&g| g == lo || g == hi)
                && self.nominal(p).iter().all(|&s| s == saturate(self.fmt, s))
        });
        for p in usable.take(2) {
            let residual: Vec<i64> = self.cap[p]
                .iter()
                .zip(self.nominal(p))
                .map(|(g, s)| g - s)
                .collect();
            for (j, c) in self.clients.iter().enumerate() {
                for (m, _) in c
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| **f == residual)
                    .take(4)
                {
                    let at = p as i64 - m as i64;
                    if self.matches_with(&r, None, Some((j, at))) {
                        return Some(Explanation::Extra {
                            client: j,
                            at,
                            frames: self.covered(j, at, &r),
                        });
                    }
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// dmix edge model
// ---------------------------------------------------------------------------------------------

/// One client under the edge model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeClient {
    pub status: ClientStatus,
    /// Frames lost at its head (never heard).
    pub head_lost: usize,
    /// Frames lost at its tail.
    pub tail_lost: usize,
    /// Lost head frames heard one slave buffer later, summed on top.
    pub ghost_frames: usize,
}

impl fmt::Display for EdgeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if self.status.offset.is_some() {
            write!(
                f,
                "; head lost {}, tail lost {}, head replayed one buffer later: {} frames",
                self.head_lost, self.tail_lost, self.ghost_frames
            )?;
        }
        Ok(())
    }
}

/// The result of [`verify_with_edges`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeReport {
    pub frames_checked: usize,
    pub slave_buffer: usize,
    pub slack: usize,
    pub clients: Vec<EdgeClient>,
    /// Frames the edge model cannot explain (must be 0 for a sane capture).
    pub unexplained: usize,
    /// The first few of them (expected: the sum under the model's state at that frame).
    pub first_unexplained: Vec<Mismatch>,
}

impl EdgeReport {
    /// Every client found and every frame explained, edge artifacts allowed.
    pub fn is_sane(&self) -> bool {
        self.unexplained == 0 && self.clients.iter().all(|c| c.status.offset.is_some())
    }

    /// Sane, with no edge artifact and every client wholly inside the capture.
    pub fn is_exact(&self) -> bool {
        self.is_sane()
            && self.clients.iter().all(|c| {
                c.status.inside && c.head_lost == 0 && c.tail_lost == 0 && c.ghost_frames == 0
            })
    }
}

impl EdgeReport {
    /// One line: exact, sane (edge artifacts only) or not sane, the artifacts per client
    /// (`cN head H tail T ghost G`), and the first unexplained frame.
    pub fn summary(&self) -> String {
        let state = if self.is_exact() {
            "exact"
        } else if self.is_sane() {
            "sane (edge artifacts only)"
        } else {
            "NOT sane"
        };
        let mut s = format!(
            "{state}: {} frames checked, {} unexplained (slack {}, buffer {})",
            self.frames_checked, self.unexplained, self.slack, self.slave_buffer
        );
        for (i, c) in self.clients.iter().enumerate() {
            if c.status.offset.is_none() {
                s += &format!("; c{i} NOT FOUND");
            } else if !c.status.inside {
                s += &format!("; c{i} not wholly inside");
            }
            if c.head_lost + c.tail_lost + c.ghost_frames > 0 {
                s += &format!(
                    "; c{i} head {} tail {} ghost {}",
                    c.head_lost, c.tail_lost, c.ghost_frames
                );
            }
        }
        if let Some(m) = self.first_unexplained.first() {
            s += &format!("; first unexplained {m}");
        }
        s
    }
}

impl fmt::Display for EdgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for (i, c) in self.clients.iter().enumerate() {
            writeln!(f, "  client {i}: {c}")?;
        }
        for m in &self.first_unexplained {
            writeln!(f, "  unexplained {m}")?;
        }
        Ok(())
    }
}

/// [`find_offsets`], then [`verify_edges_at`]: the check for alsa-lib's dmix.
pub fn verify_with_edges(
    capture: &[Vec<i64>],
    fmt: SlaveFormat,
    clients: &[&[Vec<i64>]],
    slave_buffer: usize,
    slack: usize,
) -> EdgeReport {
    let offsets = find_offsets(capture, clients);
    verify_edges_at(capture, fmt, clients, &offsets, slave_buffer, slack)
}

/// Per-client state of the edge model.
#[derive(Clone, Default)]
struct Edge {
    /// Head: the client is being heard (default at its frame 0).
    started: bool,
    /// Some frame since it started would be wrong without it (so it can no longer "un-start").
    evidenced: bool,
    head_lost: usize,
    stopped: bool,
    tail_lost: usize,
    ghost_on: bool,
    ghost_frames: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flip {
    Unstart,
    Start,
    Stop,
    Ghost,
}

/// Like [`verify`], but a client may lose up to `slack` frames at its head and at its tail, and a
/// lost head frame `k` may also be heard at `offset + slave_buffer + k`, summed on top.
///
/// The capture is walked frame by frame with a state per client (head started, tail stopped,
/// ghost on). Where the current state does not give the captured frame, the smallest set of
/// allowed state changes that does is searched (bounded; whole groups such as "all clients
/// starting here" are tried early): a head may start (once, within `slack` frames of frame 0),
/// be found not to have started (while no frame has needed it yet), a tail may stop (once,
/// within `slack` of its end), a ghost may switch on or off (only over lost head frames). Frames
/// no such change explains are counted as unexplained. With zero slack everything is strict.
pub fn verify_edges_at(
    capture: &[Vec<i64>],
    fmt: SlaveFormat,
    clients: &[&[Vec<i64>]],
    offsets: &[Option<i64>],
    slave_buffer: usize,
    slack: usize,
) -> EdgeReport {
    assert_eq!(clients.len(), offsets.len(), "one offset per client");
    let ctx = Ctx::new(capture, fmt, clients, offsets);
    let ch = ctx.ch;
    let nc = capture.len();
    let (b, s) = (slave_buffer as i64, slack as i64);
    // Frames where some client's edge state matters.
    let mut zone = vec![false; nc];
    let mut mark = |r: Range<i64>| {
        for p in r.start.max(0)..r.end.min(nc as i64) {
            zone[p as usize] = true;
        }
    };
    for (c, o) in clients.iter().zip(offsets) {
        let (Some(o), m) = (*o, c.len() as i64) else {
            continue;
        };
        if slack > 0 {
            mark(o..o + (s + 1).min(m));
            mark(o + (m - s).max(0)..o + m);
            if slave_buffer > 0 {
                mark(o + b..o + b + s.min(m));
            }
        }
    }
    let mut st = vec![
        Edge {
            started: true,
            ..Edge::default()
        };
        clients.len()
    ];
    let mut unexplained = 0usize;
    let mut first_unexplained = Vec::new();
    let mut base = vec![0i64; ch];
    let mut vars: Vec<(usize, Flip, i64)> = Vec::new(); // (client, flip, client frame)
    let mut deltas: Vec<i64> = Vec::new();
    for p in 0..nc {
        if !zone[p] {
            if !ctx.nominal_ok(p) {
                unexplained += 1;
                if first_unexplained.len() < MAX_SHOWN {
                    first_unexplained.push(ctx.mismatch(p, ctx.sat(ctx.nominal(p))));
                }
            }
            continue;
        }
        base.fill(0);
        vars.clear();
        deltas.clear();
        for (i, (c, o)) in clients.iter().zip(offsets).enumerate() {
            let Some(o) = *o else { continue };
            let (k, m, e) = (p as i64 - o, c.len() as i64, &mut st[i]);
            if (0..m).contains(&k) {
                let f = &c[k as usize];
                if k >= s && !e.started {
                    e.started = true;
                    e.head_lost = slack;
                }
                let present = e.started && !e.stopped;
                if present {
                    base.iter_mut().zip(f).for_each(|(a, x)| *a += x);
                }
                if k < s {
                    if e.started && !e.evidenced {
                        vars.push((i, Flip::Unstart, k));
                        deltas.extend(f.iter().map(|x| -x));
                    } else if !e.started {
                        vars.push((i, Flip::Start, k));
                        deltas.extend(f);
                    }
                }
                if k >= m - s && present {
                    vars.push((i, Flip::Stop, k));
                    deltas.extend(f.iter().map(|x| -x));
                }
            }
            let kg = k - b;
            if slave_buffer > 0 && kg >= 0 && kg < m && e.started && kg < e.head_lost as i64 {
                let f = &c[kg as usize];
                let sign = if e.ghost_on {
                    base.iter_mut().zip(f).for_each(|(a, x)| *a += x);
                    -1
                } else {
                    1
                };
                vars.push((i, Flip::Ghost, kg));
                deltas.extend(f.iter().map(|x| sign * x));
            }
        }
        let matches = |v: &[i64]| {
            v.iter()
                .zip(&capture[p])
                .all(|(&a, &g)| saturate(fmt, a) == g)
        };
        let flips = if matches(&base) {
            Some(Vec::new())
        } else {
            let budget = if unexplained > 256 { 64 } else { EDGE_BUDGET };
            search_flips(&base, &deltas, &vars, ch, budget, &matches)
        };
        let Some(flips) = flips else {
            unexplained += 1;
            if first_unexplained.len() < MAX_SHOWN {
                first_unexplained.push(ctx.mismatch(p, ctx.sat(&base)));
            }
            continue;
        };
        let mut fin = base.clone();
        for &v in &flips {
            let (i, flip, k) = vars[v];
            fin.iter_mut()
                .zip(&deltas[v * ch..(v + 1) * ch])
                .for_each(|(a, d)| *a += d);
            let e = &mut st[i];
            match flip {
                Flip::Unstart => e.started = false,
                Flip::Start => {
                    e.started = true;
                    e.head_lost = k as usize;
                }
                Flip::Stop => {
                    e.stopped = true;
                    e.tail_lost = clients[i].len() - k as usize;
                }
                Flip::Ghost => e.ghost_on = !e.ghost_on,
            }
        }
        // Count ghosts heard; note heads this frame could not do without.
        for (v, &(i, flip, _)) in vars.iter().enumerate() {
            let e = &mut st[i];
            match flip {
                Flip::Ghost if e.ghost_on => e.ghost_frames += 1,
                Flip::Unstart | Flip::Start if e.started && !e.evidenced => {
                    let d = &deltas[v * ch..(v + 1) * ch];
                    let sign = if flip == Flip::Start { -1 } else { 1 };
                    let without: Vec<i64> = fin.iter().zip(d).map(|(a, x)| a + sign * x).collect();
                    if !matches(&without) {
                        e.evidenced = true;
                    }
                }
                _ => {}
            }
        }
    }
    EdgeReport {
        frames_checked: nc,
        slave_buffer,
        slack,
        clients: clients
            .iter()
            .zip(offsets)
            .zip(&st)
            .map(|((c, &o), e)| EdgeClient {
                status: ClientStatus {
                    offset: o,
                    frames: c.len(),
                    inside: o.is_some_and(|o| o >= 0 && o + c.len() as i64 <= nc as i64),
                },
                head_lost: if o.is_some() { e.head_lost } else { 0 },
                tail_lost: e.tail_lost,
                ghost_frames: e.ghost_frames,
            })
            .collect(),
        unexplained,
        first_unexplained,
    }
}

/// The smallest set of variables (indices into `vars`) whose deltas added to `base` make
/// `matches` true: singles, pairs, then whole groups of one kind, then larger sets, within
/// `budget` tries.
fn search_flips(
    base: &[i64],
    deltas: &[i64],
    vars: &[(usize, Flip, i64)],
    ch: usize,
    budget: usize,
    matches: &dyn Fn(&[i64]) -> bool,
) -> Option<Vec<usize>> {
    let nv = vars.len();
    let mut tries = 0usize;
    let mut v = vec![0i64; ch];
    let mut try_set = |set: &[usize], tries: &mut usize| {
        *tries += 1;
        v.copy_from_slice(base);
        for &i in set {
            v.iter_mut()
                .zip(&deltas[i * ch..(i + 1) * ch])
                .for_each(|(a, d)| *a += d);
        }
        matches(&v)
    };
    let groups: Vec<Vec<usize>> = [Flip::Unstart, Flip::Start, Flip::Stop, Flip::Ghost]
        .iter()
        .map(|&g| (0..nv).filter(|&i| vars[i].1 == g).collect::<Vec<_>>())
        .filter(|g| g.len() > 2)
        .collect();
    for size in 1..=nv {
        if size == 3 {
            for g in &groups {
                if try_set(g, &mut tries) {
                    return Some(g.clone());
                }
            }
        }
        // All subsets of `size` variables, in lexicographic order.
        let mut idx: Vec<usize> = (0..size).collect();
        loop {
            if tries >= budget {
                return None;
            }
            if try_set(&idx, &mut tries) {
                return Some(idx);
            }
            let Some(j) = (0..size).rev().find(|&j| idx[j] < nv - size + j) else {
                break;
            };
            idx[j] += 1;
            for t in j + 1..size {
                idx[t] = idx[t - 1] + 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn refs(sigs: &[Signal]) -> Vec<&[Vec<i64>]> {
        sigs.iter().map(|s| s.as_slice()).collect()
    }

    /// `n` clients of `frames` frames at `offsets`, mixed into a capture with silence around.
    fn scene(
        fmt: SlaveFormat,
        n: usize,
        frames: usize,
        offsets: &[i64],
        cap_len: usize,
    ) -> (Vec<Signal>, Signal) {
        let amp = fmt.range().1 / n as i64;
        let sigs: Vec<Signal> = (0..n)
            .map(|i| client_signal(100 + i as u64, frames, 2, amp))
            .collect();
        let parts: Vec<(i64, &[Vec<i64>])> = offsets
            .iter()
            .zip(&sigs)
            .map(|(&o, s)| (o, s.as_slice()))
            .collect();
        let cap = mix(fmt, cap_len, 2, &parts);
        (sigs, cap)
    }

    #[test]
    fn signals_are_deterministic_bounded_and_never_silent() {
        let a = client_signal(1, 5000, 2, 3);
        assert_eq!(a, client_signal(1, 5000, 2, 3));
        assert_ne!(a, client_signal(2, 5000, 2, 3));
        assert!(a.iter().flatten().all(|v| (-3..=3).contains(v)));
        assert!(a.iter().all(|f| f.iter().any(|&v| v != 0)));
        assert!(a.iter().flatten().any(|&v| v == 3) && a.iter().flatten().any(|&v| v == -3));
        for fmt in SlaveFormat::ALL {
            let (lo, hi) = fmt.range();
            let f = full_scale_signal(3, 2000, 2, fmt);
            assert!(f
                .iter()
                .flatten()
                .all(|&v| v >= lo && v <= hi && v.abs() >= hi / 2));
            assert!(f.iter().flatten().any(|&v| v == lo) && f.iter().flatten().any(|&v| v == hi));
        }
    }

    #[test]
    fn raw_files_round_trip_in_every_format() {
        let dir = std::env::temp_dir().join(format!("mixcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for fmt in SlaveFormat::ALL {
            let sig = full_scale_signal(9, 1000, 3, fmt);
            let path = dir.join("sig.raw");
            write_raw(&path, fmt, &sig);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                3000 * fmt.bytes()
            );
            assert_eq!(read_raw(&path, fmt, 3), sig, "{fmt:?}");
        }
        let fs = float_signal(4, 100, 2, 1.5);
        let path = dir.join("f.raw");
        write_raw_float(&path, &fs);
        let b = std::fs::read(&path).unwrap();
        assert_eq!(b.len(), 800);
        assert_eq!(f32::from_le_bytes(b[4..8].try_into().unwrap()), fs[0][1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn simultaneous_clients_are_exact_in_several_formats() {
        let fmts = [
            SlaveFormat::S16Le,
            SlaveFormat::S32Be,
            SlaveFormat::S24_3Le,
            SlaveFormat::U8,
        ];
        for (n, fmt) in [2, 4, 8, 16].into_iter().zip(fmts) {
            let offsets = vec![1234i64; n];
            let (sigs, cap) = scene(fmt, n, 20_000, &offsets, 24_000);
            let rep = check(&cap, fmt, &refs(&sigs));
            assert!(rep.is_exact(), "{n} clients {fmt:?}: {rep}");
            assert!(rep.clients.iter().all(|c| c.offset == Some(1234)), "{rep}");
            assert_eq!(rep.frames_checked, 24_000);
        }
    }

    #[test]
    fn staggered_clients_are_exact() {
        for (n, fmt) in [
            (2, SlaveFormat::S16Be),
            (4, SlaveFormat::S24Le),
            (16, SlaveFormat::S16Le),
        ] {
            let offsets: Vec<i64> = (0..n as i64).map(|i| 300 + i * 1777 + i * i * 13).collect();
            let (sigs, cap) = scene(fmt, n, 15_000, &offsets, 50_000);
            let found = find_offsets(&cap, &refs(&sigs));
            assert_eq!(found, offsets.iter().map(|&o| Some(o)).collect::<Vec<_>>());
            let rep = verify(&cap, fmt, &refs(&sigs), &found);
            assert!(rep.is_exact(), "{rep}");
        }
    }

    #[test]
    fn full_scale_clients_saturate_exactly() {
        for fmt in [SlaveFormat::S16Le, SlaveFormat::S24Le, SlaveFormat::U8] {
            let a = full_scale_signal(1, 20_000, 2, fmt);
            let b = full_scale_signal(2, 15_000, 2, fmt);
            let cap = mix(fmt, 30_000, 2, &[(500, &a), (4000, &b)]);
            let (lo, hi) = fmt.range();
            assert!(
                cap.iter()
                    .flatten()
                    .filter(|&&v| v == lo || v == hi)
                    .count()
                    > 10_000
            );
            let rep = check(&cap, fmt, &[&a, &b]);
            assert!(rep.is_exact(), "{fmt:?}: {rep}");
            assert_eq!(rep.clients[1].offset, Some(4000));
        }
    }

    #[test]
    fn float_clients_are_checked_in_converted_units() {
        let fmt = SlaveFormat::S24_3Le;
        let fa = float_signal(5, 10_000, 2, 0.5);
        let fb = float_signal(6, 10_000, 2, 0.4);
        let (a, b) = (float_to_units(fmt, &fa), float_to_units(fmt, &fb));
        let cap = mix(fmt, 12_000, 2, &[(100, &a), (1500, &b)]);
        assert!(check(&cap, fmt, &[&a, &b]).is_exact());
    }

    #[test]
    fn a_head_cut_by_the_capture_start_gives_a_negative_offset() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, cap) = scene(fmt, 3, 10_000, &[-2000, 0, 3000], 14_000);
        let rep = check(&cap, fmt, &refs(&sigs));
        assert_eq!(rep.clients[0].offset, Some(-2000));
        assert!(!rep.clients[0].inside && rep.clients[2].inside);
        assert_eq!(rep.mismatches, 0);
        assert!(!rep.is_exact());
    }

    #[test]
    fn a_dropped_frame_is_found_and_located() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, _) = scene(fmt, 4, 20_000, &[0; 4], 1);
        let o = 700i64;
        // Client 2 loses its frame 14000: frames 14001.. come one frame early.
        let c = &sigs[2];
        let cap = mix(
            fmt,
            25_000,
            2,
            &[
                (o, &sigs[0]),
                (o, &sigs[1]),
                (o, &c[..14_000]),
                (o + 14_000, &c[14_001..]),
                (o, &sigs[3]),
            ],
        );
        let rep = check(&cap, fmt, &refs(&sigs));
        assert!(!rep.is_exact());
        assert_eq!(rep.clients[2].offset, Some(o), "{rep}");
        assert_eq!(rep.runs_total, 1, "{rep}");
        let r = &rep.runs[0];
        assert_eq!(r.start as i64, o + 14_000, "{rep}");
        assert_eq!(
            r.explanation,
            Some(Explanation::Shifted {
                client: 2,
                by: -1,
                frames: 14_001..20_000
            }),
            "{rep}"
        );
        assert!(rep.first[0].active.contains(&(2, 14_000)));
        assert!(!rep.summary().contains('\n'));
        assert!(
            rep.summary().contains("client 2's frames 14001..20000"),
            "{rep}"
        );
    }

    #[test]
    fn a_repeated_frame_is_found_and_located() {
        let fmt = SlaveFormat::S32Le;
        let (sigs, _) = scene(fmt, 2, 20_000, &[0; 2], 1);
        let c = &sigs[0];
        // Frame 15000 of client 0 plays twice; the later part is the shorter one, so the
        // correlation picks the head's offset.
        let cap = mix(
            fmt,
            26_000,
            2,
            &[
                (900, &c[..=15_000]),
                (900 + 15_001, &c[15_000..]),
                (2000, &sigs[1]),
            ],
        );
        let rep = check(&cap, fmt, &refs(&sigs));
        assert_eq!(rep.clients[0].offset, Some(900), "{rep}");
        assert_eq!(
            rep.runs[0].explanation,
            Some(Explanation::Shifted {
                client: 0,
                by: 1,
                frames: 15_000..20_000
            }),
            "{rep}"
        );
        assert_eq!(rep.runs[0].start, 900 + 15_001);
    }

    #[test]
    fn a_repeat_early_in_the_stream_is_explained_from_the_other_side() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, _) = scene(fmt, 2, 20_000, &[0; 2], 1);
        let c = &sigs[1];
        let cap = mix(
            fmt,
            26_000,
            2,
            &[(0, &sigs[0]), (100, &c[..=3000]), (3101, &c[3000..])],
        );
        let rep = check(&cap, fmt, &refs(&sigs));
        // The longer part wins: offset 101, and the head is one frame earlier than that.
        assert_eq!(rep.clients[1].offset, Some(101), "{rep}");
        assert_eq!(
            rep.runs[0].explanation,
            Some(Explanation::Shifted {
                client: 1,
                by: -1,
                frames: 0..3001
            }),
            "{rep}"
        );
    }

    #[test]
    fn one_lsb_off_is_one_unexplained_frame() {
        let fmt = SlaveFormat::S24Le;
        let (sigs, mut cap) = scene(fmt, 8, 12_000, &[50; 8], 13_000);
        cap[7777][1] += 1;
        let rep = check(&cap, fmt, &refs(&sigs));
        assert_eq!(rep.mismatches, 1, "{rep}");
        let m = &rep.first[0];
        assert_eq!(m.index, 7777);
        assert_eq!(m.got[1] - m.expected[1], 1);
        assert_eq!(m.got[0], m.expected[0]);
        assert_eq!(m.active.len(), 8);
        assert_eq!(rep.runs[0].explanation, None);
        // Noise in the silence after the clients is caught too.
        cap[7777][1] -= 1;
        cap[12_500][0] = -1;
        let rep = check(&cap, fmt, &refs(&sigs));
        assert_eq!((rep.mismatches, rep.first[0].index), (1, 12_500), "{rep}");
        assert!(rep.first[0].active.is_empty());
    }

    #[test]
    fn a_replayed_head_is_an_extra_copy_one_buffer_later() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, _) = scene(fmt, 2, 20_000, &[0; 2], 1);
        let (a, b) = (&sigs[0], &sigs[1]);
        let cap = mix(
            fmt,
            25_000,
            2,
            &[(1000, a), (1000 + 4096, &a[..192]), (1300, b)],
        );
        let rep = check(&cap, fmt, &refs(&sigs));
        assert_eq!(rep.mismatches, 192, "{rep}");
        assert_eq!(
            rep.runs[0].explanation,
            Some(Explanation::Extra {
                client: 0,
                at: 1000 + 4096,
                frames: 0..192
            }),
            "{rep}"
        );
    }

    #[test]
    fn an_absent_client_is_not_found() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, _) = scene(fmt, 4, 20_000, &[0; 4], 1);
        let cap = mix(
            fmt,
            22_000,
            2,
            &[(10, &sigs[0]), (10, &sigs[1]), (10, &sigs[3])],
        );
        let fits = find_offset_fits(&cap, &refs(&sigs));
        assert_eq!(fits[2].offset, None, "{fits:?}");
        assert!(fits[2].score < MIN_SCORE / 2.0, "{fits:?}");
        assert!(
            fits.iter()
                .enumerate()
                .all(|(i, f)| i == 2 || f.score > 50.0),
            "{fits:?}"
        );
        let rep = verify(
            &cap,
            fmt,
            &refs(&sigs),
            &fits.iter().map(|f| f.offset).collect::<Vec<_>>(),
        );
        assert!(!rep.is_exact());
        assert_eq!(rep.mismatches, 0);
        assert!(rep.to_string().contains("client 2: NOT FOUND"), "{rep}");
        // And a lost head of 192 frames does not stop the correlation.
        let cap = mix(fmt, 22_000, 2, &[(10 + 192, &sigs[2][192..])]);
        assert_eq!(find_offsets(&cap, &[&sigs[2]]), vec![Some(10)]);
    }

    #[test]
    fn the_dmix_edge_model_accepts_a_lost_head_and_its_ghost() {
        let fmt = SlaveFormat::S16Le;
        let (sigs, _) = scene(fmt, 2, 20_000, &[0; 2], 1);
        let (a, b) = (&sigs[0], &sigs[1]);
        let (oa, ob) = (1000i64, 1000 + 24_000);
        let cap = mix(
            fmt,
            50_000,
            2,
            &[(oa + 192, &a[192..]), (oa + 4096, &a[..192]), (ob, b)],
        );
        let e = verify_with_edges(&cap, fmt, &refs(&sigs), 4096, 1024);
        assert!(e.is_sane() && !e.is_exact(), "{e}");
        let c = &e.clients[0];
        assert_eq!(
            (c.head_lost, c.tail_lost, c.ghost_frames),
            (192, 0, 192),
            "{e}"
        );
        assert_eq!(c.status.offset, Some(oa));
        assert_eq!(e.clients[1].head_lost + e.clients[1].ghost_frames, 0, "{e}");
        assert!(e.to_string().contains("head lost 192"), "{e}");
        assert!(e.summary().contains("c0 head 192 tail 0 ghost 192"), "{e}");
        // The strict check calls it wrong; with zero slack the edge model does too.
        assert!(!check(&cap, fmt, &refs(&sigs)).is_exact());
        assert_eq!(
            verify_with_edges(&cap, fmt, &refs(&sigs), 4096, 0).unexplained,
            384
        );
        // An interior error is not an edge artifact.
        let mut bad = cap.clone();
        bad[(ob + 9000) as usize][0] ^= 4;
        let e = verify_with_edges(&bad, fmt, &refs(&sigs), 4096, 1024);
        assert!(!e.is_sane(), "{e}");
        assert_eq!(e.unexplained, 1, "{e}");
        assert_eq!(e.first_unexplained[0].index, (ob + 9000) as usize);
        // A head lost beyond the slack is not accepted either.
        let e = verify_with_edges(&cap, fmt, &refs(&sigs), 4096, 100);
        assert!(!e.is_sane(), "{e}");
    }

    #[test]
    fn the_dmix_edge_model_untangles_simultaneous_heads_and_tails() {
        let fmt = SlaveFormat::S16Le;
        let n = 16;
        let (sigs, _) = scene(fmt, n, 30_000, &[0; 16], 1);
        let o = 2000i64;
        // Heads lost (six clients lose 192, as a jiffy quantum does to several at once), two
        // with a (partial) ghost, and two tails lost.
        let heads = [
            192, 0, 192, 384, 0, 192, 768, 0, 192, 0, 0, 192, 576, 0, 0, 192,
        ];
        let ghosts = [192, 0, 0, 384, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100];
        let tails = [0, 0, 0, 0, 0, 0, 0, 704, 0, 0, 0, 0, 0, 0, 448, 0];
        let mut parts: Vec<(i64, &[Vec<i64>])> = Vec::new();
        for i in 0..n {
            let s = &sigs[i];
            parts.push((o + heads[i] as i64, &s[heads[i]..s.len() - tails[i]]));
            if ghosts[i] > 0 {
                parts.push((
                    o + 4096 + (heads[i] - ghosts[i]) as i64,
                    &s[heads[i] - ghosts[i]..heads[i]],
                ));
            }
        }
        let cap = mix(fmt, 40_000, 2, &parts);
        let e = verify_with_edges(&cap, fmt, &refs(&sigs), 4096, 1024);
        assert!(e.is_sane(), "{e}");
        for i in 0..n {
            let c = &e.clients[i];
            assert_eq!(
                (c.head_lost, c.tail_lost, c.ghost_frames),
                (heads[i], tails[i], ghosts[i]),
                "client {i}: {e}"
            );
        }
    }

    #[test]
    fn the_dmix_edge_model_with_saturating_clients() {
        let fmt = SlaveFormat::S16Le;
        let a = full_scale_signal(11, 20_000, 2, fmt);
        let b = full_scale_signal(12, 20_000, 2, fmt);
        let cap = mix(
            fmt,
            30_000,
            2,
            &[
                (1000 + 384, &a[384..19_500]),
                (1000 + 4096, &a[..384]),
                (1000, &b),
            ],
        );
        let e = verify_with_edges(&cap, fmt, &[&a, &b], 4096, 1024);
        assert!(e.is_sane(), "{e}");
        let c = &e.clients[0];
        // Saturation can hide a client on a frame or two at an edge; never more than that.
        assert!((383..=386).contains(&c.head_lost), "{e}");
        assert!((497..=500).contains(&c.tail_lost), "{e}");
        assert!((380..=384).contains(&c.ghost_frames), "{e}");
    }

    /// The size of a long VM test: 16 clients of 2^18 frames, staggered by 1000 frames, in a
    /// 2^19-frame stereo capture.
    #[test]
    fn sixteen_clients_in_half_a_million_frames() {
        let fmt = SlaveFormat::S16Le;
        let offsets: Vec<i64> = (0..16).map(|i| 20_000 + i * 1000).collect();
        let t = Instant::now();
        let (sigs, cap) = scene(fmt, 16, 1 << 18, &offsets, 1 << 19);
        let t_gen = t.elapsed();
        let t = Instant::now();
        let fits = find_offset_fits(&cap, &refs(&sigs));
        let t_find = t.elapsed();
        let t = Instant::now();
        let found: Vec<Option<i64>> = fits.iter().map(|f| f.offset).collect();
        let rep = verify(&cap, fmt, &refs(&sigs), &found);
        let t_verify = t.elapsed();
        let t = Instant::now();
        let e = verify_with_edges(&cap, fmt, &refs(&sigs), 4096, 1024);
        let t_edges = t.elapsed();
        eprintln!(
            "16 clients x 2^18 frames in 2^19: generate {t_gen:?}, find_offsets {t_find:?}, \
             verify {t_verify:?}, verify_with_edges (incl. offsets) {t_edges:?}; \
             scores {:.0}..{:.0}",
            fits.iter().map(|f| f.score).fold(f64::MAX, f64::min),
            fits.iter().map(|f| f.score).fold(0.0, f64::max),
        );
        assert!(rep.is_exact(), "{rep}");
        assert!(e.is_exact(), "{e}");
        assert_eq!(found, offsets.iter().map(|&o| Some(o)).collect::<Vec<_>>());
    }
}
