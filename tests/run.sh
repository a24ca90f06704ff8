#!/usr/bin/env bash
# The whole rdmix test suite, from a fresh machine: installs what it needs, builds, runs the host
# unit tests and the VM tests (real kernel PCMs under qemu), and lints.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/setup-host.sh
if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Builds the cdylib, the server and every test; then unit tests on the host and VM tests.
cargo build --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
