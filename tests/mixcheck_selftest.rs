//! Runs the host-side unit tests of `tests/common` (the mix checker among them) without the VM.

mod common;
