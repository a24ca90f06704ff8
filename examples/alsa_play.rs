//! Play a known signal to an ALSA PCM through the `alsa` crate (safe wrappers over alsa-lib).
//!
//!     cargo run --example alsa_play -- [PCM] [SECONDS]      # defaults: rdmix 2
//!
//! Opens the PCM by name, asks for interleaved S16_LE, 48000 Hz, 2 channels, writes SECONDS of
//! the self-indexing test signal of tests/common (frame n encodes n; salt 1), then drains. The
//! application matrix (tests/apps.rs) checks the capture of it bit-exact.

use std::process::ExitCode;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

const RATE: u32 = 48_000;
const CHANNELS: u32 = 2;
/// The salt of tests/common's `frame()` this program plays with.
const SALT: u16 = 1;

/// Frame `n` of tests/common's self-indexing signal.
fn frame(n: u32, salt: u16) -> [i16; 2] {
    let lo = n as u16;
    let hi = (n >> 16) as u16;
    [lo as i16, (hi ^ 0x5A5A ^ salt ^ lo.rotate_left(5)) as i16]
}

fn play(name: &str, seconds: u32) -> Result<(), String> {
    let pcm = PCM::new(name, Direction::Playback, false)
        .map_err(|e| format!("cannot open PCM '{name}' for playback: {e}"))?;
    {
        let hwp = HwParams::any(&pcm).map_err(|e| format!("'{name}': hw params: {e}"))?;
        hwp.set_access(Access::RWInterleaved)
            .map_err(|e| format!("'{name}': interleaved access refused: {e}"))?;
        hwp.set_format(Format::s16())
            .map_err(|e| format!("'{name}': S16 format refused: {e}"))?;
        hwp.set_channels(CHANNELS)
            .map_err(|e| format!("'{name}': {CHANNELS} channels refused: {e}"))?;
        hwp.set_rate(RATE, ValueOr::Nearest)
            .map_err(|e| format!("'{name}': rate {RATE} refused: {e}"))?;
        pcm.hw_params(&hwp)
            .map_err(|e| format!("'{name}': installing hw params: {e}"))?;
    }
    let rate = pcm
        .hw_params_current()
        .and_then(|h| h.get_rate())
        .map_err(|e| format!("'{name}': reading back the rate: {e}"))?;
    if rate != RATE {
        return Err(format!(
            "'{name}' runs at {rate} Hz, not {RATE}: the signal would be resampled"
        ));
    }
    let io = pcm
        .io_i16()
        .map_err(|e| format!("'{name}': no i16 I/O: {e}"))?;

    let total = seconds * RATE;
    let chunk = 1024u32;
    let mut buf = Vec::with_capacity(chunk as usize * CHANNELS as usize);
    let mut n = 0u32;
    while n < total {
        let len = chunk.min(total - n);
        buf.clear();
        buf.extend((n..n + len).flat_map(|i| frame(i, SALT)));
        let mut off = 0usize;
        while off < len as usize {
            match io.writei(&buf[off * CHANNELS as usize..]) {
                Ok(w) => off += w,
                // An underrun (EPIPE) or a suspend: recover and go on, as an application would.
                Err(e) => pcm
                    .try_recover(e, true)
                    .map_err(|e| format!("'{name}': write failed at frame {n}: {e}"))?,
            }
        }
        n += len;
    }
    pcm.drain()
        .map_err(|e| format!("'{name}': drain failed: {e}"))?;
    println!("alsa_play: {total} frames to '{name}' at {RATE} Hz, drained");
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "rdmix".into());
    let seconds = match args.next().map(|s| s.parse::<u32>()) {
        None => 2,
        Some(Ok(s)) if (1..=3600).contains(&s) => s,
        Some(_) => {
            eprintln!("usage: alsa_play [PCM] [SECONDS 1..3600]");
            return ExitCode::from(2);
        }
    };
    match play(&name, seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alsa_play: {e}");
            ExitCode::FAILURE
        }
    }
}
