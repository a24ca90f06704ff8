//! Check a WAV written by rdmix's virtual device against its inputs: every frame of the mix must
//! be the saturated sum of the inputs, each placed at the start frame the server recorded for
//! the client that played it (the `.txt` summary beside the WAV).
//!
//! Usage: wav_mix_check MIX.wav MIX.wav.txt PID=INPUT.wav...
//!
//! Exit status 0 when the mix is exact, 1 when it is not (the first mismatches are printed),
//! 2 on bad input. 16-bit PCM WAV only (what tests/demo.sh plays).

use std::collections::HashMap;
use std::process::exit;

struct Wav {
    channels: usize,
    rate: u32,
    samples: Vec<i16>,
}

fn read_wav(path: &str) -> Result<Wav, String> {
    let d = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if d.len() < 12 || &d[0..4] != b"RIFF" || &d[8..12] != b"WAVE" {
        return Err(format!("{path}: not a RIFF/WAVE file"));
    }
    let (mut pos, mut fmt, mut data) = (12usize, None, None);
    while pos + 8 <= d.len() {
        let id = &d[pos..pos + 4];
        let len = u32::from_le_bytes([d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7]]) as usize;
        let body = &d[pos + 8..(pos + 8 + len).min(d.len())];
        match id {
            b"fmt " if body.len() >= 16 => fmt = Some(body.to_vec()),
            b"data" => data = Some(body.to_vec()),
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    let fmt = fmt.ok_or_else(|| format!("{path}: no fmt chunk"))?;
    let data = data.ok_or_else(|| format!("{path}: no data chunk"))?;
    let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]) as usize;
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    if (tag != 1 && tag != 0xfffe) || bits != 16 || channels == 0 {
        return Err(format!(
            "{path}: {bits}-bit format {tag:#x}, {channels} channels: only 16-bit PCM is checked"
        ));
    }
    let samples = data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok(Wav {
        channels,
        rate,
        samples,
    })
}

/// `pid -> (start_frame, xruns)` from the summary's `client pid=… start_frame=… xruns=…` lines.
fn read_starts(path: &str) -> Result<HashMap<u32, (u64, u64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("client ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<u64>().ok())
        };
        match (field("pid="), field("start_frame="), field("xruns=")) {
            (Some(pid), Some(start), Some(xruns)) => {
                m.insert(pid as u32, (start, xruns));
            }
            _ => return Err(format!("{path}: bad client line: {line}")),
        }
    }
    Ok(m)
}

fn run(args: &[String]) -> Result<bool, String> {
    if args.len() < 3 {
        return Err("usage: wav_mix_check MIX.wav MIX.wav.txt PID=INPUT.wav...".into());
    }
    let mix = read_wav(&args[0])?;
    let starts = read_starts(&args[1])?;
    let mut inputs = Vec::new();
    for a in &args[2..] {
        let (pid, file) = a
            .split_once('=')
            .ok_or_else(|| format!("'{a}' is not PID=FILE"))?;
        let pid: u32 = pid.parse().map_err(|_| format!("'{pid}' is not a pid"))?;
        let w = read_wav(file)?;
        if w.channels != mix.channels || w.rate != mix.rate {
            return Err(format!(
                "{file}: {} ch {} Hz, the mix is {} ch {} Hz",
                w.channels, w.rate, mix.channels, mix.rate
            ));
        }
        let (start, xruns) = *starts.get(&pid).ok_or_else(|| {
            format!("the summary has no client with pid {pid} (who played {file})")
        })?;
        if xruns > 0 {
            println!(
                "note: pid {pid} ({file}) underran {xruns} time(s): after an underrun a client \
                 restarts at a new position and the summary holds only its last start, so its \
                 frames cannot all be placed (on a busy machine, give the mixer a larger buffer)"
            );
        }
        inputs.push((file.to_string(), start as usize, w));
    }
    let ch = mix.channels;
    let frames = mix.samples.len() / ch;
    let mut sum = vec![0i32; mix.samples.len()];
    for (file, start, w) in &inputs {
        let n = w.samples.len() / ch;
        if start + n > frames {
            return Err(format!(
                "{file} ({n} frames from frame {start}) does not fit in the mix ({frames} frames)"
            ));
        }
        for (i, s) in w.samples.iter().enumerate() {
            sum[start * ch + i] += i32::from(*s);
        }
    }
    let (mut bad, mut clipped, mut first_bad) = (0usize, 0usize, Vec::new());
    for (i, (&got, &want)) in mix.samples.iter().zip(&sum).enumerate() {
        let sat = want.clamp(i16::MIN.into(), i16::MAX.into());
        clipped += usize::from(sat != want);
        if i32::from(got) != sat {
            bad += 1;
            if first_bad.len() < 8 {
                first_bad.push(format!(
                    "  frame {} channel {}: mix {got}, expected {sat}",
                    i / ch,
                    i % ch
                ));
            }
        }
    }
    for (file, start, w) in &inputs {
        println!(
            "input {file}: {} frames placed at mix frame {start}",
            w.samples.len() / ch
        );
    }
    if bad == 0 {
        println!(
            "mix {}: {frames} frames x {ch} channels, every sample the exact saturated sum \
             ({clipped} samples saturated)",
            args[0]
        );
        Ok(true)
    } else {
        println!("mix {}: {bad} samples differ from the exact sum:", args[0]);
        for l in first_bad {
            println!("{l}");
        }
        Ok(false)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => exit(0),
        Ok(false) => exit(1),
        Err(e) => {
            eprintln!("wav_mix_check: {e}");
            exit(2)
        }
    }
}
