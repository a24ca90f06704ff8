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
cargo test -- --nocapture
