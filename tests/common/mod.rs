//! Shared pieces of the VM tests: self-indexing signals, WAV files, capture checking, and
//! running a guest script in the test VM (`tests/vm/vm.sh`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod mixcheck;

/// XOR mask of the right channel, so that silence (0, 0) never decodes to a valid frame.
const MASK: u16 = 0x5A5A;

/// Frame `n` of the self-indexing stereo signal: L carries the low 16 bits of `n`, R the high
/// bits XOR a mask that also depends on L. Any frame decodes to its own index without knowing
/// where the stream starts.
pub fn frame(n: u32, salt: u16) -> [i16; 2] {
    let lo = n as u16;
    let hi = (n >> 16) as u16;
    [lo as i16, (hi ^ MASK ^ salt ^ lo.rotate_left(5)) as i16]
}

/// Inverse of [`frame`]: the index a captured frame encodes.
pub fn decode(f: [i16; 2], salt: u16) -> u32 {
    let lo = f[0] as u16;
    let hi = (f[1] as u16) ^ MASK ^ salt ^ lo.rotate_left(5);
    ((hi as u32) << 16) | lo as u32
}

pub fn signal(frames: u32, salt: u16) -> Vec<[i16; 2]> {
    (0..frames).map(|n| frame(n, salt)).collect()
}

/// A canonical 44-byte-header WAV file, S16_LE stereo.
pub fn write_wav(path: &Path, rate: u32, frames: &[[i16; 2]]) {
    let data_len = frames.len() as u32 * 4;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&2u16.to_le_bytes()); // channels
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 4).to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for f in frames {
        b.extend_from_slice(&f[0].to_le_bytes());
        b.extend_from_slice(&f[1].to_le_bytes());
    }
    std::fs::write(path, b).expect("write wav");
}

pub fn read_raw_s16_stereo(path: &Path) -> Vec<[i16; 2]> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| {
            [
                i16::from_le_bytes([c[0], c[1]]),
                i16::from_le_bytes([c[2], c[3]]),
            ]
        })
        .collect()
}

/// What a capture holds relative to the expected signal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Frames of the signal found, in order, starting at `first_index`.
    pub run_len: u32,
    pub first_index: u32,
    /// Frames that are neither silence nor the next expected signal frame.
    pub bad_frames: u32,
    /// Signal frames found outside the main run (repeats or ghosts).
    pub stray_frames: u32,
    /// First problems, for the report.
    pub notes: Vec<String>,
}

impl Analysis {
    /// Exact: one run holding every frame 0..n in order, silence everywhere else.
    pub fn is_exact(&self, n: u32) -> bool {
        self.first_index == 0 && self.run_len == n && self.bad_frames == 0 && self.stray_frames == 0
    }

    pub fn summary(&self, n: u32) -> String {
        if self.is_exact(n) {
            format!("exact: all {n} frames in order, silence around them")
        } else {
            format!(
                "NOT exact: run of {} frames starting at index {} (expected {n} from 0), {} bad \
                 frames, {} stray signal frames; {}",
                self.run_len,
                self.first_index,
                self.bad_frames,
                self.stray_frames,
                self.notes.join("; ")
            )
        }
    }
}

/// Check a capture against an `n`-frame signal: find the first non-silent frame, demand that
/// the signal runs from there in order without gap or repeat, and that the rest is silence.
pub fn analyze(cap: &[[i16; 2]], n: u32, salt: u16) -> Analysis {
    let mut a = Analysis::default();
    let Some(start) = cap.iter().position(|f| *f != [0, 0]) else {
        a.notes.push("capture is all silence".into());
        return a;
    };
    a.first_index = decode(cap[start], salt);
    if a.first_index >= n {
        a.notes.push(format!(
            "first non-silent frame {:?} at {start} is not a signal frame",
            cap[start]
        ));
    }
    let mut i = start;
    let mut expect = a.first_index;
    while i < cap.len() && expect < n && decode(cap[i], salt) == expect {
        a.run_len += 1;
        expect += 1;
        i += 1;
    }
    if expect < n && i < cap.len() {
        a.notes.push(format!(
            "run broke at capture frame {i}: expected index {expect}, got {:?} (index {})",
            cap[i],
            decode(cap[i], salt)
        ));
    }
    if expect < n && i >= cap.len() {
        a.notes.push("capture ended before the signal did".into());
    }
    for (j, f) in cap.iter().enumerate().skip(i) {
        if *f == [0, 0] {
            continue;
        }
        if decode(*f, salt) < n {
            a.stray_frames += 1;
        } else {
            a.bad_frames += 1;
        }
        if a.notes.len() < 6 {
            a.notes
                .push(format!("non-silent frame {f:?} at {j} after the run"));
        }
    }
    a
}

fn sat_add(a: [i16; 2], b: [i16; 2]) -> [i16; 2] {
    [a[0].saturating_add(b[0]), a[1].saturating_add(b[1])]
}

/// What a capture of alsa-lib's dmix holds, modelling its known start/stop race
/// (../shared/reference/vm-testing.md §8.3): up to `slack` frames lost at the head and/or the
/// tail, and a lost head replayed exactly one slave buffer later, summed onto the stream.
#[derive(Debug, Default, Clone)]
pub struct EdgeAnalysis {
    pub head_lost: u32,
    pub tail_lost: u32,
    pub ghost_frames: u32,
    /// Frames the model cannot explain (0 for a sound capture).
    pub unexplained: u32,
    pub note: String,
}

impl EdgeAnalysis {
    pub fn summary(&self) -> String {
        if self.head_lost + self.tail_lost + self.ghost_frames + self.unexplained == 0 {
            return "exact".into();
        }
        format!(
            "head lost {}, tail lost {}, head replayed one buffer later: {} frames, unexplained {}{}",
            self.head_lost, self.tail_lost, self.ghost_frames, self.unexplained, self.note
        )
    }
}

pub fn analyze_edges(cap: &[[i16; 2]], n: u32, salt: u16, buffer: u32, slack: u32) -> EdgeAnalysis {
    let mut e = EdgeAnalysis::default();
    let Some(start) = cap.iter().position(|f| *f != [0, 0]) else {
        e.unexplained = n;
        e.note = "; capture is all silence".into();
        return e;
    };
    let first = decode(cap[start], salt);
    if first > slack {
        e.unexplained = 1;
        e.note = format!("; stream starts at index {first}");
        return e;
    }
    e.head_lost = first;
    let mut expect = first;
    let mut i = start;
    while i < cap.len() && expect < n {
        let f = cap[i];
        if decode(f, salt) == expect {
        } else if expect >= buffer
            && expect - buffer < e.head_lost
            && f == sat_add(frame(expect, salt), frame(expect - buffer, salt))
        {
            e.ghost_frames += 1;
        } else {
            break;
        }
        expect += 1;
        i += 1;
    }
    e.tail_lost = n - expect;
    if e.tail_lost > slack {
        e.unexplained += e.tail_lost;
        e.note = format!("; run broke at index {expect}");
    }
    e.unexplained += cap[i..].iter().filter(|f| **f != [0, 0]).count() as u32;
    e
}

/// A run of consecutive counter frames (examples/state_play's signal) in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// Capture frame where it starts.
    pub at: usize,
    /// Signal frame index of its first frame.
    pub first: u64,
    pub len: u64,
    /// Silent frames between the previous run (or the capture start) and this one.
    pub gap: usize,
}

impl Seg {
    pub fn end(&self) -> u64 {
        self.first + self.len
    }
}

/// Split decoded counter values (`(n % modulo) + 1` for frame `n`, 0 for silence) into runs of
/// consecutive frames. A run's signal index is the one with its residue nearest to where the
/// previous run ended (one signal, interrupted), or with `restarts` the smallest (every run a
/// new stream from frame 0).
pub fn counter_runs(vals: &[u32], modulo: u64) -> Vec<Seg> {
    runs_of(vals, modulo, false)
}

/// [`counter_runs`] for streams that each start again from frame 0.
pub fn restarting_runs(vals: &[u32], modulo: u64) -> Vec<Seg> {
    runs_of(vals, modulo, true)
}

fn runs_of(vals: &[u32], modulo: u64, restarts: bool) -> Vec<Seg> {
    let mut v: Vec<Seg> = Vec::new();
    let mut gap = 0usize;
    let mut prev_end = 0u64;
    for (i, &s) in vals.iter().enumerate() {
        if s == 0 {
            gap += 1;
            continue;
        }
        let m = (s as u64 - 1) % modulo;
        if let Some(last) = v.last_mut() {
            if gap == 0 && last.at + last.len as usize == i && last.end() % modulo == m {
                last.len += 1;
                continue;
            }
            prev_end = last.end();
        }
        let base = if restarts {
            0
        } else {
            prev_end.saturating_sub(modulo / 2)
        };
        let first = base + (m + modulo - base % modulo) % modulo;
        v.push(Seg {
            at: i,
            first,
            len: 1,
            gap,
        });
        gap = 0;
    }
    v
}

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory for one test's files, shared with the guest (under target/, which is shared).
pub fn out_dir(name: &str) -> PathBuf {
    let d = project_root().join("target").join("vm-out").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create out dir");
    d
}

/// The built plugin and server: `cargo test` builds the binaries, and we build the cdylib.
pub fn artifacts() -> (PathBuf, PathBuf) {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_rdmix-server"));
    let dir = server.parent().expect("target dir").to_path_buf();
    let so = dir.join("libasound_module_pcm_rdmix.so");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["build", "--lib", "--quiet"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build --lib");
    assert!(st.success(), "cargo build --lib failed");
    assert!(so.is_file(), "{} was not built", so.display());
    (so, server)
}

/// Build an example program (in the profile the tests run in) and return its path.
pub fn example(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_rdmix-server"));
    let dir = server.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["build", "--quiet", "--example", name]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("cargo build --example").success(),
        "building {name} failed"
    );
    let path = dir.join("examples").join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Run `script` in the test VM with the project shared at its own path. Returns (status,
/// stdout). Guest output is echoed so that a failing test shows it.
pub fn run_vm(script: &Path, env: &[(&str, String)], timeout_s: u32) -> (i32, String) {
    let root = project_root();
    let mut cmd = Command::new(root.join("tests/vm/vm.sh"));
    cmd.arg("--timeout")
        .arg(timeout_s.to_string())
        .arg("--share")
        .arg(&root);
    for (k, v) in env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg(script);
    let out = cmd.output().expect("run tests/vm/vm.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    (out.status.code().unwrap_or(-1), stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_frame_and_silence_is_not_a_frame() {
        for n in [0u32, 1, 65535, 65536, 96000, 1 << 20] {
            assert_eq!(decode(frame(n, 7), 7), n);
        }
        assert!(decode([0, 0], 0) > 1 << 24);
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;

    /// A synthetic dmix capture with the ghost artifact: head of 192 lost, replayed 4096 later.
    #[test]
    fn edge_model_explains_a_replayed_head_and_nothing_else() {
        let n = 10_000u32;
        let mut cap = vec![[0i16; 2]; 100];
        for i in 192..n {
            let mut f = frame(i, 0);
            if (4096..4096 + 192).contains(&i) {
                f = sat_add(f, frame(i - 4096, 0));
            }
            cap.push(f);
        }
        cap.extend([[0, 0]; 50]);
        let e = analyze_edges(&cap, n, 0, 4096, 1024);
        assert_eq!(
            (e.head_lost, e.ghost_frames, e.tail_lost, e.unexplained),
            (192, 192, 0, 0)
        );
        // One wrong sample anywhere is unexplained.
        cap[5000][0] ^= 1;
        assert!(analyze_edges(&cap, n, 0, 4096, 1024).unexplained > 0);
        // And the strict analysis never accepts it.
        assert!(!analyze(&cap, n, 0).is_exact(n));
    }
}
