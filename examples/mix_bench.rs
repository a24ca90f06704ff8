//! Host micro-benchmark of accumulation schemes, to choose one by measurement:
//!
//! - `rdmix`: the lap-tagged CAS accumulator + publish of `src/mix.rs` (the real kernel);
//! - `dmix-lockfree`: dmix's lock-free scheme re-implemented here for comparison (cmpxchg the
//!   DMA sample 0→1 to detect a cleared slot, subtract the stale sum, atomic add, publish);
//! - `mutex`: a plain add into an i32 sum ring under one process-wide lock (dmix's default
//!   build takes a SysV semaphore around each mix call; a futex-based mutex is its best case).
//!
//! Each of W writer threads mixes the same number of frames (S16, stereo, 1024-frame chunks)
//! into one shared 4096-frame ring; the figure is wall time per client sample.
//!
//! `cargo run --release --example mix_bench`
//!
//! Two more modes measure the real kernels of `src/mix.rs` for every slave format (and a
//! FLOAT_LE client on an S16_LE slave), used by the side-by-side benchmark (tests/bench/run.sh):
//!
//! - `mix_bench kernels`: wall time per client sample for 1, 2 and 8 writers mixing into one
//!   ring at the same positions; lines `kernel FORMAT W NS_PER_SAMPLE`;
//! - `mix_bench count FORMAT CHUNKS`: one writer mixes CHUNKS chunks, nothing else (FORMAT
//!   `dmix-lockfree`: the dmix model above, S16); run under
//!   `valgrind --tool=callgrind` at two chunk counts, the difference in instructions divided by
//!   the difference in samples is the kernel's instructions per client sample.

use std::sync::atomic::{AtomicI16, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use asound_module_pcm_rdmix::mix::{ChannelLayout, ClientFormat, SlaveFormat, Source, Target};

const BUF: usize = 4096;
const CH: usize = 2;
const CHUNK: usize = 1024;
const CHUNKS: usize = 2000;

struct Shared {
    dma: Vec<AtomicI16>,
    sum64: Vec<AtomicU64>,
    sum32: Vec<AtomicI32>,
    locked: Mutex<Vec<i32>>,
}

fn src_chunk(w: usize) -> Vec<u8> {
    (0..CHUNK * CH)
        .flat_map(|i| (((i * 31 + w * 977) % 2000) as i16 - 1000).to_le_bytes())
        .collect()
}

fn run(
    name: &str,
    writers: usize,
    f: impl Fn(&Shared, usize, &[u8], u64) + Sync + Send + 'static + Copy,
) {
    let shared = Arc::new(Shared {
        dma: (0..BUF * CH).map(|_| AtomicI16::new(0)).collect(),
        sum64: (0..BUF * CH).map(|_| AtomicU64::new(0)).collect(),
        sum32: (0..BUF * CH).map(|_| AtomicI32::new(0)).collect(),
        locked: Mutex::new(vec![0; BUF * CH]),
    });
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (shared, barrier) = (shared.clone(), barrier.clone());
            std::thread::spawn(move || {
                let data = src_chunk(w);
                barrier.wait();
                for c in 0..CHUNKS {
                    f(&shared, w, &data, (c * CHUNK) as u64);
                }
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().expect("writer");
    }
    let el = t.elapsed();
    let samples = (writers * CHUNKS * CHUNK * CH) as f64;
    println!(
        "| {name:<14} | {writers:>2} | {:>8.2} |",
        el.as_nanos() as f64 / samples
    );
}

fn rdmix(s: &Shared, _w: usize, data: &[u8], pos: u64) {
    let lay = [
        ChannelLayout { first: 0, step: 4 },
        ChannelLayout { first: 2, step: 4 },
    ];
    let t = Target {
        dma: s.dma.as_ptr() as *mut u8,
        dma_len: BUF * CH * 2,
        sum: &s.sum64,
        channels: &lay,
        buffer_size: BUF as u64,
        format: SlaveFormat::S16Le,
    };
    let binds = [Some(0u16), Some(1)];
    let src = Source {
        data,
        frames: CHUNK,
        frame_bytes: 4,
        sample_bytes: 2,
        bindings: &binds,
        format: ClientFormat::Native,
    };
    // SAFETY: `dma` is a live array of BUF*CH atomics, laid out as `lay` says.
    unsafe { t.mix(pos, &src, 1) };
}

fn dmix_lockfree(s: &Shared, _w: usize, data: &[u8], pos: u64) {
    for i in 0..CHUNK * CH {
        let v = i16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as i32;
        let slot = ((pos as usize + i / CH) % BUF) * CH + i % CH;
        let (dst, sum) = (&s.dma[slot], &s.sum32[slot]);
        let mut sample = v;
        if dst
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            sample -= sum.load(Ordering::Acquire);
        }
        sum.fetch_add(sample, Ordering::AcqRel);
        loop {
            let cur = sum.load(Ordering::Acquire);
            dst.store(cur.clamp(-32768, 32767) as i16, Ordering::Release);
            if sum.load(Ordering::Acquire) == cur {
                break;
            }
        }
    }
}

fn mutex(s: &Shared, _w: usize, data: &[u8], pos: u64) {
    let mut sum = s.locked.lock().expect("lock");
    for i in 0..CHUNK * CH {
        let v = i16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as i32;
        let slot = ((pos as usize + i / CH) % BUF) * CH + i % CH;
        sum[slot] += v;
        s.dma[slot].store(sum[slot].clamp(-32768, 32767) as i16, Ordering::Relaxed);
    }
}

/// One writer's view of a ring in `fmt` (and the client format).
struct Ring {
    fmt: SlaveFormat,
    client: ClientFormat,
    /// The DMA buffer, 8-byte aligned.
    dma: Vec<AtomicU64>,
    sum: Vec<AtomicU64>,
    layout: [ChannelLayout; CH],
}

impl Ring {
    fn new(fmt: SlaveFormat, client: ClientFormat) -> Ring {
        let bytes = fmt.bytes();
        Ring {
            fmt,
            client,
            dma: (0..(BUF * CH * bytes).div_ceil(8))
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum: (0..BUF * CH).map(|_| AtomicU64::new(0)).collect(),
            layout: [
                ChannelLayout {
                    first: 0,
                    step: CH * bytes,
                },
                ChannelLayout {
                    first: bytes,
                    step: CH * bytes,
                },
            ],
        }
    }

    /// A chunk of client data for writer `w`.
    fn chunk(&self, w: usize) -> Vec<u8> {
        let cb = self.client.bytes(self.fmt);
        let mut out = vec![0u8; CHUNK * CH * cb];
        let amp = self.fmt.range().1 / 16;
        for i in 0..CHUNK * CH {
            let v = ((i * 31 + w * 977) % 2001) as i64 - 1000;
            let x = v * amp / 1000;
            match self.client {
                ClientFormat::Native => self.fmt.encode(x, &mut out[i * cb..]),
                ClientFormat::FloatLe => out[i * cb..i * cb + 4]
                    .copy_from_slice(&(x as f32 / (amp * 16) as f32).to_le_bytes()),
            }
        }
        out
    }

    fn mix(&self, data: &[u8], pos: u64) {
        let cb = self.client.bytes(self.fmt);
        let t = Target {
            dma: self.dma.as_ptr() as *mut u8,
            dma_len: BUF * CH * self.fmt.bytes(),
            sum: &self.sum,
            channels: &self.layout,
            buffer_size: BUF as u64,
            format: self.fmt,
        };
        let binds = [Some(0u16), Some(1)];
        let src = Source {
            data,
            frames: CHUNK,
            frame_bytes: CH * cb,
            sample_bytes: cb,
            bindings: &binds,
            format: self.client,
        };
        // SAFETY: `dma` is a live, 8-byte aligned buffer of at least BUF*CH samples of `fmt`,
        // laid out as `layout` says; `sum` holds BUF*CH accumulators.
        unsafe { t.mix(pos, &src, 1) };
    }
}

/// The kernel variants measured: every slave format with native clients, and FLOAT_LE clients
/// on S16_LE.
fn kernels() -> Vec<(String, SlaveFormat, ClientFormat)> {
    let mut v: Vec<_> = SlaveFormat::ALL
        .iter()
        .map(|&f| (f.name().to_string(), f, ClientFormat::Native))
        .collect();
    v.push((
        "FLOAT_LE>S16_LE".into(),
        SlaveFormat::S16Le,
        ClientFormat::FloatLe,
    ));
    v
}

fn kernel_times() {
    for (name, fmt, client) in kernels() {
        for writers in [1usize, 2, 8] {
            let ring = Arc::new(Ring::new(fmt, client));
            let barrier = Arc::new(Barrier::new(writers + 1));
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let (ring, barrier) = (ring.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let data = ring.chunk(w);
                        barrier.wait();
                        for c in 0..CHUNKS {
                            ring.mix(&data, (c * CHUNK) as u64);
                        }
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            for h in handles {
                h.join().expect("writer");
            }
            let samples = (writers * CHUNKS * CHUNK * CH) as f64;
            println!(
                "kernel {name} {writers} {:.3}",
                t.elapsed().as_nanos() as f64 / samples
            );
        }
    }
}

fn count(name: &str, chunks: usize) -> Result<(), String> {
    if name == "dmix-lockfree" {
        // The dmix scheme's model above (S16 only), for reference.
        let s = Shared {
            dma: (0..BUF * CH).map(|_| AtomicI16::new(0)).collect(),
            sum64: Vec::new(),
            sum32: (0..BUF * CH).map(|_| AtomicI32::new(0)).collect(),
            locked: Mutex::new(Vec::new()),
        };
        let data = src_chunk(0);
        for c in 0..chunks {
            dmix_lockfree(&s, 0, &data, (c * CHUNK) as u64);
        }
        println!("mixed {} client samples", chunks * CHUNK * CH);
        return Ok(());
    }
    let (_, fmt, client) = kernels()
        .into_iter()
        .find(|k| k.0 == name)
        .ok_or_else(|| format!("unknown format {name}"))?;
    let ring = Ring::new(fmt, client);
    let data = ring.chunk(0);
    for c in 0..chunks {
        ring.mix(&data, (c * CHUNK) as u64);
    }
    println!("mixed {} client samples", chunks * CHUNK * CH);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("kernels") => return kernel_times(),
        Some("count") => {
            let chunks = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(100);
            if let Err(e) = count(args.get(1).map_or("S16_LE", |s| s.as_str()), chunks) {
                eprintln!("mix_bench: {e}");
                std::process::exit(2);
            }
            return;
        }
        _ => {}
    }
    println!("ns per client sample (S16 stereo, {CHUNK}-frame chunks, {BUF}-frame ring)\n");
    println!("| scheme         |  W |  ns/smp |\n|---|---|---|");
    for w in [1, 2, 8] {
        run("rdmix", w, rdmix);
        run("dmix-lockfree", w, dmix_lockfree);
        run("mutex", w, mutex);
    }
}
