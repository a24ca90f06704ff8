//! Play a known signal through cpal's ALSA host to a PCM chosen by name.
//!
//!     cargo run --example cpal_play -- [PCM] [SECONDS]      # defaults: rdmix 2
//!
//! cpal's ALSA host has no "open this PCM name" call: its devices are the PCMs alsa-lib's name
//! hints list (`aplay -L`) plus hw:/plughw: of each card, and `device_by_id` searches those. A
//! PCM shows up there when its definition has a `hint.description` (alsa-conf/50-rdmix.conf
//! has one; the hint of a definition with @args is listed per argument, e.g.
//! `rdmix:CARD=Loopback,DEV=0`). This program lists the candidates when the name is not found.
//!
//! Plays SECONDS of tests/common's self-indexing test signal (salt 2) as interleaved i16 at
//! 48000 Hz, 2 channels, in periods of 1024 frames (`BufferSize::Fixed`: cpal then asks for two
//! periods; with `Default` it leaves the choice to the PCM, and rdmix offers 240-frame periods,
//! too short for a loaded machine or the test VM), then half a second of silence so that the
//! signal has left the buffer before the stream is dropped (cpal drops, it does not drain).

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, DeviceId, HostId, StreamConfig};

const RATE: u32 = 48_000;
const CHANNELS: u16 = 2;
/// The salt of tests/common's `frame()` this program plays with.
const SALT: u16 = 2;
/// Frames per callback (and per ALSA period).
const PERIOD: u32 = 1024;

/// Frame `n` of tests/common's self-indexing signal.
fn frame(n: u32, salt: u16) -> [i16; 2] {
    let lo = n as u16;
    let hi = (n >> 16) as u16;
    [lo as i16, (hi ^ 0x5A5A ^ salt ^ lo.rotate_left(5)) as i16]
}

enum Event {
    Done,
    Failed(String),
}

fn play(name: &str, seconds: u32) -> Result<(), String> {
    let host =
        cpal::host_from_id(HostId::Alsa).map_err(|e| format!("no ALSA host in cpal: {e}"))?;
    let id = DeviceId::new(HostId::Alsa, name);
    let device = host.device_by_id(&id).ok_or_else(|| {
        let known: Vec<String> = host
            .output_devices()
            .map(|ds| {
                ds.filter_map(|d| d.id().ok())
                    .map(|i| i.id().to_string())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "cpal lists no ALSA output '{name}' (a PCM needs a hint.description in its \
             definition to be listed); it lists: {}",
            known.join(", ")
        )
    })?;

    let config = StreamConfig {
        channels: CHANNELS,
        sample_rate: RATE,
        buffer_size: BufferSize::Fixed(PERIOD),
    };
    let total = seconds * RATE;
    // Silence written after the signal before we call it played: more than the two periods
    // of the buffer.
    let tail = RATE / 2;
    let (tx, rx) = mpsc::channel();
    let err_tx = tx.clone();
    let mut n = 0u32;
    let mut done_sent = false;
    let stream = device
        .build_output_stream(
            config,
            move |out: &mut [i16], _info| {
                for f in out.chunks_exact_mut(CHANNELS as usize) {
                    let s = if n < total { frame(n, SALT) } else { [0, 0] };
                    f.copy_from_slice(&s);
                    n = n.saturating_add(1);
                }
                if n >= total + tail && !done_sent {
                    done_sent = true;
                    let _ = tx.send(Event::Done);
                }
            },
            move |e| {
                let _ = err_tx.send(Event::Failed(e.to_string()));
            },
            None,
        )
        .map_err(|e| format!("cannot open an i16 {RATE} Hz stereo stream on '{name}': {e}"))?;
    stream
        .play()
        .map_err(|e| format!("cannot start the stream on '{name}': {e}"))?;

    let limit = Duration::from_secs(u64::from(seconds) + 10);
    match rx.recv_timeout(limit) {
        Ok(Event::Done) => {}
        Ok(Event::Failed(e)) => return Err(format!("stream error on '{name}': {e}")),
        Err(_) => {
            return Err(format!(
                "'{name}' did not play {total} frames within {limit:?}"
            ))
        }
    }
    drop(stream);
    println!("cpal_play: {total} frames to '{name}' at {RATE} Hz, then {tail} of silence");
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "rdmix".into());
    let seconds = match args.next().map(|s| s.parse::<u32>()) {
        None => 2,
        Some(Ok(s)) if (1..=3600).contains(&s) => s,
        Some(_) => {
            eprintln!("usage: cpal_play [PCM] [SECONDS 1..3600]");
            return ExitCode::from(2);
        }
    };
    match play(&name, seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpal_play: {e}");
            ExitCode::FAILURE
        }
    }
}
