//! rdmix: an alsa-lib external PCM plugin that lets many processes play through one sound card.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

pub mod error;
pub mod hw;
