//! CI's short run of the side-by-side benchmark (`tests/bench/run.sh smoke`), so that the
//! command cannot rot: one boot of the test VM, both mixers, one N, two seconds of audio per
//! measurement, three simultaneous two-client starts each; the report goes to
//! target/bench-out/smoke/, never to BENCHMARKS.md. Ratios against dmix are printed, not
//! asserted (a few seconds under TCG are too noisy for them); what rdmix guarantees is: no
//! syscall on the server socket while playing, and exact starts.

mod common;

use std::process::Command;

use common::*;

#[test]
fn benchmark_command_runs() {
    let (_so, server) = artifacts();
    let profile = server
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into());
    let root = project_root();
    let st = Command::new(root.join("tests/bench/run.sh"))
        .arg("smoke")
        .env("RDMIX_BENCH_PROFILE", &profile)
        .current_dir(&root)
        .status()
        .expect("run tests/bench/run.sh");
    assert!(st.success(), "tests/bench/run.sh smoke failed: {st}");
    let md = std::fs::read_to_string(root.join("target/bench-out/smoke/BENCHMARKS.md"))
        .expect("smoke report");
    for section in [
        "### Targets",
        "### 1.",
        "### 2.",
        "### 3.",
        "### 4.",
        "### 5.",
    ] {
        assert!(md.contains(section), "report lacks {section}");
    }
    assert!(
        md.contains("connected at open, **no syscall on it** during playback"),
        "rdmix client touched its server socket while playing (or no trace)"
    );
    assert!(
        md.contains("| rdmix, fresh | fresh mixer | 3/3 |"),
        "rdmix starts not all exact"
    );
    let svg =
        std::fs::read_to_string(root.join("target/bench-out/smoke/client-cpu.svg")).expect("chart");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}
