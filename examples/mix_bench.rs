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

fn main() {
    println!("ns per client sample (S16 stereo, {CHUNK}-frame chunks, {BUF}-frame ring)\n");
    println!("| scheme         |  W |  ns/smp |\n|---|---|---|");
    for w in [1, 2, 8] {
        run("rdmix", w, rdmix);
        run("dmix-lockfree", w, dmix_lockfree);
        run("mutex", w, mutex);
    }
}
