//! Drive a hw PCM directly with `rdmix::hw`: open, configure (S16_LE, 48000 Hz, 2 channels,
//! period 1024, buffer 4096), map status/control/DMA, prepare, start, and print hw_ptr twice
//! 100 ms apart. Meant for hw:Loopback (snd-aloop) inside the test VM.
//!
//! Usage: hw_probe [CARD [DEVICE]]              (default 0 0)
//!        hw_probe --requests [CARD [DEVICE]]   (configure with several requests, print results)

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use asound_module_pcm_rdmix::error::ErrorKind;
use asound_module_pcm_rdmix::hw::{self, HwPcm, HwRequest};

fn run(card: u32, device: u32) -> Result<(), Box<dyn std::error::Error>> {
    let pcm = HwPcm::open(card, device, None)?;
    let info = pcm.info()?;
    let ver = pcm.protocol_version()?;
    println!(
        "opened {} (card {} device {} subdevice {} '{}' / '{}'), protocol {}.{}.{}",
        pcm.path(),
        info.card,
        info.device,
        info.subdevice,
        info.id,
        info.name,
        ver >> 16,
        (ver >> 8) & 0xff,
        ver & 0xff
    );

    let req = HwRequest {
        format: Some(hw::SNDRV_PCM_FORMAT_S16_LE),
        rate: Some(48000),
        channels: Some(2),
        period_size: Some(1024),
        buffer_size: Some(4096),
        ..Default::default()
    };
    let cfg = pcm.configure(&req)?;
    println!("config: {cfg:?}");
    assert_eq!(
        (cfg.format, cfg.rate, cfg.channels),
        (hw::SNDRV_PCM_FORMAT_S16_LE, 48000, 2)
    );
    assert_eq!((cfg.period_size, cfg.buffer_size), (1024, 4096));
    assert!(cfg.interleaved && cfg.dma_bytes == 4096 * 4);

    let status = pcm.map_status()?;
    let control = pcm.map_control()?;
    let dma = pcm.map_dma(&cfg)?;
    println!("mapped: {status:?} {control:?} {dma:?}");
    assert_eq!(status.state(), hw::SNDRV_PCM_STATE_SETUP);

    // Re-parameterising while the DMA buffer is mapped must be refused (EBADFD).
    match pcm.configure(&req) {
        Err(e) if e.errno() == libc::EBADFD => {
            println!("configure while mapped: refused as expected: {e}")
        }
        other => {
            return Err(format!("configure while mapped: expected EBADFD, got {other:?}").into())
        }
    }

    // Fill the buffer with non-zero bytes; the kernel should silence what has been played.
    // SAFETY: the mapping is dma.len() bytes long, writable, and alive for this block.
    unsafe { std::ptr::write_bytes(dma.as_ptr(), 0x55, dma.len()) };

    pcm.prepare()?;
    println!(
        "prepared: state {} hw_ptr {} appl_ptr {}",
        hw::state_name(status.state()),
        status.hw_ptr(),
        control.appl_ptr()
    );
    pcm.start()?;
    let t0 = Instant::now();
    println!("started: state {}", hw::state_name(status.state()));

    pcm.hwsync()?;
    let a = status.hw_ptr();
    sleep(Duration::from_millis(100));
    pcm.hwsync()?;
    let b = status.hw_ptr();
    let dt = t0.elapsed();
    println!(
        "hw_ptr {a} -> {b} (+{} frames in ~100 ms; {:?} since start)",
        b.wrapping_sub(a),
        dt
    );
    let ts = status.tstamp();
    println!("status tstamp {}.{:09}", ts.tv_sec, ts.tv_nsec);

    let st = pcm.status()?;
    println!("STATUS: {st:?}");
    let sp = pcm.sync_ptr(true)?;
    println!("SYNC_PTR: {sp:?}");

    // The kernel silences the already-played part of the ring (silence_size = boundary).
    // SAFETY: as above; plain reads of bytes the kernel may be writing concurrently are only
    // used as a diagnostic.
    let zeros = unsafe { std::slice::from_raw_parts(dma.as_ptr(), dma.len()) }
        .iter()
        .filter(|&&b| b == 0)
        .count();
    println!(
        "DMA buffer: {zeros} of {} bytes silenced by the kernel",
        dma.len()
    );

    pcm.drop_stream()?;
    println!("dropped: state {}", hw::state_name(status.state()));
    match pcm.hw_free() {
        Err(e) if e.errno() == libc::EBADFD => {
            println!("hw_free while mapped: refused as expected")
        }
        other => {
            return Err(format!("hw_free while mapped: expected EBADFD, got {other:?}").into())
        }
    }
    drop(dma);
    drop(control);
    drop(status);
    pcm.hw_free()?;
    println!("hw_free: ok");

    // 48000 Hz for ~100 ms ≈ 4800 frames; be lenient with a slow emulated guest.
    let moved = b.wrapping_sub(a);
    if !(1000..=48000).contains(&moved) {
        return Err(format!("hw_ptr moved {moved} frames in 100 ms").into());
    }
    if zeros == 0 {
        return Err("the kernel did not silence any played frames".into());
    }

    // A second opener: O_APPEND on an unconfigured-but-open substream attaches; a plain open of
    // a busy single substream must fail rather than block.
    match HwPcm::open_append(card, device, Some(info.subdevice)) {
        Ok(p2) => println!(
            "open_append: attached to {} subdevice {}",
            p2.path(),
            p2.info()?.subdevice
        ),
        Err(e) => println!("open_append: {e} (kind {:?})", e.kind()),
    }
    match HwPcm::open(card, device, Some(info.subdevice)) {
        Ok(_) => println!(
            "second open of subdevice {}: unexpectedly succeeded",
            info.subdevice
        ),
        Err(e) => println!("second open of subdevice {}: {e}", info.subdevice),
    }
    let other = (info.subdevice + 1) % info.subdevices_count.max(1);
    match HwPcm::open(card, device, Some(other)) {
        Ok(p3) => println!("open subdevice {other}: got {}", p3.info()?.subdevice),
        Err(e) if e.kind() == ErrorKind::Device => println!("open subdevice {other}: {e}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Configure with a few requests and print what the kernel gave (each must have ≥ 2 periods).
fn requests(card: u32, device: u32) -> Result<(), Box<dyn std::error::Error>> {
    let pcm = HwPcm::open(card, device, None)?;
    let reqs = [
        ("defaults", HwRequest::default()),
        (
            "times 10ms/40ms @44100",
            HwRequest {
                rate: Some(44100),
                period_time: Some(10_000),
                buffer_time: Some(40_000),
                ..Default::default()
            },
        ),
        (
            "period 1000 buffer 4096",
            HwRequest {
                period_size: Some(1000),
                buffer_size: Some(4096),
                ..Default::default()
            },
        ),
        (
            "period 1000 periods 3",
            HwRequest {
                period_size: Some(1000),
                periods: Some(3),
                ..Default::default()
            },
        ),
        (
            "period = buffer = 4096",
            HwRequest {
                period_size: Some(4096),
                buffer_size: Some(4096),
                ..Default::default()
            },
        ),
        (
            "6 channels @ 96000",
            HwRequest {
                channels: Some(6),
                rate: Some(96000),
                ..Default::default()
            },
        ),
        (
            "FLOAT_LE",
            HwRequest {
                format: Some(hw::SNDRV_PCM_FORMAT_FLOAT_LE),
                ..Default::default()
            },
        ),
    ];
    for (name, req) in reqs {
        match pcm.configure(&req) {
            Ok(c) => {
                println!(
                    "  {name:26} -> {} {} Hz {} ch, period {} buffer {} ({} periods), {}, dma {} B",
                    hw::format_name(c.format),
                    c.rate,
                    c.channels,
                    c.period_size,
                    c.buffer_size,
                    c.buffer_size as f64 / c.period_size as f64,
                    if c.interleaved {
                        "interleaved"
                    } else {
                        "non-interleaved"
                    },
                    c.dma_bytes
                );
                if c.buffer_size < 2 * c.period_size {
                    return Err(format!("{name}: fewer than 2 periods").into());
                }
            }
            Err(e) => println!("  {name:26} -> error ({:?}): {e}", e.kind()),
        }
    }
    pcm.hw_free()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--requests") {
        let card = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let device = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        println!("requests on card {card} device {device}:");
        return match requests(card, device) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hw_probe --requests: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let card = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let device = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    match run(card, device) {
        Ok(()) => {
            println!("hw_probe: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hw_probe: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
