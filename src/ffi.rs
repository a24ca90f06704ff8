//! Hand-written bindings to alsa-lib's external-plugin API (`<alsa/pcm_ioplug.h>`), which alsa-sys
//! does not cover. The structs are pinned by size/offset asserts against the C layout (x86_64 and
//! other LP64 targets); the C header has not changed its layout since alsa-lib 1.0.27.
//!
//! Everything else (config tree, sw_params getters, channel areas) comes from `alsa-sys`.

#![allow(non_camel_case_types)]

use alsa_sys::{snd_output_t, snd_pcm_hw_params_t, snd_pcm_sw_params_t, snd_pcm_t};
use libc::{c_char, c_int, c_uint, c_ushort, c_void, pollfd};

pub use alsa_sys::{snd_pcm_channel_area_t, snd_pcm_sframes_t, snd_pcm_uframes_t};

/// `SND_PCM_IOPLUG_VERSION` 1.0.2 (chmap callbacks present).
pub const SND_PCM_IOPLUG_VERSION: c_uint = (1 << 16) | 2;
/// `pointer()` returns a position in `[0, boundary)` instead of `[0, buffer_size)`.
pub const SND_PCM_IOPLUG_FLAG_BOUNDARY_WA: c_uint = 1 << 2;
/// Timestamps are CLOCK_MONOTONIC.
pub const SND_PCM_IOPLUG_FLAG_MONOTONIC: c_uint = 1 << 1;

/// `SND_PCM_IOPLUG_HW_*` constraint kinds.
pub const SND_PCM_IOPLUG_HW_ACCESS: c_int = 0;
pub const SND_PCM_IOPLUG_HW_FORMAT: c_int = 1;
pub const SND_PCM_IOPLUG_HW_CHANNELS: c_int = 2;
pub const SND_PCM_IOPLUG_HW_RATE: c_int = 3;
pub const SND_PCM_IOPLUG_HW_PERIOD_BYTES: c_int = 4;
pub const SND_PCM_IOPLUG_HW_BUFFER_BYTES: c_int = 5;
pub const SND_PCM_IOPLUG_HW_PERIODS: c_int = 6;

/// `struct snd_pcm_ioplug`. alsa-lib keeps a pointer to it: it must never move (it lives in a Box).
#[repr(C)]
#[derive(Debug)]
pub struct snd_pcm_ioplug_t {
    pub version: c_uint,
    pub name: *const c_char,
    pub flags: c_uint,
    pub poll_fd: c_int,
    pub poll_events: c_uint,
    pub mmap_rw: c_uint,
    pub callback: *const snd_pcm_ioplug_callback_t,
    pub private_data: *mut c_void,
    pub pcm: *mut snd_pcm_t,
    pub stream: c_int,
    pub state: c_int,
    /// `volatile` in C: read with `read_volatile`.
    pub appl_ptr: snd_pcm_uframes_t,
    /// `volatile` in C: read with `read_volatile`.
    pub hw_ptr: snd_pcm_uframes_t,
    pub nonblock: c_int,
    pub access: c_int,
    pub format: c_int,
    pub channels: c_uint,
    pub rate: c_uint,
    pub period_size: snd_pcm_uframes_t,
    pub buffer_size: snd_pcm_uframes_t,
}

type Io = *mut snd_pcm_ioplug_t;

/// `struct snd_pcm_ioplug_callback`.
#[repr(C)]
#[derive(Debug)]
pub struct snd_pcm_ioplug_callback_t {
    pub start: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub stop: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub pointer: Option<unsafe extern "C" fn(Io) -> snd_pcm_sframes_t>,
    pub transfer: Option<
        unsafe extern "C" fn(
            Io,
            *const snd_pcm_channel_area_t,
            snd_pcm_uframes_t,
            snd_pcm_uframes_t,
        ) -> snd_pcm_sframes_t,
    >,
    pub close: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub hw_params: Option<unsafe extern "C" fn(Io, *mut snd_pcm_hw_params_t) -> c_int>,
    pub hw_free: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub sw_params: Option<unsafe extern "C" fn(Io, *mut snd_pcm_sw_params_t) -> c_int>,
    pub prepare: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub drain: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub pause: Option<unsafe extern "C" fn(Io, c_int) -> c_int>,
    pub resume: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub poll_descriptors_count: Option<unsafe extern "C" fn(Io) -> c_int>,
    pub poll_descriptors: Option<unsafe extern "C" fn(Io, *mut pollfd, c_uint) -> c_int>,
    pub poll_revents: Option<unsafe extern "C" fn(Io, *mut pollfd, c_uint, *mut c_ushort) -> c_int>,
    pub dump: Option<unsafe extern "C" fn(Io, *mut snd_output_t)>,
    pub delay: Option<unsafe extern "C" fn(Io, *mut snd_pcm_sframes_t) -> c_int>,
    pub query_chmaps: Option<unsafe extern "C" fn(Io) -> *mut *mut c_void>,
    pub get_chmap: Option<unsafe extern "C" fn(Io) -> *mut c_void>,
    pub set_chmap: Option<unsafe extern "C" fn(Io, *const c_void) -> c_int>,
}

// Layout pins (LP64). A mismatch here would corrupt the host application's memory.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<snd_pcm_ioplug_t>() == 120);
    assert!(align_of::<snd_pcm_ioplug_t>() == 8);
    assert!(offset_of!(snd_pcm_ioplug_t, name) == 8);
    assert!(offset_of!(snd_pcm_ioplug_t, flags) == 16);
    assert!(offset_of!(snd_pcm_ioplug_t, poll_fd) == 20);
    assert!(offset_of!(snd_pcm_ioplug_t, callback) == 32);
    assert!(offset_of!(snd_pcm_ioplug_t, pcm) == 48);
    assert!(offset_of!(snd_pcm_ioplug_t, stream) == 56);
    assert!(offset_of!(snd_pcm_ioplug_t, appl_ptr) == 64);
    assert!(offset_of!(snd_pcm_ioplug_t, hw_ptr) == 72);
    assert!(offset_of!(snd_pcm_ioplug_t, nonblock) == 80);
    assert!(offset_of!(snd_pcm_ioplug_t, channels) == 92);
    assert!(offset_of!(snd_pcm_ioplug_t, period_size) == 104);
    assert!(offset_of!(snd_pcm_ioplug_t, buffer_size) == 112);
    assert!(size_of::<snd_pcm_ioplug_callback_t>() == 20 * 8);
};

extern "C" {
    pub fn snd_pcm_ioplug_create(
        io: *mut snd_pcm_ioplug_t,
        name: *const c_char,
        stream: c_int,
        mode: c_int,
    ) -> c_int;
    pub fn snd_pcm_ioplug_delete(io: *mut snd_pcm_ioplug_t) -> c_int;
    pub fn snd_pcm_ioplug_set_param_list(
        io: *mut snd_pcm_ioplug_t,
        type_: c_int,
        num_list: c_uint,
        list: *const c_uint,
    ) -> c_int;
    pub fn snd_pcm_ioplug_set_param_minmax(
        io: *mut snd_pcm_ioplug_t,
        type_: c_int,
        min: c_uint,
        max: c_uint,
    ) -> c_int;
    pub fn snd_pcm_ioplug_reinit_status(io: *mut snd_pcm_ioplug_t) -> c_int;
    pub fn snd_pcm_ioplug_set_state(io: *mut snd_pcm_ioplug_t, state: c_int) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Compile a C program against the installed <alsa/pcm_external.h> and compare every
    /// constant and offset this module hard-codes.
    #[test]
    fn matches_the_c_header() {
        let dir = std::env::temp_dir().join(format!("rdmix-ffi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("t.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stddef.h>
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu\n", sizeof(snd_pcm_ioplug_t), offsetof(snd_pcm_ioplug_t, poll_fd),
         offsetof(snd_pcm_ioplug_t, appl_ptr), offsetof(snd_pcm_ioplug_t, buffer_size),
         sizeof(snd_pcm_ioplug_callback_t), offsetof(snd_pcm_ioplug_callback_t, set_chmap));
  printf("%d %d %d %d %d %d %d\n", SND_PCM_IOPLUG_HW_ACCESS, SND_PCM_IOPLUG_HW_FORMAT,
         SND_PCM_IOPLUG_HW_CHANNELS, SND_PCM_IOPLUG_HW_RATE, SND_PCM_IOPLUG_HW_PERIOD_BYTES,
         SND_PCM_IOPLUG_HW_BUFFER_BYTES, SND_PCM_IOPLUG_HW_PERIODS);
  printf("%d %d %d\n", SND_PCM_IOPLUG_VERSION, SND_PCM_IOPLUG_FLAG_BOUNDARY_WA, SND_PCM_IOPLUG_FLAG_MONOTONIC);
  return 0;
}"#,
        )
        .unwrap();
        let exe = dir.join("t");
        let st = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .unwrap();
        assert!(st.success(), "cc failed (libasound2-dev installed?)");
        let out = std::process::Command::new(&exe).output().unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        let want = format!(
            "{} {} {} {} {} {}\n{} {} {} {} {} {} {}\n{} {} {}\n",
            size_of::<snd_pcm_ioplug_t>(),
            offset_of!(snd_pcm_ioplug_t, poll_fd),
            offset_of!(snd_pcm_ioplug_t, appl_ptr),
            offset_of!(snd_pcm_ioplug_t, buffer_size),
            size_of::<snd_pcm_ioplug_callback_t>(),
            offset_of!(snd_pcm_ioplug_callback_t, set_chmap),
            SND_PCM_IOPLUG_HW_ACCESS,
            SND_PCM_IOPLUG_HW_FORMAT,
            SND_PCM_IOPLUG_HW_CHANNELS,
            SND_PCM_IOPLUG_HW_RATE,
            SND_PCM_IOPLUG_HW_PERIOD_BYTES,
            SND_PCM_IOPLUG_HW_BUFFER_BYTES,
            SND_PCM_IOPLUG_HW_PERIODS,
            SND_PCM_IOPLUG_VERSION,
            SND_PCM_IOPLUG_FLAG_BOUNDARY_WA,
            SND_PCM_IOPLUG_FLAG_MONOTONIC,
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(out, want);
    }
}
