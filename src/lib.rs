//! rdmix: an alsa-lib external PCM plugin that lets many processes play through one sound card.
//!
//! Module map (one job each):
//! - [`plugin`]: the ioplug FFI glue — the exported entry point and every alsa-lib callback.
//! - [`ffi`]: hand-written `#[repr(C)]` bindings of `<alsa/pcm_ioplug.h>`, pinned by asserts.
//! - [`config`]: parsing the plugin's configuration node.
//! - [`client`]: finding or starting the server and the socket handshake.
//! - [`stream`]: one client's positions, pending frames and wakeups (the real-time path).
//! - [`mix`]: the mix kernels and the lock-free accumulation protocol.
//! - [`shm`]: the shared-state layout (memfd), versioned and checked at attach.
//! - [`protocol`]: the socket messages.
//! - [`hw`]: the kernel hw PCM driver: ioctls and mmaps of `/dev/snd/pcm*`.
//! - [`server`]: `rdmix-server`, which owns the hardware and hands out fds.
//! - [`virtual_dev`]: the server's virtual slave (a timer-driven device: WAV file, discard, or
//!   an ALSA PCM that cannot mmap) for machines without a sound card.
//! - [`alsa_out`]: the virtual slave's ALSA PCM sink.
//! - [`error`]: the one error type.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::undocumented_unsafe_blocks
)]

pub mod alsa_out;
pub mod client;
pub mod config;
pub mod error;
pub mod ffi;
pub mod hw;
pub mod mix;
pub mod plugin;
pub mod protocol;
pub mod server;
pub mod shm;
pub mod stream;
pub mod virtual_dev;
