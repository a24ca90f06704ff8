//! The kernel hw PCM, driven directly: raw ioctls on `/dev/snd/pcmC{card}D{dev}p` and mmaps of
//! its status page, control page and DMA buffer. No alsa-lib.
//!
//! Target: 64-bit Linux (x86_64). There the kernel's 64-bit and "time64" layouts coincide, the
//! status/control pages are mmappable (`CONFIG_X86`), and the header's `SNDRV_PCM_MMAP_OFFSET_*`
//! are the "OLD" offsets 0x80000000 / 0x81000000.
//!
//! The usual life of the device, as dmix drives it (`pcm_direct.c`):
//! [`HwPcm::open`] → [`HwPcm::configure`] (HW_REFINE…, HW_PARAMS with MMAP access, SW_PARAMS
//! free-running: stop_threshold = silence_size = boundary, CHANNEL_INFO) → [`HwPcm::map_dma`],
//! [`HwPcm::map_status`], [`HwPcm::map_control`] → [`HwPcm::prepare`] → [`HwPcm::start`] …
//! [`HwPcm::drop_stream`] → (unmap everything) → [`HwPcm::hw_free`].
//!
//! What the kernel refuses (sound/core/pcm_native.c):
//! - HW_PARAMS and HW_FREE return `EBADFD` while any mapping of the DMA buffer is alive, or when
//!   the stream is running.
//! - The status/control mmaps must be exactly `PAGE_ALIGN(sizeof)` long, the status page is
//!   read-only, and both are refused (`ENXIO`) for drivers with `SNDRV_PCM_INFO_EXPLICIT_SYNC`
//!   (the control page also for `SYNC_APPLPTR`). [`HwPcm::sync_ptr`] is the fallback for reading
//!   the position.
//! - The DMA mmap needs a state past OPEN, `SNDRV_PCM_INFO_MMAP` and an MMAP_* access.

use std::fmt;
use std::fs::OpenOptions;
use std::mem::size_of;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicU64, Ordering};

use libc::{c_int, c_void};
use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, ProtFlags};

use crate::error::{Error, ErrorKind, Result};

pub use self::sys::{
    SndInterval, SndMask, SndPcmChannelInfo, SndPcmHwParams, SndPcmInfo, SndPcmMmapControl,
    SndPcmMmapStatus, SndPcmStatus, SndPcmSwParams, SndPcmSyncPtr, SndTimespec,
};

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("rdmix's hw module supports 64-bit Linux only (kernel struct layouts)");

// ---------------------------------------------------------------------------------------------
// Constants from <sound/asound.h>
// ---------------------------------------------------------------------------------------------

/// `SNDRV_PROTOCOL_VERSION(major, minor, subminor)`.
pub const fn protocol_version(major: u32, minor: u32, subminor: u32) -> u32 {
    (major << 16) | (minor << 8) | subminor
}

/// The PCM protocol version this module speaks (sent with USER_PVERSION and in sw_params.proto).
pub const SNDRV_PCM_VERSION: u32 = protocol_version(2, 0, 15);

pub const SNDRV_PCM_FORMAT_S8: i32 = 0;
pub const SNDRV_PCM_FORMAT_U8: i32 = 1;
pub const SNDRV_PCM_FORMAT_S16_LE: i32 = 2;
pub const SNDRV_PCM_FORMAT_S16_BE: i32 = 3;
pub const SNDRV_PCM_FORMAT_U16_LE: i32 = 4;
pub const SNDRV_PCM_FORMAT_U16_BE: i32 = 5;
/// Low three bytes of four.
pub const SNDRV_PCM_FORMAT_S24_LE: i32 = 6;
pub const SNDRV_PCM_FORMAT_S24_BE: i32 = 7;
pub const SNDRV_PCM_FORMAT_U24_LE: i32 = 8;
pub const SNDRV_PCM_FORMAT_U24_BE: i32 = 9;
pub const SNDRV_PCM_FORMAT_S32_LE: i32 = 10;
pub const SNDRV_PCM_FORMAT_S32_BE: i32 = 11;
pub const SNDRV_PCM_FORMAT_U32_LE: i32 = 12;
pub const SNDRV_PCM_FORMAT_U32_BE: i32 = 13;
pub const SNDRV_PCM_FORMAT_FLOAT_LE: i32 = 14;
pub const SNDRV_PCM_FORMAT_FLOAT_BE: i32 = 15;
pub const SNDRV_PCM_FORMAT_FLOAT64_LE: i32 = 16;
pub const SNDRV_PCM_FORMAT_FLOAT64_BE: i32 = 17;
pub const SNDRV_PCM_FORMAT_IEC958_SUBFRAME_LE: i32 = 18;
pub const SNDRV_PCM_FORMAT_IEC958_SUBFRAME_BE: i32 = 19;
pub const SNDRV_PCM_FORMAT_MU_LAW: i32 = 20;
pub const SNDRV_PCM_FORMAT_A_LAW: i32 = 21;
pub const SNDRV_PCM_FORMAT_IMA_ADPCM: i32 = 22;
pub const SNDRV_PCM_FORMAT_MPEG: i32 = 23;
pub const SNDRV_PCM_FORMAT_GSM: i32 = 24;
pub const SNDRV_PCM_FORMAT_S20_LE: i32 = 25;
pub const SNDRV_PCM_FORMAT_S20_BE: i32 = 26;
pub const SNDRV_PCM_FORMAT_U20_LE: i32 = 27;
pub const SNDRV_PCM_FORMAT_U20_BE: i32 = 28;
pub const SNDRV_PCM_FORMAT_SPECIAL: i32 = 31;
/// Three bytes per sample.
pub const SNDRV_PCM_FORMAT_S24_3LE: i32 = 32;
pub const SNDRV_PCM_FORMAT_S24_3BE: i32 = 33;
pub const SNDRV_PCM_FORMAT_U24_3LE: i32 = 34;
pub const SNDRV_PCM_FORMAT_U24_3BE: i32 = 35;
pub const SNDRV_PCM_FORMAT_S20_3LE: i32 = 36;
pub const SNDRV_PCM_FORMAT_S20_3BE: i32 = 37;
pub const SNDRV_PCM_FORMAT_U20_3LE: i32 = 38;
pub const SNDRV_PCM_FORMAT_U20_3BE: i32 = 39;
pub const SNDRV_PCM_FORMAT_S18_3LE: i32 = 40;
pub const SNDRV_PCM_FORMAT_S18_3BE: i32 = 41;
pub const SNDRV_PCM_FORMAT_U18_3LE: i32 = 42;
pub const SNDRV_PCM_FORMAT_U18_3BE: i32 = 43;
pub const SNDRV_PCM_FORMAT_G723_24: i32 = 44;
pub const SNDRV_PCM_FORMAT_G723_24_1B: i32 = 45;
pub const SNDRV_PCM_FORMAT_G723_40: i32 = 46;
pub const SNDRV_PCM_FORMAT_G723_40_1B: i32 = 47;
pub const SNDRV_PCM_FORMAT_DSD_U8: i32 = 48;
pub const SNDRV_PCM_FORMAT_DSD_U16_LE: i32 = 49;
pub const SNDRV_PCM_FORMAT_DSD_U32_LE: i32 = 50;
pub const SNDRV_PCM_FORMAT_DSD_U16_BE: i32 = 51;
pub const SNDRV_PCM_FORMAT_DSD_U32_BE: i32 = 52;
pub const SNDRV_PCM_FORMAT_LAST: i32 = SNDRV_PCM_FORMAT_DSD_U32_BE;

#[cfg(target_endian = "little")]
mod native_formats {
    pub const S16: i32 = super::SNDRV_PCM_FORMAT_S16_LE;
    pub const U16: i32 = super::SNDRV_PCM_FORMAT_U16_LE;
    pub const S24: i32 = super::SNDRV_PCM_FORMAT_S24_LE;
    pub const U24: i32 = super::SNDRV_PCM_FORMAT_U24_LE;
    pub const S32: i32 = super::SNDRV_PCM_FORMAT_S32_LE;
    pub const U32: i32 = super::SNDRV_PCM_FORMAT_U32_LE;
    pub const FLOAT: i32 = super::SNDRV_PCM_FORMAT_FLOAT_LE;
    pub const FLOAT64: i32 = super::SNDRV_PCM_FORMAT_FLOAT64_LE;
}
#[cfg(target_endian = "big")]
mod native_formats {
    pub const S16: i32 = super::SNDRV_PCM_FORMAT_S16_BE;
    pub const U16: i32 = super::SNDRV_PCM_FORMAT_U16_BE;
    pub const S24: i32 = super::SNDRV_PCM_FORMAT_S24_BE;
    pub const U24: i32 = super::SNDRV_PCM_FORMAT_U24_BE;
    pub const S32: i32 = super::SNDRV_PCM_FORMAT_S32_BE;
    pub const U32: i32 = super::SNDRV_PCM_FORMAT_U32_BE;
    pub const FLOAT: i32 = super::SNDRV_PCM_FORMAT_FLOAT_BE;
    pub const FLOAT64: i32 = super::SNDRV_PCM_FORMAT_FLOAT64_BE;
}
/// Native-endian aliases, as the header defines them under `SNDRV_LITTLE_ENDIAN`.
pub const SNDRV_PCM_FORMAT_S16: i32 = native_formats::S16;
pub const SNDRV_PCM_FORMAT_U16: i32 = native_formats::U16;
pub const SNDRV_PCM_FORMAT_S24: i32 = native_formats::S24;
pub const SNDRV_PCM_FORMAT_U24: i32 = native_formats::U24;
pub const SNDRV_PCM_FORMAT_S32: i32 = native_formats::S32;
pub const SNDRV_PCM_FORMAT_U32: i32 = native_formats::U32;
pub const SNDRV_PCM_FORMAT_FLOAT: i32 = native_formats::FLOAT;
pub const SNDRV_PCM_FORMAT_FLOAT64: i32 = native_formats::FLOAT64;

/// The formats tried, in order, when [`HwRequest::format`] is `None` (dmix's list, native
/// endianness only).
pub const DEFAULT_FORMATS: [i32; 5] = [
    SNDRV_PCM_FORMAT_S32,
    SNDRV_PCM_FORMAT_S16,
    SNDRV_PCM_FORMAT_S24_LE,
    SNDRV_PCM_FORMAT_S24_3LE,
    SNDRV_PCM_FORMAT_U8,
];

pub const SNDRV_PCM_STATE_OPEN: i32 = 0;
pub const SNDRV_PCM_STATE_SETUP: i32 = 1;
pub const SNDRV_PCM_STATE_PREPARED: i32 = 2;
pub const SNDRV_PCM_STATE_RUNNING: i32 = 3;
pub const SNDRV_PCM_STATE_XRUN: i32 = 4;
pub const SNDRV_PCM_STATE_DRAINING: i32 = 5;
pub const SNDRV_PCM_STATE_PAUSED: i32 = 6;
pub const SNDRV_PCM_STATE_SUSPENDED: i32 = 7;
pub const SNDRV_PCM_STATE_DISCONNECTED: i32 = 8;

pub const SNDRV_PCM_ACCESS_MMAP_INTERLEAVED: i32 = 0;
pub const SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED: i32 = 1;
pub const SNDRV_PCM_ACCESS_MMAP_COMPLEX: i32 = 2;
pub const SNDRV_PCM_ACCESS_RW_INTERLEAVED: i32 = 3;
pub const SNDRV_PCM_ACCESS_RW_NONINTERLEAVED: i32 = 4;

pub const SNDRV_PCM_STREAM_PLAYBACK: i32 = 0;
pub const SNDRV_PCM_STREAM_CAPTURE: i32 = 1;

pub const SNDRV_PCM_INFO_MMAP: u32 = 0x0000_0001;
pub const SNDRV_PCM_INFO_MMAP_VALID: u32 = 0x0000_0002;
pub const SNDRV_PCM_INFO_BATCH: u32 = 0x0000_0010;
pub const SNDRV_PCM_INFO_SYNC_APPLPTR: u32 = 0x0000_0020;
pub const SNDRV_PCM_INFO_INTERLEAVED: u32 = 0x0000_0100;
pub const SNDRV_PCM_INFO_NONINTERLEAVED: u32 = 0x0000_0200;
pub const SNDRV_PCM_INFO_PAUSE: u32 = 0x0008_0000;
pub const SNDRV_PCM_INFO_EXPLICIT_SYNC: u32 = 0x1000_0000;
pub const SNDRV_PCM_INFO_NO_REWINDS: u32 = 0x2000_0000;

pub const SNDRV_PCM_HW_PARAM_ACCESS: usize = 0;
pub const SNDRV_PCM_HW_PARAM_FORMAT: usize = 1;
pub const SNDRV_PCM_HW_PARAM_SUBFORMAT: usize = 2;
pub const SNDRV_PCM_HW_PARAM_SAMPLE_BITS: usize = 8;
pub const SNDRV_PCM_HW_PARAM_FRAME_BITS: usize = 9;
pub const SNDRV_PCM_HW_PARAM_CHANNELS: usize = 10;
pub const SNDRV_PCM_HW_PARAM_RATE: usize = 11;
pub const SNDRV_PCM_HW_PARAM_PERIOD_TIME: usize = 12;
pub const SNDRV_PCM_HW_PARAM_PERIOD_SIZE: usize = 13;
pub const SNDRV_PCM_HW_PARAM_PERIOD_BYTES: usize = 14;
pub const SNDRV_PCM_HW_PARAM_PERIODS: usize = 15;
pub const SNDRV_PCM_HW_PARAM_BUFFER_TIME: usize = 16;
pub const SNDRV_PCM_HW_PARAM_BUFFER_SIZE: usize = 17;
pub const SNDRV_PCM_HW_PARAM_BUFFER_BYTES: usize = 18;
pub const SNDRV_PCM_HW_PARAM_TICK_TIME: usize = 19;
const FIRST_INTERVAL: usize = SNDRV_PCM_HW_PARAM_SAMPLE_BITS;
const LAST_INTERVAL: usize = SNDRV_PCM_HW_PARAM_TICK_TIME;
const LAST_MASK: usize = SNDRV_PCM_HW_PARAM_SUBFORMAT;

pub const SNDRV_PCM_TSTAMP_NONE: i32 = 0;
pub const SNDRV_PCM_TSTAMP_ENABLE: i32 = 1;
pub const SNDRV_PCM_TSTAMP_TYPE_GETTIMEOFDAY: i32 = 0;
pub const SNDRV_PCM_TSTAMP_TYPE_MONOTONIC: i32 = 1;
pub const SNDRV_PCM_TSTAMP_TYPE_MONOTONIC_RAW: i32 = 2;

pub const SNDRV_PCM_SYNC_PTR_HWSYNC: u32 = 1 << 0;
/// Set: read appl_ptr from the kernel. Clear: the kernel *takes* `c.control.appl_ptr`.
pub const SNDRV_PCM_SYNC_PTR_APPL: u32 = 1 << 1;
/// Set: read avail_min from the kernel. Clear: the kernel takes `c.control.avail_min`.
pub const SNDRV_PCM_SYNC_PTR_AVAIL_MIN: u32 = 1 << 2;

pub const SNDRV_PCM_MMAP_OFFSET_DATA: u64 = 0x0000_0000;
/// The header's `SNDRV_PCM_MMAP_OFFSET_STATUS` for 64-bit userspace (the "OLD" value).
pub const SNDRV_PCM_MMAP_OFFSET_STATUS: u64 = 0x8000_0000;
/// The header's `SNDRV_PCM_MMAP_OFFSET_CONTROL` for 64-bit userspace (the "OLD" value).
pub const SNDRV_PCM_MMAP_OFFSET_CONTROL: u64 = 0x8100_0000;
/// The time64 offsets (kernel ≥ 5.6); same layout as the old ones on a 64-bit kernel.
pub const SNDRV_PCM_MMAP_OFFSET_STATUS_NEW: u64 = 0x8200_0000;
pub const SNDRV_PCM_MMAP_OFFSET_CONTROL_NEW: u64 = 0x8300_0000;

// ---------------------------------------------------------------------------------------------
// Kernel structures and ioctl numbers
// ---------------------------------------------------------------------------------------------

/// The kernel's structures (`struct snd_*` of <sound/asound.h>, 64-bit layout) and ioctl numbers.
pub mod sys {
    use std::mem::{offset_of, size_of};

    use libc::{c_int, c_long, c_ulong};

    /// `struct timespec` as the kernel lays it out for 64-bit userspace.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SndTimespec {
        pub tv_sec: i64,
        pub tv_nsec: i64,
    }

    /// `struct snd_interval`: `min`, `max` and the bitfield word (`openmin:1, openmax:1,
    /// integer:1, empty:1`, least significant bit first — checked against the C compiler).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SndInterval {
        pub min: u32,
        pub max: u32,
        pub flags: u32,
    }

    /// `struct snd_mask`: 256 bits.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SndMask {
        pub bits: [u32; 8],
    }

    /// `struct snd_pcm_hw_params`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SndPcmHwParams {
        pub flags: u32,
        pub masks: [SndMask; 3],
        pub mres: [SndMask; 5],
        pub intervals: [SndInterval; 12],
        pub ires: [SndInterval; 9],
        pub rmask: u32,
        pub cmask: u32,
        pub info: u32,
        pub msbits: u32,
        pub rate_num: u32,
        pub rate_den: u32,
        pub fifo_size: c_ulong,
        pub reserved: [u8; 64],
    }

    /// `struct snd_pcm_sw_params`. The kernel writes `boundary` back on success.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SndPcmSwParams {
        pub tstamp_mode: c_int,
        pub period_step: u32,
        pub sleep_min: u32,
        pub avail_min: c_ulong,
        pub xfer_align: c_ulong,
        pub start_threshold: c_ulong,
        pub stop_threshold: c_ulong,
        pub silence_threshold: c_ulong,
        pub silence_size: c_ulong,
        pub boundary: c_ulong,
        pub proto: u32,
        pub tstamp_type: u32,
        pub reserved: [u8; 56],
    }

    /// `struct snd_pcm_channel_info`: where channel `channel` lives in the DMA mmap.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SndPcmChannelInfo {
        pub channel: u32,
        /// mmap offset (`__kernel_off_t`); -1 when the driver has no mmap.
        pub offset: c_long,
        /// Offset of the first sample, in bits.
        pub first: u32,
        /// Distance between samples, in bits.
        pub step: u32,
    }

    /// `struct snd_pcm_mmap_status` (64-bit layout, identical to `__snd_pcm_mmap_status64`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SndPcmMmapStatus {
        pub state: c_int,
        pub pad1: c_int,
        pub hw_ptr: c_ulong,
        pub tstamp: SndTimespec,
        pub suspended_state: c_int,
        pub pad3: c_int,
        pub audio_tstamp: SndTimespec,
    }

    /// `struct snd_pcm_mmap_control`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SndPcmMmapControl {
        pub appl_ptr: c_ulong,
        pub avail_min: c_ulong,
    }

    /// `struct snd_pcm_sync_ptr`; the two 64-byte unions are spelled as struct + padding.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SndPcmSyncPtr {
        pub flags: u32,
        pub pad0: u32,
        /// `s.status`
        pub status: SndPcmMmapStatus,
        pub status_pad: [u8; 64 - size_of::<SndPcmMmapStatus>()],
        /// `c.control`
        pub control: SndPcmMmapControl,
        pub control_pad: [u8; 64 - size_of::<SndPcmMmapControl>()],
    }

    /// `struct snd_pcm_info`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SndPcmInfo {
        pub device: u32,
        pub subdevice: u32,
        pub stream: c_int,
        pub card: c_int,
        pub id: [u8; 64],
        pub name: [u8; 80],
        pub subname: [u8; 32],
        pub dev_class: c_int,
        pub dev_subclass: c_int,
        pub subdevices_count: u32,
        pub subdevices_avail: u32,
        pub sync: [u8; 16],
        pub reserved: [u8; 64],
    }

    /// `struct snd_pcm_status` (64-bit layout).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SndPcmStatus {
        pub state: c_int,
        pub pad1: [u8; 4],
        pub trigger_tstamp: SndTimespec,
        pub tstamp: SndTimespec,
        pub appl_ptr: c_ulong,
        pub hw_ptr: c_ulong,
        pub delay: c_long,
        pub avail: c_ulong,
        pub avail_max: c_ulong,
        pub overrange: c_ulong,
        pub suspended_state: c_int,
        pub audio_tstamp_data: u32,
        pub audio_tstamp: SndTimespec,
        pub driver_tstamp: SndTimespec,
        pub audio_tstamp_accuracy: u32,
        pub reserved: [u8; 52 - 2 * size_of::<SndTimespec>()],
    }

    // Layout pins (the values of <sound/asound.h> on x86_64; also checked against the C
    // compiler by the unit test `layout_matches_kernel_header`).
    const _: () = {
        assert!(size_of::<SndInterval>() == 12);
        assert!(size_of::<SndMask>() == 32);
        assert!(size_of::<SndPcmHwParams>() == 608);
        assert!(offset_of!(SndPcmHwParams, intervals) == 260);
        assert!(offset_of!(SndPcmHwParams, rmask) == 512);
        assert!(offset_of!(SndPcmHwParams, info) == 520);
        assert!(offset_of!(SndPcmHwParams, fifo_size) == 536);
        assert!(size_of::<SndPcmSwParams>() == 136);
        assert!(offset_of!(SndPcmSwParams, avail_min) == 16);
        assert!(offset_of!(SndPcmSwParams, stop_threshold) == 40);
        assert!(offset_of!(SndPcmSwParams, silence_size) == 56);
        assert!(offset_of!(SndPcmSwParams, boundary) == 64);
        assert!(offset_of!(SndPcmSwParams, proto) == 72);
        assert!(offset_of!(SndPcmSwParams, tstamp_type) == 76);
        assert!(size_of::<SndPcmSyncPtr>() == 136);
        assert!(offset_of!(SndPcmSyncPtr, status) == 8);
        assert!(offset_of!(SndPcmSyncPtr, control) == 72);
        assert!(size_of::<SndPcmChannelInfo>() == 24);
        assert!(offset_of!(SndPcmChannelInfo, offset) == 8);
        assert!(offset_of!(SndPcmChannelInfo, first) == 16);
        assert!(offset_of!(SndPcmChannelInfo, step) == 20);
        assert!(size_of::<SndPcmMmapStatus>() == 56);
        assert!(offset_of!(SndPcmMmapStatus, state) == 0);
        assert!(offset_of!(SndPcmMmapStatus, hw_ptr) == 8);
        assert!(offset_of!(SndPcmMmapStatus, tstamp) == 16);
        assert!(offset_of!(SndPcmMmapStatus, suspended_state) == 32);
        assert!(offset_of!(SndPcmMmapStatus, audio_tstamp) == 40);
        assert!(size_of::<SndPcmMmapControl>() == 16);
        assert!(offset_of!(SndPcmMmapControl, appl_ptr) == 0);
        assert!(offset_of!(SndPcmMmapControl, avail_min) == 8);
        assert!(size_of::<SndPcmInfo>() == 288);
        assert!(offset_of!(SndPcmInfo, subdevice) == 4);
        assert!(offset_of!(SndPcmInfo, subdevices_avail) == 204);
        assert!(size_of::<SndPcmStatus>() == 152);
        assert!(offset_of!(SndPcmStatus, hw_ptr) == 48);
        assert!(offset_of!(SndPcmStatus, audio_tstamp) == 96);
    };

    const IOC_NONE: u32 = 0;
    const IOC_WRITE: u32 = 1;
    const IOC_READ: u32 = 2;

    /// `_IOC(dir, type, nr, size)` (asm-generic encoding, used by x86).
    pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
        assert!(size < (1 << 14));
        (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
    }
    pub const fn io(ty: u8, nr: u8) -> u32 {
        ioc(IOC_NONE, ty, nr, 0)
    }
    pub const fn ior<T>(ty: u8, nr: u8) -> u32 {
        ioc(IOC_READ, ty, nr, size_of::<T>())
    }
    pub const fn iow<T>(ty: u8, nr: u8) -> u32 {
        ioc(IOC_WRITE, ty, nr, size_of::<T>())
    }
    pub const fn iowr<T>(ty: u8, nr: u8) -> u32 {
        ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
    }
    /// The argument size encoded in an ioctl number.
    pub const fn ioc_size(code: u32) -> usize {
        ((code >> 16) & 0x3fff) as usize
    }

    pub const SNDRV_PCM_IOCTL_PVERSION: u32 = ior::<c_int>(b'A', 0x00);
    pub const SNDRV_PCM_IOCTL_INFO: u32 = ior::<SndPcmInfo>(b'A', 0x01);
    pub const SNDRV_PCM_IOCTL_TSTAMP: u32 = iow::<c_int>(b'A', 0x02);
    pub const SNDRV_PCM_IOCTL_TTSTAMP: u32 = iow::<c_int>(b'A', 0x03);
    pub const SNDRV_PCM_IOCTL_USER_PVERSION: u32 = iow::<c_int>(b'A', 0x04);
    pub const SNDRV_PCM_IOCTL_HW_REFINE: u32 = iowr::<SndPcmHwParams>(b'A', 0x10);
    pub const SNDRV_PCM_IOCTL_HW_PARAMS: u32 = iowr::<SndPcmHwParams>(b'A', 0x11);
    pub const SNDRV_PCM_IOCTL_HW_FREE: u32 = io(b'A', 0x12);
    pub const SNDRV_PCM_IOCTL_SW_PARAMS: u32 = iowr::<SndPcmSwParams>(b'A', 0x13);
    pub const SNDRV_PCM_IOCTL_STATUS: u32 = ior::<SndPcmStatus>(b'A', 0x20);
    pub const SNDRV_PCM_IOCTL_DELAY: u32 = ior::<c_long>(b'A', 0x21);
    pub const SNDRV_PCM_IOCTL_HWSYNC: u32 = io(b'A', 0x22);
    pub const SNDRV_PCM_IOCTL_SYNC_PTR: u32 = iowr::<SndPcmSyncPtr>(b'A', 0x23);
    pub const SNDRV_PCM_IOCTL_STATUS_EXT: u32 = iowr::<SndPcmStatus>(b'A', 0x24);
    pub const SNDRV_PCM_IOCTL_CHANNEL_INFO: u32 = ior::<SndPcmChannelInfo>(b'A', 0x32);
    pub const SNDRV_PCM_IOCTL_PREPARE: u32 = io(b'A', 0x40);
    pub const SNDRV_PCM_IOCTL_RESET: u32 = io(b'A', 0x41);
    pub const SNDRV_PCM_IOCTL_START: u32 = io(b'A', 0x42);
    pub const SNDRV_PCM_IOCTL_DROP: u32 = io(b'A', 0x43);
    pub const SNDRV_PCM_IOCTL_DRAIN: u32 = io(b'A', 0x44);
    pub const SNDRV_PCM_IOCTL_PAUSE: u32 = iow::<c_int>(b'A', 0x45);
    pub const SNDRV_PCM_IOCTL_REWIND: u32 = iow::<c_ulong>(b'A', 0x46);
    pub const SNDRV_PCM_IOCTL_RESUME: u32 = io(b'A', 0x47);
    pub const SNDRV_PCM_IOCTL_XRUN: u32 = io(b'A', 0x48);
    pub const SNDRV_PCM_IOCTL_FORWARD: u32 = iow::<c_ulong>(b'A', 0x49);
    pub const SNDRV_PCM_IOCTL_LINK: u32 = iow::<c_int>(b'A', 0x60);
    pub const SNDRV_PCM_IOCTL_UNLINK: u32 = io(b'A', 0x61);
    pub const SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE: u32 = iow::<c_int>(b'U', 0x32);

    // The numbers as printed by a C program against linux-libc-dev 6.1 on x86_64.
    const _: () = {
        assert!(SNDRV_PCM_IOCTL_PVERSION == 0x8004_4100);
        assert!(SNDRV_PCM_IOCTL_INFO == 0x8120_4101);
        assert!(SNDRV_PCM_IOCTL_TTSTAMP == 0x4004_4103);
        assert!(SNDRV_PCM_IOCTL_USER_PVERSION == 0x4004_4104);
        assert!(SNDRV_PCM_IOCTL_HW_REFINE == 0xc260_4110);
        assert!(SNDRV_PCM_IOCTL_HW_PARAMS == 0xc260_4111);
        assert!(SNDRV_PCM_IOCTL_HW_FREE == 0x4112);
        assert!(SNDRV_PCM_IOCTL_SW_PARAMS == 0xc088_4113);
        assert!(SNDRV_PCM_IOCTL_STATUS == 0x8098_4120);
        assert!(SNDRV_PCM_IOCTL_HWSYNC == 0x4122);
        assert!(SNDRV_PCM_IOCTL_SYNC_PTR == 0xc088_4123);
        assert!(SNDRV_PCM_IOCTL_CHANNEL_INFO == 0x8018_4132);
        assert!(SNDRV_PCM_IOCTL_PREPARE == 0x4140);
        assert!(SNDRV_PCM_IOCTL_START == 0x4142);
        assert!(SNDRV_PCM_IOCTL_DROP == 0x4143);
        assert!(SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE == 0x4004_5532);
    };
}

use self::sys::*;

// ---------------------------------------------------------------------------------------------
// Format helpers
// ---------------------------------------------------------------------------------------------

/// Physical width of one sample in bits (`snd_pcm_format_physical_width`), `None` for formats
/// without one (MPEG, GSM, SPECIAL, unknown).
pub fn format_physical_width(format: i32) -> Option<u32> {
    Some(match format {
        SNDRV_PCM_FORMAT_S8 | SNDRV_PCM_FORMAT_U8 => 8,
        SNDRV_PCM_FORMAT_S16_LE..=SNDRV_PCM_FORMAT_U16_BE => 16,
        SNDRV_PCM_FORMAT_S24_LE..=SNDRV_PCM_FORMAT_U24_BE => 32,
        SNDRV_PCM_FORMAT_S32_LE..=SNDRV_PCM_FORMAT_FLOAT_BE => 32,
        SNDRV_PCM_FORMAT_FLOAT64_LE | SNDRV_PCM_FORMAT_FLOAT64_BE => 64,
        SNDRV_PCM_FORMAT_IEC958_SUBFRAME_LE | SNDRV_PCM_FORMAT_IEC958_SUBFRAME_BE => 32,
        SNDRV_PCM_FORMAT_MU_LAW | SNDRV_PCM_FORMAT_A_LAW => 8,
        SNDRV_PCM_FORMAT_IMA_ADPCM => 4,
        SNDRV_PCM_FORMAT_S20_LE..=SNDRV_PCM_FORMAT_U20_BE => 32,
        SNDRV_PCM_FORMAT_S24_3LE..=SNDRV_PCM_FORMAT_U18_3BE => 24,
        SNDRV_PCM_FORMAT_G723_24 => 3,
        SNDRV_PCM_FORMAT_G723_24_1B | SNDRV_PCM_FORMAT_G723_40_1B => 8,
        SNDRV_PCM_FORMAT_G723_40 => 5,
        SNDRV_PCM_FORMAT_DSD_U8 => 8,
        SNDRV_PCM_FORMAT_DSD_U16_LE | SNDRV_PCM_FORMAT_DSD_U16_BE => 16,
        SNDRV_PCM_FORMAT_DSD_U32_LE | SNDRV_PCM_FORMAT_DSD_U32_BE => 32,
        _ => return None,
    })
}

const FORMAT_NAMES: [&str; 53] = [
    "S8",
    "U8",
    "S16_LE",
    "S16_BE",
    "U16_LE",
    "U16_BE",
    "S24_LE",
    "S24_BE",
    "U24_LE",
    "U24_BE",
    "S32_LE",
    "S32_BE",
    "U32_LE",
    "U32_BE",
    "FLOAT_LE",
    "FLOAT_BE",
    "FLOAT64_LE",
    "FLOAT64_BE",
    "IEC958_SUBFRAME_LE",
    "IEC958_SUBFRAME_BE",
    "MU_LAW",
    "A_LAW",
    "IMA_ADPCM",
    "MPEG",
    "GSM",
    "S20_LE",
    "S20_BE",
    "U20_LE",
    "U20_BE",
    "",
    "",
    "SPECIAL",
    "S24_3LE",
    "S24_3BE",
    "U24_3LE",
    "U24_3BE",
    "S20_3LE",
    "S20_3BE",
    "U20_3LE",
    "U20_3BE",
    "S18_3LE",
    "S18_3BE",
    "U18_3LE",
    "U18_3BE",
    "G723_24",
    "G723_24_1B",
    "G723_40",
    "G723_40_1B",
    "DSD_U8",
    "DSD_U16_LE",
    "DSD_U32_LE",
    "DSD_U16_BE",
    "DSD_U32_BE",
];

/// alsa-lib's name of a format (`S16_LE`, …), `"unknown"` if there is none.
pub fn format_name(format: i32) -> &'static str {
    format_name_opt(format).unwrap_or("unknown")
}

/// alsa-lib's name of a format, or `None` if unknown.
pub fn format_name_opt(format: i32) -> Option<&'static str> {
    usize::try_from(format)
        .ok()
        .and_then(|i| FORMAT_NAMES.get(i))
        .copied()
        .filter(|s| !s.is_empty())
}

/// The format number of an alsa-lib format name (case-insensitive; `S16`, `S32`, `FLOAT`, …
/// mean native endianness).
pub fn format_from_name(name: &str) -> Option<i32> {
    let up = name.to_ascii_uppercase();
    let alias = match up.as_str() {
        "S16" => Some(SNDRV_PCM_FORMAT_S16),
        "U16" => Some(SNDRV_PCM_FORMAT_U16),
        "S24" => Some(SNDRV_PCM_FORMAT_S24),
        "U24" => Some(SNDRV_PCM_FORMAT_U24),
        "S32" => Some(SNDRV_PCM_FORMAT_S32),
        "U32" => Some(SNDRV_PCM_FORMAT_U32),
        "FLOAT" => Some(SNDRV_PCM_FORMAT_FLOAT),
        "FLOAT64" => Some(SNDRV_PCM_FORMAT_FLOAT64),
        _ => None,
    };
    alias.or_else(|| {
        FORMAT_NAMES
            .iter()
            .position(|n| !n.is_empty() && *n == up)
            .map(|i| i as i32)
    })
}

fn format_label(format: i32) -> String {
    format_name_opt(format).map_or_else(|| format!("format #{format}"), str::to_owned)
}

fn access_label(access: u32) -> &'static str {
    match access as i32 {
        SNDRV_PCM_ACCESS_MMAP_INTERLEAVED => "MMAP_INTERLEAVED",
        SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED => "MMAP_NONINTERLEAVED",
        SNDRV_PCM_ACCESS_MMAP_COMPLEX => "MMAP_COMPLEX",
        SNDRV_PCM_ACCESS_RW_INTERLEAVED => "RW_INTERLEAVED",
        SNDRV_PCM_ACCESS_RW_NONINTERLEAVED => "RW_NONINTERLEAVED",
        _ => "unknown access",
    }
}

/// A name for a `SNDRV_PCM_STATE_*` value.
pub fn state_name(state: i32) -> &'static str {
    match state {
        SNDRV_PCM_STATE_OPEN => "OPEN",
        SNDRV_PCM_STATE_SETUP => "SETUP",
        SNDRV_PCM_STATE_PREPARED => "PREPARED",
        SNDRV_PCM_STATE_RUNNING => "RUNNING",
        SNDRV_PCM_STATE_XRUN => "XRUN",
        SNDRV_PCM_STATE_DRAINING => "DRAINING",
        SNDRV_PCM_STATE_PAUSED => "PAUSED",
        SNDRV_PCM_STATE_SUSPENDED => "SUSPENDED",
        SNDRV_PCM_STATE_DISCONNECTED => "DISCONNECTED",
        _ => "unknown state",
    }
}

// ---------------------------------------------------------------------------------------------
// Intervals, masks and hw_params (pure logic)
// ---------------------------------------------------------------------------------------------

impl SndInterval {
    pub const OPENMIN: u32 = 1 << 0;
    pub const OPENMAX: u32 = 1 << 1;
    pub const INTEGER: u32 = 1 << 2;
    pub const EMPTY: u32 = 1 << 3;

    /// Every value (`snd_interval_any`).
    pub const fn any() -> Self {
        SndInterval {
            min: 0,
            max: u32::MAX,
            flags: 0,
        }
    }
    /// Exactly `v`, closed, integer.
    pub const fn exact(v: u32) -> Self {
        SndInterval {
            min: v,
            max: v,
            flags: Self::INTEGER,
        }
    }
    pub fn openmin(&self) -> bool {
        self.flags & Self::OPENMIN != 0
    }
    pub fn openmax(&self) -> bool {
        self.flags & Self::OPENMAX != 0
    }
    /// Empty by flag or because the bounds leave no room.
    pub fn is_empty(&self) -> bool {
        self.flags & Self::EMPTY != 0
            || self.min > self.max
            || (self.min == self.max && (self.openmin() || self.openmax()))
    }
    /// `snd_interval_single`.
    pub fn is_single(&self) -> bool {
        !self.is_empty()
            && (self.min == self.max
                || (self.min.checked_add(1) == Some(self.max)
                    && (self.openmin() || self.openmax())))
    }
    /// The value of a single interval (`snd_interval_value`), else `None`.
    pub fn value(&self) -> Option<u32> {
        if !self.is_single() {
            return None;
        }
        Some(if self.openmin() && !self.openmax() {
            self.max
        } else {
            self.min
        })
    }
    /// Smallest integer in the interval.
    pub fn first(&self) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
        let v = if self.openmin() {
            self.min.checked_add(1)?
        } else {
            self.min
        };
        self.contains(v).then_some(v)
    }
    /// Largest integer in the interval.
    pub fn last(&self) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
        let v = if self.openmax() {
            self.max.checked_sub(1)?
        } else {
            self.max
        };
        self.contains(v).then_some(v)
    }
    pub fn contains(&self, v: u32) -> bool {
        !self.is_empty()
            && (v > self.min || (v == self.min && !self.openmin()))
            && (v < self.max || (v == self.max && !self.openmax()))
    }
    /// Raise the lower bound to `v` (closed), if that is a restriction.
    pub fn restrict_min(&mut self, v: u32) {
        if v > self.min {
            self.min = v;
            self.flags &= !Self::OPENMIN;
        }
    }
    /// Lower the upper bound to `v` (closed), if that is a restriction.
    pub fn restrict_max(&mut self, v: u32) {
        if v < self.max {
            self.max = v;
            self.flags &= !Self::OPENMAX;
        }
    }
}

impl fmt::Display for SndInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        if self.min == self.max {
            return write!(f, "{}", self.min);
        }
        write!(
            f,
            "{}{}, {}{}",
            if self.openmin() { '(' } else { '[' },
            self.min,
            self.max,
            if self.openmax() { ')' } else { ']' }
        )
    }
}

impl SndMask {
    /// All 256 bits set (`snd_mask_any` in the kernel).
    pub const fn any() -> Self {
        SndMask {
            bits: [u32::MAX; 8],
        }
    }
    pub const fn none() -> Self {
        SndMask { bits: [0; 8] }
    }
    pub fn test(&self, v: u32) -> bool {
        v < 256 && self.bits[(v / 32) as usize] & (1 << (v % 32)) != 0
    }
    /// Keep only `v`.
    pub fn set_only(&mut self, v: u32) {
        *self = Self::none();
        if v < 256 {
            self.bits[(v / 32) as usize] = 1 << (v % 32);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }
    /// The set values, ascending.
    pub fn values(&self) -> Vec<u32> {
        (0..256).filter(|&v| self.test(v)).collect()
    }
    /// The value of a one-bit mask.
    pub fn single(&self) -> Option<u32> {
        let v = self.values();
        (v.len() == 1).then(|| v[0])
    }
}

impl SndPcmHwParams {
    /// The whole configuration space (`_snd_pcm_hw_params_any`): all masks full, all intervals
    /// `[0, UINT_MAX]`, every parameter marked for refinement.
    pub fn any() -> Self {
        SndPcmHwParams {
            flags: 0,
            masks: [SndMask::any(); 3],
            mres: [SndMask::none(); 5],
            intervals: [SndInterval::any(); 12],
            ires: [SndInterval {
                min: 0,
                max: 0,
                flags: 0,
            }; 9],
            rmask: !0,
            cmask: 0,
            info: !0,
            msbits: 0,
            rate_num: 0,
            rate_den: 0,
            fifo_size: 0,
            reserved: [0; 64],
        }
    }
    pub fn mask(&self, param: usize) -> &SndMask {
        assert!(param <= LAST_MASK, "hw param {param} is not a mask");
        &self.masks[param]
    }
    pub fn mask_mut(&mut self, param: usize) -> &mut SndMask {
        assert!(param <= LAST_MASK, "hw param {param} is not a mask");
        &mut self.masks[param]
    }
    pub fn interval(&self, param: usize) -> &SndInterval {
        assert!(
            (FIRST_INTERVAL..=LAST_INTERVAL).contains(&param),
            "hw param {param} is not an interval"
        );
        &self.intervals[param - FIRST_INTERVAL]
    }
    pub fn interval_mut(&mut self, param: usize) -> &mut SndInterval {
        assert!(
            (FIRST_INTERVAL..=LAST_INTERVAL).contains(&param),
            "hw param {param} is not an interval"
        );
        &mut self.intervals[param - FIRST_INTERVAL]
    }
    /// Whether some parameter is already known to be unsatisfiable without asking the kernel.
    fn locally_empty(&self) -> bool {
        self.masks.iter().any(SndMask::is_empty) || self.intervals.iter().any(SndInterval::is_empty)
    }
}

fn param_name(param: usize) -> &'static str {
    match param {
        SNDRV_PCM_HW_PARAM_ACCESS => "access",
        SNDRV_PCM_HW_PARAM_FORMAT => "format",
        SNDRV_PCM_HW_PARAM_SUBFORMAT => "subformat",
        SNDRV_PCM_HW_PARAM_SAMPLE_BITS => "sample bits",
        SNDRV_PCM_HW_PARAM_FRAME_BITS => "frame bits",
        SNDRV_PCM_HW_PARAM_CHANNELS => "channels",
        SNDRV_PCM_HW_PARAM_RATE => "rate",
        SNDRV_PCM_HW_PARAM_PERIOD_TIME => "period time (us)",
        SNDRV_PCM_HW_PARAM_PERIOD_SIZE => "period size (frames)",
        SNDRV_PCM_HW_PARAM_PERIOD_BYTES => "period bytes",
        SNDRV_PCM_HW_PARAM_PERIODS => "periods",
        SNDRV_PCM_HW_PARAM_BUFFER_TIME => "buffer time (us)",
        SNDRV_PCM_HW_PARAM_BUFFER_SIZE => "buffer size (frames)",
        SNDRV_PCM_HW_PARAM_BUFFER_BYTES => "buffer bytes",
        SNDRV_PCM_HW_PARAM_TICK_TIME => "tick time",
        _ => "unknown parameter",
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing a configuration (HW_REFINE driven; testable with a fake refiner)
// ---------------------------------------------------------------------------------------------

/// What the caller wants from the hardware. `None` takes the default:
/// - `format`: the first of [`DEFAULT_FORMATS`] the device supports (dmix's order);
/// - `rate` 48000, `channels` 2 (the nearest the device supports);
/// - period: `period_time` (µs, converted with the chosen rate) wins over `period_size`;
///   without either, a quarter of the buffer if a buffer is requested, else 1024 frames;
/// - buffer: `buffer_time` wins over `buffer_size`; `periods` (at least 2) counts only when
///   neither is given; without any of the three, 4 periods.
///
/// All values are "near": the nearest the device supports is taken. A requested `format` is
/// exact (an unsupported one is an error). If the result has a single period, the period is
/// halved and the search repeated (dmix).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwRequest {
    pub format: Option<i32>,
    pub rate: Option<u32>,
    pub channels: Option<u32>,
    pub period_size: Option<u64>,
    /// Microseconds.
    pub period_time: Option<u32>,
    pub buffer_size: Option<u64>,
    /// Microseconds.
    pub buffer_time: Option<u32>,
    pub periods: Option<u32>,
}

pub const DEFAULT_RATE: u32 = 48000;
pub const DEFAULT_CHANNELS: u32 = 2;
pub const DEFAULT_PERIOD_SIZE: u64 = 1024;
pub const DEFAULT_PERIODS: u32 = 4;

/// Frames in `us` microseconds at `rate`, rounded to nearest, at least 1.
pub fn us_to_frames(us: u32, rate: u32) -> u64 {
    ((u64::from(us) * u64::from(rate) + 500_000) / 1_000_000).max(1)
}

/// Something that refines a configuration space: the kernel (HW_REFINE) or a test double.
trait Refine {
    /// Refine `p` in place. `Ok(false)`: no configuration satisfies `p` (the kernel's EINVAL);
    /// `p` is then unspecified. `Err`: the refinement itself failed.
    fn refine(&mut self, p: &mut SndPcmHwParams) -> std::result::Result<bool, Errno>;
}

/// Refine a copy of `p`; on success return it.
fn try_refine<R: Refine>(
    r: &mut R,
    p: &SndPcmHwParams,
) -> std::result::Result<Option<SndPcmHwParams>, Errno> {
    let mut q = *p;
    if q.locally_empty() {
        return Ok(None);
    }
    q.rmask = !0;
    Ok(if r.refine(&mut q)? { Some(q) } else { None })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Below,
    Above,
}

/// The value nearest `bound` on one side (inclusive) that the device accepts exactly, with
/// the refined space fixing it.
fn search_side<R: Refine>(
    r: &mut R,
    p: &SndPcmHwParams,
    param: usize,
    mut bound: u32,
    side: Side,
) -> std::result::Result<Option<(u32, SndPcmHwParams)>, Errno> {
    // Interval refinement is not exact (e.g. period sizes that must divide a fixed buffer), so
    // a bound the kernel accepts may still not be a valid value by itself: step past it.
    for _ in 0..64 {
        let mut q = *p;
        match side {
            Side::Below => q.interval_mut(param).restrict_max(bound),
            Side::Above => q.interval_mut(param).restrict_min(bound),
        }
        let Some(q) = try_refine(r, &q)? else {
            return Ok(None);
        };
        let iv = q.interval(param);
        let Some(v) = (match side {
            Side::Below => iv.last(),
            Side::Above => iv.first(),
        }) else {
            return Ok(None);
        };
        let mut e = q;
        *e.interval_mut(param) = SndInterval::exact(v);
        if let Some(e) = try_refine(r, &e)? {
            return Ok(Some((v, e)));
        }
        bound = match side {
            Side::Below => match v.checked_sub(1) {
                Some(b) => b,
                None => return Ok(None),
            },
            Side::Above => match v.checked_add(1) {
                Some(b) => b,
                None => return Ok(None),
            },
        };
    }
    Ok(None)
}

/// Fix interval parameter `param` at the supported value nearest `target` (ties: the lower).
/// `Ok(None)` if no value at all is possible.
fn set_near<R: Refine>(
    r: &mut R,
    p: &mut SndPcmHwParams,
    param: usize,
    target: u32,
) -> std::result::Result<Option<u32>, Errno> {
    if p.interval(param).contains(target) {
        let mut e = *p;
        *e.interval_mut(param) = SndInterval::exact(target);
        if let Some(e) = try_refine(r, &e)? {
            *p = e;
            return Ok(Some(target));
        }
    }
    let below = search_side(r, p, param, target, Side::Below)?;
    let above = match target.checked_add(1) {
        Some(t) => search_side(r, p, param, t, Side::Above)?,
        None => None,
    };
    let best = match (below, above) {
        (Some(b), Some(a)) => {
            if target - b.0 <= a.0 - target {
                Some(b)
            } else {
                Some(a)
            }
        }
        (b, a) => b.or(a),
    };
    Ok(best.map(|(v, e)| {
        *p = e;
        v
    }))
}

fn refine_failed(dev: &str, e: Errno) -> Error {
    classify(format!("SNDRV_PCM_IOCTL_HW_REFINE on {dev}"), e)
}

fn not_supported(
    dev: &str,
    param: usize,
    wanted: impl fmt::Display,
    space: &SndPcmHwParams,
) -> Error {
    Error::config(format!(
        "{dev}: no {} near {wanted} is possible; the device supports {} (with the parameters chosen so far)",
        param_name(param),
        space.interval(param)
    ))
}

fn set_near_or_err<R: Refine>(
    r: &mut R,
    p: &mut SndPcmHwParams,
    param: usize,
    target: u64,
    dev: &str,
) -> Result<u32> {
    let t = u32::try_from(target).unwrap_or(u32::MAX);
    let before = *p;
    set_near(r, p, param, t)
        .map_err(|e| refine_failed(dev, e))?
        .ok_or_else(|| not_supported(dev, param, target, &before))
}

fn has_two_periods(p: &SndPcmHwParams) -> bool {
    match (
        p.interval(SNDRV_PCM_HW_PARAM_PERIOD_SIZE).value(),
        p.interval(SNDRV_PCM_HW_PARAM_BUFFER_SIZE).value(),
    ) {
        (Some(ps), Some(bs)) => u64::from(bs) >= 2 * u64::from(ps),
        _ => p
            .interval(SNDRV_PCM_HW_PARAM_PERIODS)
            .last()
            .is_some_and(|n| n >= 2),
    }
}

fn list_formats(m: &SndMask) -> String {
    let v: Vec<String> = m
        .values()
        .into_iter()
        .filter(|&f| f as i32 <= SNDRV_PCM_FORMAT_LAST)
        .map(|f| format_label(f as i32))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Narrow the configuration space to one configuration following `req` (see [`HwRequest`]).
/// The result is a fully refined space with every requested parameter fixed, ready for
/// HW_PARAMS.
fn choose_params<R: Refine>(r: &mut R, req: &HwRequest, dev: &str) -> Result<SndPcmHwParams> {
    let any = SndPcmHwParams::any();
    let base = try_refine(r, &any)
        .map_err(|e| refine_failed(dev, e))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Device,
                libc::EINVAL,
                format!("{dev}: the driver refuses every configuration"),
            )
        })?;

    // Access: mmap, interleaved preferred (dmix).
    let mut p = None;
    for acc in [
        SNDRV_PCM_ACCESS_MMAP_INTERLEAVED,
        SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED,
    ] {
        let mut q = base;
        q.mask_mut(SNDRV_PCM_HW_PARAM_ACCESS).set_only(acc as u32);
        if let Some(q) = try_refine(r, &q).map_err(|e| refine_failed(dev, e))? {
            p = Some(q);
            break;
        }
    }
    let mut p = p.ok_or_else(|| {
        let supported: Vec<&str> =
            base.mask(SNDRV_PCM_HW_PARAM_ACCESS).values().into_iter().filter(|&a| a <= 4).map(access_label).collect();
        Error::config(format!(
            "{dev}: the device supports neither MMAP_INTERLEAVED nor MMAP_NONINTERLEAVED access (it supports: {})",
            if supported.is_empty() { "none".to_string() } else { supported.join(", ") }
        ))
    })?;

    // Format: exact if requested, else dmix's list.
    let try_format = |r: &mut R, p: &SndPcmHwParams, f: i32| -> Result<Option<SndPcmHwParams>> {
        let mut q = *p;
        q.mask_mut(SNDRV_PCM_HW_PARAM_FORMAT).set_only(f as u32);
        try_refine(r, &q).map_err(|e| refine_failed(dev, e))
    };
    match req.format {
        Some(f) => {
            let ok = if (0..=SNDRV_PCM_FORMAT_LAST).contains(&f) {
                try_format(r, &p, f)?
            } else {
                None
            };
            p = ok.ok_or_else(|| {
                Error::config(format!(
                    "{dev}: format {} is not supported; the device supports {}",
                    format_label(f),
                    list_formats(p.mask(SNDRV_PCM_HW_PARAM_FORMAT))
                ))
            })?;
        }
        None => {
            let mut found = None;
            for f in DEFAULT_FORMATS {
                if let Some(q) = try_format(r, &p, f)? {
                    found = Some(q);
                    break;
                }
            }
            p = found.ok_or_else(|| {
                let tried: Vec<String> = DEFAULT_FORMATS.iter().map(|&f| format_label(f)).collect();
                Error::config(format!(
                    "{dev}: none of the mixable formats {} is supported; the device supports {} (set a format explicitly)",
                    tried.join(", "),
                    list_formats(p.mask(SNDRV_PCM_HW_PARAM_FORMAT))
                ))
            })?;
        }
    }

    let channels = req.channels.unwrap_or(DEFAULT_CHANNELS);
    set_near_or_err(r, &mut p, SNDRV_PCM_HW_PARAM_CHANNELS, channels.into(), dev)?;
    let rate_req = req.rate.unwrap_or(DEFAULT_RATE);
    let rate = set_near_or_err(r, &mut p, SNDRV_PCM_HW_PARAM_RATE, rate_req.into(), dev)?;

    let buffer_target = req
        .buffer_time
        .map(|us| us_to_frames(us, rate))
        .or(req.buffer_size)
        .filter(|&b| b > 0);
    let mut period_target = req
        .period_time
        .map(|us| us_to_frames(us, rate))
        .or(req.period_size)
        .filter(|&p| p > 0)
        .unwrap_or_else(|| buffer_target.map_or(DEFAULT_PERIOD_SIZE, |b| (b / 4).max(1)));
    let periods_target = match buffer_target {
        Some(_) => None,
        // A mixer needs at least 2 periods (one playing, one being written).
        None => Some(
            req.periods
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_PERIODS)
                .max(2),
        ),
    };

    let mut last = None;
    for _ in 0..10 {
        let mut q = p;
        if let Some(b) = buffer_target {
            set_near_or_err(r, &mut q, SNDRV_PCM_HW_PARAM_BUFFER_SIZE, b, dev)?;
        }
        let period = set_near_or_err(
            r,
            &mut q,
            SNDRV_PCM_HW_PARAM_PERIOD_SIZE,
            period_target,
            dev,
        )?;
        if let Some(n) = periods_target {
            set_near_or_err(r, &mut q, SNDRV_PCM_HW_PARAM_PERIODS, n.into(), dev)?;
        }
        if has_two_periods(&q) {
            return Ok(q);
        }
        last = Some(q);
        if period <= 1 {
            break;
        }
        period_target = u64::from(period / 2);
    }
    let q = last.unwrap_or(p);
    Err(Error::config(format!(
        "{dev}: cannot configure at least 2 periods (last try: period {} frames, buffer {} frames); \
         the device supports period size {} and buffer size {}",
        q.interval(SNDRV_PCM_HW_PARAM_PERIOD_SIZE),
        q.interval(SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
        p.interval(SNDRV_PCM_HW_PARAM_PERIOD_SIZE),
        p.interval(SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
    )))
}

// ---------------------------------------------------------------------------------------------
// The configuration as set
// ---------------------------------------------------------------------------------------------

/// Where one channel's samples live in the DMA mmap (from CHANNEL_INFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelArea {
    /// mmap offset of the area (0 for every driver using the core's CHANNEL_INFO).
    pub offset: u64,
    /// Offset of the channel's first sample from `offset`, in bits.
    pub first: u32,
    /// Distance between consecutive samples of the channel, in bits.
    pub step: u32,
}

/// The hardware configuration as the kernel set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwConfig {
    pub format: i32,
    pub rate: u32,
    pub channels: u32,
    pub period_size: u64,
    pub buffer_size: u64,
    /// Where hw_ptr and appl_ptr wrap (a multiple of buffer_size).
    pub boundary: u64,
    /// MMAP_INTERLEAVED (else MMAP_NONINTERLEAVED).
    pub interleaved: bool,
    /// Physical width of one sample, in bits.
    pub sample_bits: u32,
    /// Per channel, from CHANNEL_INFO; all share one `offset` (see [`HwConfig::mmap_offset`]).
    pub areas: Vec<ChannelArea>,
    /// Bytes to mmap at `areas[0].offset` to cover every channel's `buffer_size` samples.
    /// Interleaved: `buffer_size * frame bytes`.
    pub dma_bytes: usize,
}

impl HwConfig {
    /// The mmap offset of the DMA mapping: the lowest channel area offset (= `areas[0].offset`
    /// for areas made by this module).
    pub fn mmap_offset(&self) -> u64 {
        self.areas.iter().map(|a| a.offset).min().unwrap_or(0)
    }
    /// Bytes per frame (interleaved layout).
    pub fn frame_bytes(&self) -> usize {
        (self.sample_bits as usize * self.channels as usize) / 8
    }
}

/// Give every area the lowest offset, folding the difference into `first` (bits).
fn normalize_areas(areas: &[ChannelArea]) -> Option<Vec<ChannelArea>> {
    let base = areas.iter().map(|a| a.offset).min()?;
    areas
        .iter()
        .map(|a| {
            let extra = (a.offset - base).checked_mul(8)?;
            let first = u32::try_from(u64::from(a.first).checked_add(extra)?).ok()?;
            Some(ChannelArea {
                offset: base,
                first,
                step: a.step,
            })
        })
        .collect()
}

/// The mapping that covers all `areas` for `buffer_size` samples of `width` bits:
/// `(mmap offset, length)`.
fn dma_span(areas: &[ChannelArea], buffer_size: u64, width: u32) -> Option<(u64, usize)> {
    let base = areas.iter().map(|a| a.offset).min()?;
    let mut end = base;
    for a in areas {
        let bits = u64::from(a.first)
            .checked_add(u64::from(a.step).checked_mul(buffer_size.checked_sub(1)?)?)?
            .checked_add(u64::from(width))?;
        end = end.max(a.offset.checked_add(bits.div_ceil(8))?);
    }
    usize::try_from(end - base)
        .ok()
        .filter(|&n| n > 0)
        .map(|n| (base, n))
}

/// A STATUS ioctl result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub state: i32,
    pub suspended_state: i32,
    pub trigger_tstamp: SndTimespec,
    /// Time of the last hw_ptr update (tstamp mode ENABLE) or of the call.
    pub tstamp: SndTimespec,
    pub appl_ptr: u64,
    pub hw_ptr: u64,
    pub delay: i64,
    pub avail: u64,
    pub avail_max: u64,
    pub audio_tstamp: SndTimespec,
    pub driver_tstamp: SndTimespec,
}

/// A SYNC_PTR ioctl result (read-only query: the kernel's appl_ptr/avail_min are not changed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncPtrSnapshot {
    pub state: i32,
    pub hw_ptr: u64,
    pub tstamp: SndTimespec,
    pub appl_ptr: u64,
    pub avail_min: u64,
}

/// An INFO ioctl result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcmInfo {
    pub card: i32,
    pub device: u32,
    pub subdevice: u32,
    pub stream: i32,
    pub id: String,
    pub name: String,
    pub subname: String,
    pub dev_class: i32,
    pub subdevices_count: u32,
    pub subdevices_avail: u32,
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// ioctl plumbing
// ---------------------------------------------------------------------------------------------

/// Plain data the kernel may fill with any bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or primitive) types made only of integers and arrays of
/// integers, for which every bit pattern is a valid value.
unsafe trait Pod: Copy {}
// SAFETY: primitive integers: every bit pattern is valid.
unsafe impl Pod for c_int {}
// SAFETY: repr(C) structs of integers and integer arrays only (see `sys`).
unsafe impl Pod for SndPcmHwParams {}
// SAFETY: as above.
unsafe impl Pod for SndPcmSwParams {}
// SAFETY: as above.
unsafe impl Pod for SndPcmChannelInfo {}
// SAFETY: as above.
unsafe impl Pod for SndPcmSyncPtr {}
// SAFETY: as above.
unsafe impl Pod for SndPcmInfo {}
// SAFETY: as above.
unsafe impl Pod for SndPcmStatus {}

/// An ioctl with a pointer argument. `code` must encode `size_of::<T>()` (checked).
fn ioctl_ptr<T: Pod>(fd: BorrowedFd<'_>, code: u32, arg: &mut T) -> nix::Result<c_int> {
    assert_eq!(
        ioc_size(code),
        size_of::<T>(),
        "ioctl {code:#x}: argument size mismatch"
    );
    loop {
        // SAFETY: `arg` is a live, exclusively borrowed `T` for the whole call; `code` encodes
        // `size_of::<T>()`, so the kernel reads/writes at most that many bytes through the
        // pointer, and any bytes it writes form a valid `T` (`T: Pod`).
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), code as libc::Ioctl, arg as *mut T) };
        match Errno::result(r) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// An ioctl without argument (`_IO`).
fn ioctl_none(fd: BorrowedFd<'_>, code: u32) -> nix::Result<c_int> {
    assert_eq!(code >> 30, 0, "ioctl {code:#x} takes an argument");
    loop {
        // SAFETY: an `_IO` ioctl takes no pointer; the kernel does not touch our memory.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), code as libc::Ioctl, 0 as libc::c_ulong) };
        match Errno::result(r) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// The error for a failed operation `what` (naming the device and the call).
fn classify(what: String, e: Errno) -> Error {
    let (kind, hint) = match e {
        Errno::ENODEV => (ErrorKind::Disconnected, " (the device was disconnected)"),
        Errno::EPIPE => (ErrorKind::Xrun, " (xrun)"),
        Errno::EACCES | Errno::EPERM => (ErrorKind::Access, ""),
        Errno::EBADFD => (
            ErrorKind::Device,
            " (the stream is in the wrong state for this)",
        ),
        _ => (ErrorKind::Device, ""),
    };
    if kind == ErrorKind::Device && hint.is_empty() {
        return Error::device(what, e);
    }
    Error::new(kind, e as i32, format!("{what}: {}{hint}", e.desc()))
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
}

fn page_align(n: usize) -> usize {
    let ps = page_size();
    n.div_ceil(ps) * ps
}

struct DevRefiner<'a>(BorrowedFd<'a>);

impl Refine for DevRefiner<'_> {
    fn refine(&mut self, p: &mut SndPcmHwParams) -> std::result::Result<bool, Errno> {
        match ioctl_ptr(self.0, SNDRV_PCM_IOCTL_HW_REFINE, p) {
            Ok(_) => Ok(true),
            Err(Errno::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory mappings
// ---------------------------------------------------------------------------------------------

/// One `mmap` of the PCM fd, unmapped on drop. The mapping keeps the device file referenced by
/// itself, so it stays valid after the fd is closed.
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: ProtFlags, offset: u64) -> nix::Result<Mapping> {
        let nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        let off = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
        // SAFETY: no address hint, so the kernel picks a fresh range that overlaps no existing
        // Rust object; the fd is valid for the duration of the call.
        let ptr = unsafe { mman::mmap(None, nz, prot, MapFlags::MAP_SHARED, fd, off)? };
        Ok(Mapping { ptr, len })
    }
    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < self.len);
        self.ptr.as_ptr().cast::<u8>().wrapping_add(offset)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping created by `Mapping::new` and not unmapped
        // elsewhere; no reference into it outlives `self` (accessors hand out raw pointers or
        // copies only).
        let _ = unsafe { mman::munmap(self.ptr, self.len) };
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:p}+{:#x}", self.ptr, self.len)
    }
}

// SAFETY: a Mapping is a range of shared memory owned by the process, not by a thread; it holds
// no thread-affine state, and all access to its contents goes through atomics (status/control
// pages) or raw pointers whose synchronisation is the user's business (DMA buffer).
unsafe impl Send for Mapping {}
// SAFETY: see above; `&Mapping` exposes no non-atomic interior access.
unsafe impl Sync for Mapping {}

/// Read-only view of the kernel's `snd_pcm_mmap_status` page.
///
/// `Send + Sync`: it is a view of memory the kernel updates concurrently; every read is an
/// atomic load, so sharing it between threads is as safe as reading it from one.
pub struct StatusPage {
    map: Mapping,
}

impl StatusPage {
    fn load_u64(&self, offset: usize) -> u64 {
        let p = self.map.at(offset).cast::<u64>();
        // SAFETY: `p` is 8-aligned (page start + field offset) inside the live mapping; the
        // memory is only accessed atomically from Rust (the kernel writes it with aligned
        // stores). A Relaxed load of a pointer-sized atomic is sound on read-only memory.
        unsafe { AtomicU64::from_ptr(p) }.load(Ordering::Relaxed)
    }
    fn load_i64(&self, offset: usize) -> i64 {
        let p = self.map.at(offset).cast::<i64>();
        // SAFETY: as in `load_u64`.
        unsafe { AtomicI64::from_ptr(p) }.load(Ordering::Relaxed)
    }
    fn load_i32(&self, offset: usize) -> i32 {
        let p = self.map.at(offset).cast::<i32>();
        // SAFETY: as in `load_u64`, with 4-byte alignment.
        unsafe { AtomicI32::from_ptr(p) }.load(Ordering::Relaxed)
    }
    fn load_ts(&self, offset: usize) -> SndTimespec {
        SndTimespec {
            tv_sec: self.load_i64(offset),
            tv_nsec: self.load_i64(offset + 8),
        }
    }

    /// The kernel's hw_ptr (0..boundary, wraps at boundary). Updated at period interrupts and
    /// by HWSYNC/STATUS/SYNC_PTR(HWSYNC); call [`HwPcm::hwsync`] first for a precise value.
    pub fn hw_ptr(&self) -> u64 {
        let v = self.load_u64(std::mem::offset_of!(SndPcmMmapStatus, hw_ptr));
        fence(Ordering::Acquire);
        v
    }
    /// `SNDRV_PCM_STATE_*`.
    pub fn state(&self) -> i32 {
        self.load_i32(std::mem::offset_of!(SndPcmMmapStatus, state))
    }
    pub fn suspended_state(&self) -> i32 {
        self.load_i32(std::mem::offset_of!(SndPcmMmapStatus, suspended_state))
    }
    /// Time of the last hw_ptr update (tstamp mode ENABLE, CLOCK_MONOTONIC as set at open).
    pub fn tstamp(&self) -> libc::timespec {
        let t = self.load_ts(std::mem::offset_of!(SndPcmMmapStatus, tstamp));
        libc::timespec {
            tv_sec: t.tv_sec as libc::time_t,
            tv_nsec: t.tv_nsec as libc::c_long,
        }
    }
    pub fn audio_tstamp(&self) -> SndTimespec {
        self.load_ts(std::mem::offset_of!(SndPcmMmapStatus, audio_tstamp))
    }
    /// hw_ptr with its timestamp, re-read until hw_ptr is stable around the timestamp read.
    /// (The kernel writes hw_ptr, then tstamp, without a sequence counter, so this is best
    /// effort: the timestamp may still lag the pointer by one update.)
    pub fn hw_ptr_tstamp(&self) -> (u64, SndTimespec) {
        let off = std::mem::offset_of!(SndPcmMmapStatus, tstamp);
        let mut a = self.hw_ptr();
        for _ in 0..8 {
            let t = self.load_ts(off);
            let b = self.hw_ptr();
            if a == b {
                return (a, t);
            }
            a = b;
        }
        (a, self.load_ts(off))
    }
}

impl fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusPage")
            .field("map", &self.map)
            .field("state", &state_name(self.state()))
            .field("hw_ptr", &self.hw_ptr())
            .finish()
    }
}

/// Read-write view of the kernel's `snd_pcm_mmap_control` page (appl_ptr, avail_min).
///
/// `Send + Sync`: a view of shared memory accessed only with atomics.
pub struct ControlPage {
    map: Mapping,
}

impl ControlPage {
    fn cell(&self, offset: usize) -> &AtomicU64 {
        let p = self.map.at(offset).cast::<u64>();
        // SAFETY: `p` is 8-aligned inside the live, writable mapping, which outlives the
        // returned reference (tied to `&self`); Rust only accesses it atomically.
        unsafe { AtomicU64::from_ptr(p) }
    }
    pub fn appl_ptr(&self) -> u64 {
        self.cell(std::mem::offset_of!(SndPcmMmapControl, appl_ptr))
            .load(Ordering::Acquire)
    }
    /// Store appl_ptr (must be < boundary). The kernel reads it at its next pointer update;
    /// drivers that need to be told (SYNC_APPLPTR) refuse the control mmap altogether.
    pub fn set_appl_ptr(&self, v: u64) {
        self.cell(std::mem::offset_of!(SndPcmMmapControl, appl_ptr))
            .store(v, Ordering::Release)
    }
    pub fn avail_min(&self) -> u64 {
        self.cell(std::mem::offset_of!(SndPcmMmapControl, avail_min))
            .load(Ordering::Acquire)
    }
    pub fn set_avail_min(&self, v: u64) {
        self.cell(std::mem::offset_of!(SndPcmMmapControl, avail_min))
            .store(v, Ordering::Release)
    }
}

impl fmt::Debug for ControlPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPage")
            .field("map", &self.map)
            .field("appl_ptr", &self.appl_ptr())
            .field("avail_min", &self.avail_min())
            .finish()
    }
}

/// The mmapped DMA buffer (MAP_SHARED, read-write), starting at [`HwConfig::mmap_offset`].
/// Channel `c`'s sample `i` is at bit `areas[c].first + i * areas[c].step` from `as_ptr()`.
///
/// `Send + Sync`: a view of shared memory that the hardware and other processes also access;
/// the handle itself only hands out a raw pointer, so synchronising the contents is up to the
/// user (the mixer's atomics).
pub struct DmaBuffer {
    map: Mapping,
    offset: u64,
}

impl DmaBuffer {
    /// Start of the mapping. Valid for [`DmaBuffer::len`] bytes while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr().cast()
    }
    pub fn len(&self) -> usize {
        self.map.len
    }
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }
    /// The mmap offset this mapping starts at.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("map", &self.map)
            .field("offset", &self.offset)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------------------

/// An open hw PCM playback substream.
#[derive(Debug)]
pub struct HwPcm {
    fd: OwnedFd,
    path: String,
    /// The server's virtual device (a memfd with the same status page and ring; see
    /// `virtual_dev`): mapped at its own offsets, and HWSYNC is not needed (its position is
    /// always current).
    is_virtual: bool,
}

impl HwPcm {
    /// Open `/dev/snd/pcmC{card}D{device}p` (O_RDWR|O_NONBLOCK|O_CLOEXEC) and set it up like
    /// alsa-lib's hw plugin: PVERSION, USER_PVERSION (≥ 2.0.14), TTSTAMP = MONOTONIC (≥ 2.0.9).
    ///
    /// With `subdevice`, the preference is set first with PCM_PREFER_SUBDEVICE on
    /// `/dev/snd/controlC{card}`, which the kernel matches by the opening *thread*, and the
    /// result is checked with INFO.
    pub fn open(card: u32, device: u32, subdevice: Option<u32>) -> Result<HwPcm> {
        Self::open_with(card, device, subdevice, false)
    }

    /// Like [`HwPcm::open`] but with O_APPEND: attach to the substream another process already
    /// has open and configured (what dmix's secondary clients do); `EBADFD` if nobody has.
    /// Such an fd must not call [`HwPcm::configure`] or [`HwPcm::hw_free`].
    pub fn open_append(card: u32, device: u32, subdevice: Option<u32>) -> Result<HwPcm> {
        Self::open_with(card, device, subdevice, true)
    }

    fn open_with(card: u32, device: u32, subdevice: Option<u32>, append: bool) -> Result<HwPcm> {
        let path = format!("/dev/snd/pcmC{card}D{device}p");
        // Keep the control fd open until the PCM is open: the kernel looks the preference up
        // among the control files of the opening thread.
        let ctl = match subdevice {
            Some(sub) => {
                let cpath = format!("/dev/snd/controlC{card}");
                let ctl = OpenOptions::new()
                    .read(true)
                    .open(&cpath)
                    .map_err(|e| classify(format!("open {cpath}"), io_errno(&e)))?;
                let mut val = c_int::try_from(sub)
                    .map_err(|_| Error::config(format!("{path}: subdevice {sub} out of range")))?;
                ioctl_ptr(ctl.as_fd(), SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE, &mut val).map_err(
                    |e| {
                        classify(
                            format!("SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE {sub} on {cpath}"),
                            e,
                        )
                    },
                )?;
                Some(ctl)
            }
            None => None,
        };
        let mut flags = libc::O_NONBLOCK;
        if append {
            flags |= libc::O_APPEND;
        }
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(&path)
            .map_err(|e| {
                let errno = io_errno(&e);
                let hint = match errno {
                    Errno::ENOENT => " (no such card/device)",
                    Errno::EBUSY | Errno::EAGAIN => " (the device is busy)",
                    Errno::EBADFD if append => " (nobody has the substream open to append to)",
                    _ => "",
                };
                let err = classify(format!("open {path}{hint}"), errno);
                if hint.is_empty() {
                    err
                } else {
                    Error::new(
                        err.kind(),
                        err.errno(),
                        format!("open {path}: {}{hint}", errno.desc()),
                    )
                }
            })?;
        let pcm = HwPcm {
            fd: file.into(),
            path,
            is_virtual: false,
        };
        drop(ctl);

        if let Some(sub) = subdevice {
            let info = pcm.info()?;
            if info.subdevice != sub {
                return Err(Error::new(
                    ErrorKind::Device,
                    libc::EBUSY,
                    format!(
                        "{}: opened subdevice {} instead of the requested {sub}",
                        pcm.path, info.subdevice
                    ),
                ));
            }
        }
        pcm.init_protocol()?;
        Ok(pcm)
    }

    fn init_protocol(&self) -> Result<()> {
        let ver = self.protocol_version()?;
        if ver >= protocol_version(2, 0, 14) {
            let mut v = SNDRV_PCM_VERSION as c_int;
            ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_USER_PVERSION, &mut v)
                .map_err(|e| self.err("SNDRV_PCM_IOCTL_USER_PVERSION", e))?;
        }
        if ver >= protocol_version(2, 0, 9) {
            let mut t = SNDRV_PCM_TSTAMP_TYPE_MONOTONIC;
            ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_TTSTAMP, &mut t)
                .map_err(|e| self.err("SNDRV_PCM_IOCTL_TTSTAMP", e))?;
        }
        Ok(())
    }

    /// Wrap an fd received from another process (over a socket). No ioctl is issued: the
    /// sender's USER_PVERSION/TTSTAMP settings belong to the shared open file.
    pub fn from_fd(fd: OwnedFd, path: String) -> HwPcm {
        HwPcm {
            fd,
            path,
            is_virtual: false,
        }
    }

    /// Wrap the memfd of the server's virtual device (see `virtual_dev`).
    pub fn virtual_from_fd(fd: OwnedFd, path: String) -> HwPcm {
        HwPcm {
            fd,
            path,
            is_virtual: true,
        }
    }

    pub fn is_virtual(&self) -> bool {
        self.is_virtual
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The device node path (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, ioctl: &str, e: Errno) -> Error {
        classify(format!("{ioctl} on {}", self.path), e)
    }

    /// The kernel's PCM protocol version (PVERSION).
    pub fn protocol_version(&self) -> Result<u32> {
        let mut v: c_int = 0;
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_PVERSION, &mut v)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_PVERSION", e))?;
        Ok(v as u32)
    }

    /// INFO: card, device, subdevice, names.
    pub fn info(&self) -> Result<PcmInfo> {
        // SAFETY: all-zero bytes are a valid SndPcmInfo (integers and byte arrays only).
        let mut i: SndPcmInfo = unsafe { std::mem::zeroed() };
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_INFO, &mut i)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_INFO", e))?;
        Ok(PcmInfo {
            card: i.card,
            device: i.device,
            subdevice: i.subdevice,
            stream: i.stream,
            id: c_string(&i.id),
            name: c_string(&i.name),
            subname: c_string(&i.subname),
            dev_class: i.dev_class,
            subdevices_count: i.subdevices_count,
            subdevices_avail: i.subdevices_avail,
        })
    }

    /// Choose and set the hardware configuration (see [`HwRequest`]), then the free-running
    /// software parameters (dmix's): tstamp ENABLE/MONOTONIC, period_step 1, avail_min = period,
    /// start_threshold 1, stop_threshold = silence_size = boundary, silence_threshold 0 (the
    /// kernel silences what has been played). Fails with `EBADFD` while the stream runs or the
    /// DMA buffer is mapped.
    pub fn configure(&self, req: &HwRequest) -> Result<HwConfig> {
        let mut params = choose_params(&mut DevRefiner(self.fd()), req, &self.path)?;
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_HW_PARAMS, &mut params).map_err(|e| {
            if e == Errno::EBADFD {
                Error::new(
                    ErrorKind::Device,
                    e as i32,
                    format!(
                        "SNDRV_PCM_IOCTL_HW_PARAMS on {}: {} (the stream is running, or its DMA \
                         buffer is still mapped somewhere)",
                        self.path,
                        e.desc()
                    ),
                )
            } else {
                self.err("SNDRV_PCM_IOCTL_HW_PARAMS", e)
            }
        })?;

        let unfixed = |what: usize| {
            Error::new(
                ErrorKind::Device,
                libc::EINVAL,
                format!(
                    "SNDRV_PCM_IOCTL_HW_PARAMS on {}: {} left unfixed",
                    self.path,
                    param_name(what)
                ),
            )
        };
        let access = params
            .mask(SNDRV_PCM_HW_PARAM_ACCESS)
            .single()
            .ok_or_else(|| unfixed(SNDRV_PCM_HW_PARAM_ACCESS))?;
        let format = params
            .mask(SNDRV_PCM_HW_PARAM_FORMAT)
            .single()
            .ok_or_else(|| unfixed(SNDRV_PCM_HW_PARAM_FORMAT))? as i32;
        let value = |param: usize| params.interval(param).value().ok_or_else(|| unfixed(param));
        let channels = value(SNDRV_PCM_HW_PARAM_CHANNELS)?;
        let rate = value(SNDRV_PCM_HW_PARAM_RATE)?;
        let period_size = u64::from(value(SNDRV_PCM_HW_PARAM_PERIOD_SIZE)?);
        let buffer_size = u64::from(value(SNDRV_PCM_HW_PARAM_BUFFER_SIZE)?);
        let sample_bits = format_physical_width(format)
            .or_else(|| params.interval(SNDRV_PCM_HW_PARAM_SAMPLE_BITS).value())
            .ok_or_else(|| {
                Error::config(format!(
                    "{}: format {} has no sample width",
                    self.path,
                    format_label(format)
                ))
            })?;
        if params.info & SNDRV_PCM_INFO_MMAP == 0 {
            return Err(Error::config(format!(
                "{}: the device does not support mmap",
                self.path
            )));
        }
        let interleaved = match access as i32 {
            SNDRV_PCM_ACCESS_MMAP_INTERLEAVED => true,
            SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED => false,
            _ => {
                return Err(Error::config(format!(
                    "{}: the kernel chose {} access, not MMAP_(NON)INTERLEAVED",
                    self.path,
                    access_label(access)
                )))
            }
        };

        // SW_PARAMS twice: the first call only learns the boundary (which the kernel writes
        // back), the second sets stop_threshold and silence_size to it.
        let mut sw = SndPcmSwParams {
            tstamp_mode: SNDRV_PCM_TSTAMP_ENABLE,
            period_step: 1,
            sleep_min: 0,
            avail_min: period_size,
            xfer_align: 1,
            start_threshold: 1,
            stop_threshold: buffer_size,
            silence_threshold: 0,
            silence_size: 0,
            boundary: 0,
            proto: SNDRV_PCM_VERSION,
            tstamp_type: SNDRV_PCM_TSTAMP_TYPE_MONOTONIC as u32,
            reserved: [0; 56],
        };
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_SW_PARAMS, &mut sw)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_SW_PARAMS", e))?;
        let boundary = sw.boundary;
        if boundary < buffer_size {
            return Err(Error::new(
                ErrorKind::Device,
                libc::EINVAL,
                format!(
                    "SNDRV_PCM_IOCTL_SW_PARAMS on {}: implausible boundary {boundary}",
                    self.path
                ),
            ));
        }
        sw.stop_threshold = boundary;
        sw.silence_threshold = 0;
        sw.silence_size = boundary;
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_SW_PARAMS, &mut sw)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_SW_PARAMS", e))?;

        let (areas, dma_bytes) = self.channel_areas(channels, buffer_size, sample_bits)?;

        Ok(HwConfig {
            format,
            rate,
            channels,
            period_size,
            buffer_size,
            boundary,
            interleaved,
            sample_bits,
            areas,
            dma_bytes,
        })
    }

    /// CHANNEL_INFO for every channel, normalised so that all areas share the lowest offset
    /// (a higher offset is folded into `first`), and the mapping length covering them.
    fn channel_areas(
        &self,
        channels: u32,
        buffer_size: u64,
        sample_bits: u32,
    ) -> Result<(Vec<ChannelArea>, usize)> {
        let mut areas = Vec::with_capacity(channels as usize);
        for ch in 0..channels {
            let mut ci = SndPcmChannelInfo {
                channel: ch,
                ..Default::default()
            };
            ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_CHANNEL_INFO, &mut ci).map_err(|e| {
                self.err(&format!("SNDRV_PCM_IOCTL_CHANNEL_INFO (channel {ch})"), e)
            })?;
            let offset = u64::try_from(ci.offset).map_err(|_| {
                Error::config(format!(
                    "{}: channel {ch} cannot be mmapped (the driver reports no mmap)",
                    self.path
                ))
            })?;
            areas.push(ChannelArea {
                offset,
                first: ci.first,
                step: ci.step,
            });
        }
        let implausible = || {
            Error::new(
                ErrorKind::Device,
                libc::EINVAL,
                format!("{}: implausible channel areas {areas:?}", self.path),
            )
        };
        let areas = normalize_areas(&areas).ok_or_else(implausible)?;
        let (_, len) = dma_span(&areas, buffer_size, sample_bits).ok_or_else(implausible)?;
        Ok((areas, len))
    }

    /// For a client holding a received fd of a configured PCM: read the channel areas with
    /// CHANNEL_INFO, check them against the expected geometry, and map the DMA buffer.
    /// The returned areas all have `offset` = the mapping's offset, so channel `c`'s sample `i`
    /// is at bit `first + i * step` from [`DmaBuffer::as_ptr`].
    pub fn map_dma_for_client(
        &self,
        channels: u32,
        buffer_size: u64,
        sample_bits: u32,
        interleaved: bool,
    ) -> Result<(DmaBuffer, Vec<ChannelArea>)> {
        if channels == 0 || buffer_size == 0 || sample_bits == 0 {
            return Err(Error::layout(format!(
                "{}: empty geometry ({channels} channels, {buffer_size} frames, {sample_bits} bits)",
                self.path
            )));
        }
        let (areas, dma_bytes) = if self.is_virtual {
            let (offset, len) = crate::virtual_dev::dma_range(channels, buffer_size, sample_bits);
            let areas = (0..channels)
                .map(|c| ChannelArea {
                    offset,
                    first: c * sample_bits,
                    step: channels * sample_bits,
                })
                .collect::<Vec<_>>();
            (areas, len)
        } else {
            self.channel_areas(channels, buffer_size, sample_bits)?
        };
        if interleaved {
            for (c, a) in areas.iter().enumerate() {
                if u64::from(a.first) != c as u64 * u64::from(sample_bits)
                    || u64::from(a.step) != u64::from(channels) * u64::from(sample_bits)
                {
                    return Err(Error::layout(format!(
                        "{}: channel {c} area (first {} step {} bits) is not interleaved {channels} x {sample_bits} bits",
                        self.path, a.first, a.step
                    )));
                }
            }
        }
        let cfg_offset = areas[0].offset;
        let map = Mapping::new(
            self.fd(),
            dma_bytes,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            cfg_offset,
        )
        .map_err(|e| {
            classify(
                format!(
                    "mmap of {dma_bytes} DMA bytes at {cfg_offset:#x} of {}",
                    self.path
                ),
                e,
            )
        })?;
        Ok((
            DmaBuffer {
                map,
                offset: cfg_offset,
            },
            areas,
        ))
    }

    /// PREPARE (SETUP/XRUN/… → PREPARED; the kernel resets hw_ptr and appl_ptr to 0).
    pub fn prepare(&self) -> Result<()> {
        ioctl_none(self.fd(), SNDRV_PCM_IOCTL_PREPARE)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_PREPARE", e))?;
        Ok(())
    }

    /// START (PREPARED → RUNNING). With stop_threshold = boundary no data is needed.
    pub fn start(&self) -> Result<()> {
        ioctl_none(self.fd(), SNDRV_PCM_IOCTL_START)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_START", e))?;
        Ok(())
    }

    /// DROP (stop now → SETUP).
    pub fn drop_stream(&self) -> Result<()> {
        ioctl_none(self.fd(), SNDRV_PCM_IOCTL_DROP)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_DROP", e))?;
        Ok(())
    }

    /// HW_FREE (→ OPEN). `EBADFD` while the DMA buffer is mapped anywhere.
    pub fn hw_free(&self) -> Result<()> {
        ioctl_none(self.fd(), SNDRV_PCM_IOCTL_HW_FREE).map_err(|e| {
            if e == Errno::EBADFD {
                Error::new(
                    ErrorKind::Device,
                    e as i32,
                    format!(
                        "SNDRV_PCM_IOCTL_HW_FREE on {}: {} (the stream is not stopped, or its DMA \
                         buffer is still mapped somewhere)",
                        self.path,
                        e.desc()
                    ),
                )
            } else {
                self.err("SNDRV_PCM_IOCTL_HW_FREE", e)
            }
        })?;
        Ok(())
    }

    /// HWSYNC: make the kernel update hw_ptr (and the status page) from the hardware now.
    /// `EPIPE` (kind Xrun) in XRUN state.
    pub fn hwsync(&self) -> Result<()> {
        if self.is_virtual {
            return Ok(());
        }
        ioctl_none(self.fd(), SNDRV_PCM_IOCTL_HWSYNC)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_HWSYNC", e))?;
        Ok(())
    }

    /// STATUS (also updates hw_ptr when running).
    pub fn status(&self) -> Result<StatusSnapshot> {
        // SAFETY: all-zero bytes are a valid SndPcmStatus (integers and byte arrays only).
        let mut s: SndPcmStatus = unsafe { std::mem::zeroed() };
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_STATUS, &mut s)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_STATUS", e))?;
        Ok(StatusSnapshot {
            state: s.state,
            suspended_state: s.suspended_state,
            trigger_tstamp: s.trigger_tstamp,
            tstamp: s.tstamp,
            appl_ptr: s.appl_ptr,
            hw_ptr: s.hw_ptr,
            delay: s.delay,
            avail: s.avail,
            avail_max: s.avail_max,
            audio_tstamp: s.audio_tstamp,
            driver_tstamp: s.driver_tstamp,
        })
    }

    /// SYNC_PTR as a read-only query (flags APPL|AVAIL_MIN, plus HWSYNC if `hwsync`): the
    /// fallback for reading hw_ptr when the status page cannot be mapped.
    pub fn sync_ptr(&self, hwsync: bool) -> Result<SyncPtrSnapshot> {
        // SAFETY: all-zero bytes are a valid SndPcmSyncPtr (integers and byte arrays only).
        let mut sp: SndPcmSyncPtr = unsafe { std::mem::zeroed() };
        sp.flags = SNDRV_PCM_SYNC_PTR_APPL | SNDRV_PCM_SYNC_PTR_AVAIL_MIN;
        if hwsync {
            sp.flags |= SNDRV_PCM_SYNC_PTR_HWSYNC;
        }
        ioctl_ptr(self.fd(), SNDRV_PCM_IOCTL_SYNC_PTR, &mut sp)
            .map_err(|e| self.err("SNDRV_PCM_IOCTL_SYNC_PTR", e))?;
        Ok(SyncPtrSnapshot {
            state: sp.status.state,
            hw_ptr: sp.status.hw_ptr,
            tstamp: sp.status.tstamp,
            appl_ptr: sp.control.appl_ptr,
            avail_min: sp.control.avail_min,
        })
    }

    fn map_page(
        &self,
        what: &str,
        offsets: [u64; 2],
        size: usize,
        prot: ProtFlags,
    ) -> Result<Mapping> {
        let len = page_align(size);
        match Mapping::new(self.fd(), len, prot, offsets[0]) {
            Ok(m) => Ok(m),
            // The old offset is refused on a file that was used by a 32-bit process
            // (no_compat_mmap); the time64 offset has the same layout on a 64-bit kernel.
            // If both fail, report the first refusal: ENXIO means "not allowed for this
            // driver/architecture" (EXPLICIT_SYNC, SYNC_APPLPTR, non-coherent arch).
            Err(Errno::ENXIO) => Mapping::new(self.fd(), len, prot, offsets[1]).map_err(|_| {
                classify(
                    format!(
                        "mmap of the {what} page ({:#x}, {:#x}) of {} (refused by the driver; \
                         use SYNC_PTR)",
                        offsets[0], offsets[1], self.path
                    ),
                    Errno::ENXIO,
                )
            }),
            Err(e) => Err(classify(
                format!(
                    "mmap of the {what} page ({:#x}) of {}",
                    offsets[0], self.path
                ),
                e,
            )),
        }
    }

    /// Map the status page read-only (`ENXIO` for EXPLICIT_SYNC drivers: use
    /// [`HwPcm::sync_ptr`]).
    pub fn map_status(&self) -> Result<StatusPage> {
        if self.is_virtual {
            let map = Mapping::new(
                self.fd(),
                page_align(size_of::<SndPcmMmapStatus>()),
                ProtFlags::PROT_READ,
                0,
            )
            .map_err(|e| classify(format!("mmap of the status page of {}", self.path), e))?;
            return Ok(StatusPage { map });
        }
        let map = self.map_page(
            "status",
            [
                SNDRV_PCM_MMAP_OFFSET_STATUS,
                SNDRV_PCM_MMAP_OFFSET_STATUS_NEW,
            ],
            size_of::<SndPcmMmapStatus>(),
            ProtFlags::PROT_READ,
        )?;
        Ok(StatusPage { map })
    }

    /// Map the control page read-write (`ENXIO` for SYNC_APPLPTR/EXPLICIT_SYNC drivers).
    pub fn map_control(&self) -> Result<ControlPage> {
        let map = self.map_page(
            "control",
            [
                SNDRV_PCM_MMAP_OFFSET_CONTROL,
                SNDRV_PCM_MMAP_OFFSET_CONTROL_NEW,
            ],
            size_of::<SndPcmMmapControl>(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        )?;
        Ok(ControlPage { map })
    }

    /// Map the DMA buffer described by `cfg` (MAP_SHARED, read-write). While any such mapping
    /// exists (in any process), HW_PARAMS and HW_FREE fail with `EBADFD`.
    pub fn map_dma(&self, cfg: &HwConfig) -> Result<DmaBuffer> {
        if cfg.areas.is_empty() || cfg.dma_bytes == 0 {
            return Err(Error::config(format!(
                "{}: map_dma with an empty configuration",
                self.path
            )));
        }
        let offset = cfg.mmap_offset();
        let map = Mapping::new(
            self.fd(),
            cfg.dma_bytes,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            offset,
        )
        .map_err(|e| {
            classify(
                format!(
                    "mmap of {} DMA bytes at {offset:#x} of {}",
                    cfg.dma_bytes, self.path
                ),
                e,
            )
        })?;
        Ok(DmaBuffer { map, offset })
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::mem::offset_of;
    use std::path::PathBuf;
    use std::process::Command;

    // ---- layout against the C header -------------------------------------------------------

    fn rust_values() -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = Vec::new();
        macro_rules! size {
            ($c:literal, $t:ty) => {
                v.push((concat!("sizeof.", $c).to_string(), size_of::<$t>() as i64))
            };
        }
        macro_rules! off {
            ($c:literal, $t:ty, $cf:literal, $f:ident) => {
                v.push((
                    concat!("offsetof.", $c, ".", $cf).to_string(),
                    offset_of!($t, $f) as i64,
                ))
            };
            ($c:literal, $t:ty, $f:ident) => {
                v.push((
                    concat!("offsetof.", $c, ".", stringify!($f)).to_string(),
                    offset_of!($t, $f) as i64,
                ))
            };
        }
        macro_rules! val {
            ($($name:ident),* $(,)?) => {
                $( v.push((stringify!($name).to_string(), $name as i64)); )*
            };
        }
        size!("snd_interval", SndInterval);
        size!("snd_mask", SndMask);
        size!("snd_pcm_hw_params", SndPcmHwParams);
        for f in [
            "masks",
            "mres",
            "intervals",
            "ires",
            "rmask",
            "cmask",
            "info",
            "msbits",
            "rate_num",
            "rate_den",
            "fifo_size",
            "reserved",
        ] {
            let o = match f {
                "masks" => offset_of!(SndPcmHwParams, masks),
                "mres" => offset_of!(SndPcmHwParams, mres),
                "intervals" => offset_of!(SndPcmHwParams, intervals),
                "ires" => offset_of!(SndPcmHwParams, ires),
                "rmask" => offset_of!(SndPcmHwParams, rmask),
                "cmask" => offset_of!(SndPcmHwParams, cmask),
                "info" => offset_of!(SndPcmHwParams, info),
                "msbits" => offset_of!(SndPcmHwParams, msbits),
                "rate_num" => offset_of!(SndPcmHwParams, rate_num),
                "rate_den" => offset_of!(SndPcmHwParams, rate_den),
                "fifo_size" => offset_of!(SndPcmHwParams, fifo_size),
                _ => offset_of!(SndPcmHwParams, reserved),
            };
            v.push((format!("offsetof.snd_pcm_hw_params.{f}"), o as i64));
        }
        size!("snd_pcm_sw_params", SndPcmSwParams);
        off!("snd_pcm_sw_params", SndPcmSwParams, tstamp_mode);
        off!("snd_pcm_sw_params", SndPcmSwParams, period_step);
        off!("snd_pcm_sw_params", SndPcmSwParams, sleep_min);
        off!("snd_pcm_sw_params", SndPcmSwParams, avail_min);
        off!("snd_pcm_sw_params", SndPcmSwParams, xfer_align);
        off!("snd_pcm_sw_params", SndPcmSwParams, start_threshold);
        off!("snd_pcm_sw_params", SndPcmSwParams, stop_threshold);
        off!("snd_pcm_sw_params", SndPcmSwParams, silence_threshold);
        off!("snd_pcm_sw_params", SndPcmSwParams, silence_size);
        off!("snd_pcm_sw_params", SndPcmSwParams, boundary);
        off!("snd_pcm_sw_params", SndPcmSwParams, proto);
        off!("snd_pcm_sw_params", SndPcmSwParams, tstamp_type);
        off!("snd_pcm_sw_params", SndPcmSwParams, reserved);
        size!("snd_pcm_channel_info", SndPcmChannelInfo);
        off!("snd_pcm_channel_info", SndPcmChannelInfo, channel);
        off!("snd_pcm_channel_info", SndPcmChannelInfo, offset);
        off!("snd_pcm_channel_info", SndPcmChannelInfo, first);
        off!("snd_pcm_channel_info", SndPcmChannelInfo, step);
        size!("snd_pcm_mmap_status", SndPcmMmapStatus);
        off!("snd_pcm_mmap_status", SndPcmMmapStatus, state);
        off!("snd_pcm_mmap_status", SndPcmMmapStatus, hw_ptr);
        off!("snd_pcm_mmap_status", SndPcmMmapStatus, tstamp);
        off!("snd_pcm_mmap_status", SndPcmMmapStatus, suspended_state);
        off!("snd_pcm_mmap_status", SndPcmMmapStatus, audio_tstamp);
        size!("snd_pcm_mmap_control", SndPcmMmapControl);
        off!("snd_pcm_mmap_control", SndPcmMmapControl, appl_ptr);
        off!("snd_pcm_mmap_control", SndPcmMmapControl, avail_min);
        size!("snd_pcm_sync_ptr", SndPcmSyncPtr);
        off!("snd_pcm_sync_ptr", SndPcmSyncPtr, flags);
        off!("snd_pcm_sync_ptr", SndPcmSyncPtr, "s", status);
        off!("snd_pcm_sync_ptr", SndPcmSyncPtr, "c", control);
        size!("snd_pcm_info", SndPcmInfo);
        off!("snd_pcm_info", SndPcmInfo, device);
        off!("snd_pcm_info", SndPcmInfo, subdevice);
        off!("snd_pcm_info", SndPcmInfo, stream);
        off!("snd_pcm_info", SndPcmInfo, card);
        off!("snd_pcm_info", SndPcmInfo, id);
        off!("snd_pcm_info", SndPcmInfo, name);
        off!("snd_pcm_info", SndPcmInfo, subname);
        off!("snd_pcm_info", SndPcmInfo, dev_class);
        off!("snd_pcm_info", SndPcmInfo, dev_subclass);
        off!("snd_pcm_info", SndPcmInfo, subdevices_count);
        off!("snd_pcm_info", SndPcmInfo, subdevices_avail);
        off!("snd_pcm_info", SndPcmInfo, sync);
        off!("snd_pcm_info", SndPcmInfo, reserved);
        size!("snd_pcm_status", SndPcmStatus);
        off!("snd_pcm_status", SndPcmStatus, state);
        off!("snd_pcm_status", SndPcmStatus, trigger_tstamp);
        off!("snd_pcm_status", SndPcmStatus, tstamp);
        off!("snd_pcm_status", SndPcmStatus, appl_ptr);
        off!("snd_pcm_status", SndPcmStatus, hw_ptr);
        off!("snd_pcm_status", SndPcmStatus, delay);
        off!("snd_pcm_status", SndPcmStatus, avail);
        off!("snd_pcm_status", SndPcmStatus, avail_max);
        off!("snd_pcm_status", SndPcmStatus, overrange);
        off!("snd_pcm_status", SndPcmStatus, suspended_state);
        off!("snd_pcm_status", SndPcmStatus, audio_tstamp_data);
        off!("snd_pcm_status", SndPcmStatus, audio_tstamp);
        off!("snd_pcm_status", SndPcmStatus, driver_tstamp);
        off!("snd_pcm_status", SndPcmStatus, audio_tstamp_accuracy);
        off!("snd_pcm_status", SndPcmStatus, reserved);
        v.push(("interval.openmin".into(), SndInterval::OPENMIN.into()));
        v.push(("interval.openmax".into(), SndInterval::OPENMAX.into()));
        v.push(("interval.integer".into(), SndInterval::INTEGER.into()));
        v.push(("interval.empty".into(), SndInterval::EMPTY.into()));
        val!(
            SNDRV_PCM_IOCTL_PVERSION,
            SNDRV_PCM_IOCTL_INFO,
            SNDRV_PCM_IOCTL_TSTAMP,
            SNDRV_PCM_IOCTL_TTSTAMP,
            SNDRV_PCM_IOCTL_USER_PVERSION,
            SNDRV_PCM_IOCTL_HW_REFINE,
            SNDRV_PCM_IOCTL_HW_PARAMS,
            SNDRV_PCM_IOCTL_HW_FREE,
            SNDRV_PCM_IOCTL_SW_PARAMS,
            SNDRV_PCM_IOCTL_STATUS,
            SNDRV_PCM_IOCTL_DELAY,
            SNDRV_PCM_IOCTL_HWSYNC,
            SNDRV_PCM_IOCTL_SYNC_PTR,
            SNDRV_PCM_IOCTL_STATUS_EXT,
            SNDRV_PCM_IOCTL_CHANNEL_INFO,
            SNDRV_PCM_IOCTL_PREPARE,
            SNDRV_PCM_IOCTL_RESET,
            SNDRV_PCM_IOCTL_START,
            SNDRV_PCM_IOCTL_DROP,
            SNDRV_PCM_IOCTL_DRAIN,
            SNDRV_PCM_IOCTL_PAUSE,
            SNDRV_PCM_IOCTL_REWIND,
            SNDRV_PCM_IOCTL_RESUME,
            SNDRV_PCM_IOCTL_XRUN,
            SNDRV_PCM_IOCTL_FORWARD,
            SNDRV_PCM_IOCTL_LINK,
            SNDRV_PCM_IOCTL_UNLINK,
            SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE,
            SNDRV_PCM_VERSION,
            SNDRV_PCM_MMAP_OFFSET_DATA,
            SNDRV_PCM_MMAP_OFFSET_STATUS,
            SNDRV_PCM_MMAP_OFFSET_CONTROL,
            SNDRV_PCM_MMAP_OFFSET_STATUS_NEW,
            SNDRV_PCM_MMAP_OFFSET_CONTROL_NEW,
            SNDRV_PCM_SYNC_PTR_HWSYNC,
            SNDRV_PCM_SYNC_PTR_APPL,
            SNDRV_PCM_SYNC_PTR_AVAIL_MIN,
            SNDRV_PCM_TSTAMP_NONE,
            SNDRV_PCM_TSTAMP_ENABLE,
            SNDRV_PCM_TSTAMP_TYPE_GETTIMEOFDAY,
            SNDRV_PCM_TSTAMP_TYPE_MONOTONIC,
            SNDRV_PCM_TSTAMP_TYPE_MONOTONIC_RAW,
            SNDRV_PCM_STREAM_PLAYBACK,
            SNDRV_PCM_STREAM_CAPTURE,
            SNDRV_PCM_ACCESS_MMAP_INTERLEAVED,
            SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED,
            SNDRV_PCM_ACCESS_MMAP_COMPLEX,
            SNDRV_PCM_ACCESS_RW_INTERLEAVED,
            SNDRV_PCM_ACCESS_RW_NONINTERLEAVED,
            SNDRV_PCM_HW_PARAM_ACCESS,
            SNDRV_PCM_HW_PARAM_FORMAT,
            SNDRV_PCM_HW_PARAM_SUBFORMAT,
            SNDRV_PCM_HW_PARAM_SAMPLE_BITS,
            SNDRV_PCM_HW_PARAM_FRAME_BITS,
            SNDRV_PCM_HW_PARAM_CHANNELS,
            SNDRV_PCM_HW_PARAM_RATE,
            SNDRV_PCM_HW_PARAM_PERIOD_TIME,
            SNDRV_PCM_HW_PARAM_PERIOD_SIZE,
            SNDRV_PCM_HW_PARAM_PERIOD_BYTES,
            SNDRV_PCM_HW_PARAM_PERIODS,
            SNDRV_PCM_HW_PARAM_BUFFER_TIME,
            SNDRV_PCM_HW_PARAM_BUFFER_SIZE,
            SNDRV_PCM_HW_PARAM_BUFFER_BYTES,
            SNDRV_PCM_HW_PARAM_TICK_TIME,
            SNDRV_PCM_INFO_MMAP,
            SNDRV_PCM_INFO_MMAP_VALID,
            SNDRV_PCM_INFO_BATCH,
            SNDRV_PCM_INFO_SYNC_APPLPTR,
            SNDRV_PCM_INFO_INTERLEAVED,
            SNDRV_PCM_INFO_NONINTERLEAVED,
            SNDRV_PCM_INFO_PAUSE,
            SNDRV_PCM_INFO_EXPLICIT_SYNC,
            SNDRV_PCM_INFO_NO_REWINDS,
            SNDRV_PCM_STATE_OPEN,
            SNDRV_PCM_STATE_SETUP,
            SNDRV_PCM_STATE_PREPARED,
            SNDRV_PCM_STATE_RUNNING,
            SNDRV_PCM_STATE_XRUN,
            SNDRV_PCM_STATE_DRAINING,
            SNDRV_PCM_STATE_PAUSED,
            SNDRV_PCM_STATE_SUSPENDED,
            SNDRV_PCM_STATE_DISCONNECTED,
            SNDRV_PCM_FORMAT_S8,
            SNDRV_PCM_FORMAT_U8,
            SNDRV_PCM_FORMAT_S16_LE,
            SNDRV_PCM_FORMAT_S16_BE,
            SNDRV_PCM_FORMAT_U16_LE,
            SNDRV_PCM_FORMAT_U16_BE,
            SNDRV_PCM_FORMAT_S24_LE,
            SNDRV_PCM_FORMAT_S24_BE,
            SNDRV_PCM_FORMAT_U24_LE,
            SNDRV_PCM_FORMAT_U24_BE,
            SNDRV_PCM_FORMAT_S32_LE,
            SNDRV_PCM_FORMAT_S32_BE,
            SNDRV_PCM_FORMAT_U32_LE,
            SNDRV_PCM_FORMAT_U32_BE,
            SNDRV_PCM_FORMAT_FLOAT_LE,
            SNDRV_PCM_FORMAT_FLOAT_BE,
            SNDRV_PCM_FORMAT_FLOAT64_LE,
            SNDRV_PCM_FORMAT_FLOAT64_BE,
            SNDRV_PCM_FORMAT_IEC958_SUBFRAME_LE,
            SNDRV_PCM_FORMAT_IEC958_SUBFRAME_BE,
            SNDRV_PCM_FORMAT_MU_LAW,
            SNDRV_PCM_FORMAT_A_LAW,
            SNDRV_PCM_FORMAT_IMA_ADPCM,
            SNDRV_PCM_FORMAT_MPEG,
            SNDRV_PCM_FORMAT_GSM,
            SNDRV_PCM_FORMAT_S20_LE,
            SNDRV_PCM_FORMAT_S20_BE,
            SNDRV_PCM_FORMAT_U20_LE,
            SNDRV_PCM_FORMAT_U20_BE,
            SNDRV_PCM_FORMAT_SPECIAL,
            SNDRV_PCM_FORMAT_S24_3LE,
            SNDRV_PCM_FORMAT_S24_3BE,
            SNDRV_PCM_FORMAT_U24_3LE,
            SNDRV_PCM_FORMAT_U24_3BE,
            SNDRV_PCM_FORMAT_S20_3LE,
            SNDRV_PCM_FORMAT_S20_3BE,
            SNDRV_PCM_FORMAT_U20_3LE,
            SNDRV_PCM_FORMAT_U20_3BE,
            SNDRV_PCM_FORMAT_S18_3LE,
            SNDRV_PCM_FORMAT_S18_3BE,
            SNDRV_PCM_FORMAT_U18_3LE,
            SNDRV_PCM_FORMAT_U18_3BE,
            SNDRV_PCM_FORMAT_G723_24,
            SNDRV_PCM_FORMAT_G723_24_1B,
            SNDRV_PCM_FORMAT_G723_40,
            SNDRV_PCM_FORMAT_G723_40_1B,
            SNDRV_PCM_FORMAT_DSD_U8,
            SNDRV_PCM_FORMAT_DSD_U16_LE,
            SNDRV_PCM_FORMAT_DSD_U32_LE,
            SNDRV_PCM_FORMAT_DSD_U16_BE,
            SNDRV_PCM_FORMAT_DSD_U32_BE,
            SNDRV_PCM_FORMAT_LAST,
            SNDRV_PCM_FORMAT_S16,
            SNDRV_PCM_FORMAT_U16,
            SNDRV_PCM_FORMAT_S24,
            SNDRV_PCM_FORMAT_U24,
            SNDRV_PCM_FORMAT_S32,
            SNDRV_PCM_FORMAT_U32,
            SNDRV_PCM_FORMAT_FLOAT,
            SNDRV_PCM_FORMAT_FLOAT64,
        );
        v
    }

    fn have_cc() -> bool {
        Command::new("cc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn layout_matches_kernel_header() {
        if !have_cc() {
            eprintln!("skipping layout_matches_kernel_header: no `cc`");
            return;
        }
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hw-layout/layout.c");
        let dir = std::env::temp_dir().join(format!("rdmix-hw-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("layout");
        let out = Command::new("cc")
            .arg("-Wall")
            .arg("-Werror")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "compiling {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(&exe).output().unwrap();
        assert!(out.status.success());
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        let c: HashMap<String, i64> = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect();
        let rust = rust_values();
        let mut bad = Vec::new();
        for (k, v) in &rust {
            match c.get(k) {
                Some(cv) if cv == v => {}
                Some(cv) => bad.push(format!("{k}: C {cv:#x}, Rust {v:#x}")),
                None => bad.push(format!("{k}: not printed by the C program")),
            }
        }
        let rk: std::collections::HashSet<&String> = rust.iter().map(|(k, _)| k).collect();
        for k in c.keys() {
            if !rk.contains(k) {
                bad.push(format!("{k}: printed by C but not checked in Rust"));
            }
        }
        assert!(bad.is_empty(), "layout mismatches:\n{}", bad.join("\n"));
    }

    // ---- pure helpers ------------------------------------------------------------------------

    fn iv(min: u32, max: u32, flags: u32) -> SndInterval {
        SndInterval { min, max, flags }
    }

    #[test]
    fn interval_helpers() {
        let a = iv(10, 20, 0);
        assert_eq!((a.first(), a.last()), (Some(10), Some(20)));
        assert!(a.contains(10) && a.contains(20) && !a.contains(21) && !a.contains(9));
        assert!(!a.is_single());
        let o = iv(10, 20, SndInterval::OPENMIN | SndInterval::OPENMAX);
        assert_eq!((o.first(), o.last()), (Some(11), Some(19)));
        assert!(!o.contains(10) && !o.contains(20) && o.contains(15));
        // (21333, 21334): a non-integer value, single per the kernel, no integer member.
        let t = iv(21333, 21334, SndInterval::OPENMIN | SndInterval::OPENMAX);
        assert!(t.is_single());
        assert_eq!(t.value(), Some(21333));
        assert_eq!(t.first(), None);
        let h = iv(5, 6, SndInterval::OPENMIN);
        assert_eq!(h.value(), Some(6));
        assert!(iv(5, 5, SndInterval::OPENMAX).is_empty());
        assert!(iv(6, 5, 0).is_empty());
        assert!(iv(1, 9, SndInterval::EMPTY).is_empty());
        assert_eq!(SndInterval::exact(7).value(), Some(7));
        let mut r = iv(10, 20, SndInterval::OPENMIN | SndInterval::OPENMAX);
        r.restrict_max(15);
        assert_eq!((r.first(), r.last()), (Some(11), Some(15)));
        r.restrict_min(12);
        assert_eq!((r.first(), r.last()), (Some(12), Some(15)));
        r.restrict_min(3);
        assert_eq!(r.first(), Some(12));
        assert_eq!(iv(0, u32::MAX, 0).to_string(), "[0, 4294967295]");
    }

    #[test]
    fn mask_helpers() {
        let mut m = SndMask::any();
        assert!(m.test(0) && m.test(255) && !m.test(256));
        m.set_only(SNDRV_PCM_FORMAT_S24_3LE as u32);
        assert_eq!(m.values(), vec![32]);
        assert_eq!(m.single(), Some(32));
        assert!(SndMask::none().is_empty());
    }

    #[test]
    fn formats() {
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_S16_LE), Some(16));
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_S24_LE), Some(32));
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_S24_3LE), Some(24));
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_U8), Some(8));
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_FLOAT64_LE), Some(64));
        assert_eq!(format_physical_width(SNDRV_PCM_FORMAT_MPEG), None);
        assert_eq!(format_name(SNDRV_PCM_FORMAT_S24_3LE), "S24_3LE");
        assert_eq!(
            format_name_opt(SNDRV_PCM_FORMAT_DSD_U32_BE),
            Some("DSD_U32_BE")
        );
        assert_eq!(format_name_opt(29), None);
        assert_eq!(format_name(-1), "unknown");
        assert_eq!(format_from_name("s16_le"), Some(SNDRV_PCM_FORMAT_S16_LE));
        assert_eq!(format_from_name("S32"), Some(SNDRV_PCM_FORMAT_S32));
        assert_eq!(format_from_name("nope"), None);
        for f in 0..=SNDRV_PCM_FORMAT_LAST {
            if let Some(n) = format_name_opt(f) {
                assert_eq!(format_from_name(n), Some(f));
            }
        }
    }

    #[test]
    fn frames_from_time() {
        assert_eq!(us_to_frames(21333, 48000), 1024);
        assert_eq!(us_to_frames(10000, 44100), 441);
        assert_eq!(us_to_frames(0, 48000), 1);
    }

    #[test]
    fn dma_span_layouts() {
        // Interleaved S16 stereo, 4096 frames.
        let inter = [
            ChannelArea {
                offset: 0,
                first: 0,
                step: 32,
            },
            ChannelArea {
                offset: 0,
                first: 16,
                step: 32,
            },
        ];
        assert_eq!(dma_span(&inter, 4096, 16), Some((0, 4096 * 4)));
        // Non-interleaved S32 stereo: dma_bytes/channels per channel (kernel's CHANNEL_INFO).
        let per = 4096 * 4;
        let non = [
            ChannelArea {
                offset: 0,
                first: 0,
                step: 32,
            },
            ChannelArea {
                offset: 0,
                first: (per * 8) as u32,
                step: 32,
            },
        ];
        assert_eq!(dma_span(&non, 4096, 32), Some((0, 2 * per)));
        // S24_3LE, 3 channels.
        let three: Vec<ChannelArea> = (0..3)
            .map(|c| ChannelArea {
                offset: 0,
                first: c * 24,
                step: 72,
            })
            .collect();
        assert_eq!(dma_span(&three, 100, 24), Some((0, 900)));
        assert_eq!(dma_span(&[], 100, 16), None);
        assert_eq!(dma_span(&inter, 0, 16), None);
    }

    #[test]
    fn areas_share_one_offset() {
        let a = [
            ChannelArea {
                offset: 4096,
                first: 0,
                step: 16,
            },
            ChannelArea {
                offset: 8192,
                first: 0,
                step: 16,
            },
        ];
        let n = normalize_areas(&a).unwrap();
        assert_eq!(
            n,
            vec![
                ChannelArea {
                    offset: 4096,
                    first: 0,
                    step: 16
                },
                ChannelArea {
                    offset: 4096,
                    first: 4096 * 8,
                    step: 16
                }
            ]
        );
        assert_eq!(dma_span(&n, 2048, 16), Some((4096, 8192)));
        assert_eq!(normalize_areas(&[]), None);
    }

    // ---- choosing parameters against a fake device -----------------------------------------

    /// A crude model of a driver's constraints: integer closed intervals, buffer = period ×
    /// periods with integer periods, a period-size step and a rate list.
    #[derive(Clone)]
    struct FakeDev {
        access: Vec<i32>,
        formats: Vec<i32>,
        channels: (u32, u32),
        rates: Vec<u32>,
        period: (u32, u32),
        period_step: u32,
        periods: (u32, u32),
        buffer_max: u32,
        calls: usize,
    }

    impl FakeDev {
        fn typical() -> Self {
            FakeDev {
                access: vec![
                    SNDRV_PCM_ACCESS_MMAP_INTERLEAVED,
                    SNDRV_PCM_ACCESS_RW_INTERLEAVED,
                ],
                formats: vec![SNDRV_PCM_FORMAT_S16_LE, SNDRV_PCM_FORMAT_S32_LE],
                channels: (1, 2),
                rates: vec![44100, 48000],
                period: (32, 8192),
                period_step: 32,
                periods: (1, 32),
                buffer_max: 65536,
                calls: 0,
            }
        }
    }

    fn clamp(i: &mut SndInterval, lo: u32, hi: u32) -> bool {
        // Model: values are integers; normalise open bounds to closed ones.
        let old = *i;
        if i.openmin() {
            i.min = i.min.saturating_add(1);
        }
        if i.openmax() {
            i.max = i.max.saturating_sub(1);
        }
        i.flags &= !(SndInterval::OPENMIN | SndInterval::OPENMAX);
        i.min = i.min.max(lo);
        i.max = i.max.min(hi);
        *i != old
    }

    impl Refine for FakeDev {
        fn refine(&mut self, p: &mut SndPcmHwParams) -> std::result::Result<bool, Errno> {
            self.calls += 1;
            assert!(self.calls < 100_000, "runaway refinement");
            let keep = |m: &mut SndMask, ok: &[i32]| {
                for v in 0..256u32 {
                    if m.test(v) && !ok.contains(&(v as i32)) {
                        m.bits[(v / 32) as usize] &= !(1 << (v % 32));
                    }
                }
            };
            keep(p.mask_mut(SNDRV_PCM_HW_PARAM_ACCESS), &self.access);
            keep(p.mask_mut(SNDRV_PCM_HW_PARAM_FORMAT), &self.formats);
            if p.mask(SNDRV_PCM_HW_PARAM_ACCESS).is_empty()
                || p.mask(SNDRV_PCM_HW_PARAM_FORMAT).is_empty()
            {
                return Ok(false);
            }
            clamp(
                p.interval_mut(SNDRV_PCM_HW_PARAM_CHANNELS),
                self.channels.0,
                self.channels.1,
            );
            {
                let r = p.interval_mut(SNDRV_PCM_HW_PARAM_RATE);
                clamp(r, 0, u32::MAX);
                let (lo, hi) = (r.min, r.max);
                let inside: Vec<u32> = self
                    .rates
                    .iter()
                    .copied()
                    .filter(|&x| x >= lo && x <= hi)
                    .collect();
                if inside.is_empty() {
                    return Ok(false);
                }
                r.min = inside[0];
                r.max = *inside.last().unwrap();
            }
            loop {
                let mut changed = false;
                let step = self.period_step;
                {
                    let ps = p.interval_mut(SNDRV_PCM_HW_PARAM_PERIOD_SIZE);
                    changed |= clamp(ps, self.period.0, self.period.1);
                    let lo = ps.min.div_ceil(step) * step;
                    let hi = ps.max / step * step;
                    changed |= clamp(ps, lo, hi);
                }
                changed |= clamp(
                    p.interval_mut(SNDRV_PCM_HW_PARAM_PERIODS),
                    self.periods.0,
                    self.periods.1,
                );
                changed |= clamp(
                    p.interval_mut(SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
                    1,
                    self.buffer_max,
                );
                let ps = *p.interval(SNDRV_PCM_HW_PARAM_PERIOD_SIZE);
                let n = *p.interval(SNDRV_PCM_HW_PARAM_PERIODS);
                let bs = *p.interval(SNDRV_PCM_HW_PARAM_BUFFER_SIZE);
                if ps.is_empty() || n.is_empty() || bs.is_empty() {
                    return Ok(false);
                }
                let mul = |a: u32, b: u32| a.saturating_mul(b);
                changed |= clamp(
                    p.interval_mut(SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
                    mul(ps.min, n.min),
                    mul(ps.max, n.max),
                );
                changed |= clamp(
                    p.interval_mut(SNDRV_PCM_HW_PARAM_PERIOD_SIZE),
                    bs.min.div_ceil(n.max.max(1)),
                    bs.max / n.min.max(1),
                );
                changed |= clamp(
                    p.interval_mut(SNDRV_PCM_HW_PARAM_PERIODS),
                    bs.min.div_ceil(ps.max.max(1)),
                    bs.max / ps.min.max(1),
                );
                let any_empty = [
                    SNDRV_PCM_HW_PARAM_PERIOD_SIZE,
                    SNDRV_PCM_HW_PARAM_PERIODS,
                    SNDRV_PCM_HW_PARAM_BUFFER_SIZE,
                ]
                .iter()
                .any(|&k| p.interval(k).is_empty());
                if any_empty {
                    return Ok(false);
                }
                if !changed {
                    break;
                }
            }
            let (ps, n, bs) = (
                p.interval(SNDRV_PCM_HW_PARAM_PERIOD_SIZE).value(),
                p.interval(SNDRV_PCM_HW_PARAM_PERIODS).value(),
                p.interval(SNDRV_PCM_HW_PARAM_BUFFER_SIZE).value(),
            );
            if let (Some(ps), Some(n), Some(bs)) = (ps, n, bs) {
                if u64::from(ps) * u64::from(n) != u64::from(bs) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }

    struct Chosen {
        access: i32,
        format: i32,
        channels: u32,
        rate: u32,
        period: u32,
        buffer: u32,
    }

    fn run(dev: &mut FakeDev, req: HwRequest) -> Result<Chosen> {
        let p = choose_params(dev, &req, "fake")?;
        let val = |k| {
            p.interval(k)
                .value()
                .unwrap_or_else(|| panic!("{} not fixed: {}", param_name(k), p.interval(k)))
        };
        Ok(Chosen {
            access: p.mask(SNDRV_PCM_HW_PARAM_ACCESS).values()[0] as i32,
            format: p.mask(SNDRV_PCM_HW_PARAM_FORMAT).single().unwrap() as i32,
            channels: val(SNDRV_PCM_HW_PARAM_CHANNELS),
            rate: val(SNDRV_PCM_HW_PARAM_RATE),
            period: val(SNDRV_PCM_HW_PARAM_PERIOD_SIZE),
            buffer: val(SNDRV_PCM_HW_PARAM_BUFFER_SIZE),
        })
    }

    #[test]
    fn defaults_follow_dmix() {
        let c = run(&mut FakeDev::typical(), HwRequest::default()).unwrap();
        assert_eq!(c.access, SNDRV_PCM_ACCESS_MMAP_INTERLEAVED);
        assert_eq!(c.format, SNDRV_PCM_FORMAT_S32_LE);
        assert_eq!(
            (c.channels, c.rate, c.period, c.buffer),
            (2, 48000, 1024, 4096)
        );

        let mut d = FakeDev::typical();
        d.formats = vec![
            SNDRV_PCM_FORMAT_U8,
            SNDRV_PCM_FORMAT_S24_3LE,
            SNDRV_PCM_FORMAT_FLOAT_LE,
        ];
        assert_eq!(
            run(&mut d, HwRequest::default()).unwrap().format,
            SNDRV_PCM_FORMAT_S24_3LE
        );
    }

    #[test]
    fn near_values() {
        let mut d = FakeDev::typical();
        let c = run(
            &mut d,
            HwRequest {
                rate: Some(44000),
                channels: Some(6),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.rate, c.channels), (44100, 2));
        let c = run(
            &mut d,
            HwRequest {
                rate: Some(46500),
                channels: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.rate, c.channels), (48000, 1));
        // Tie: the lower.
        let c = run(
            &mut d,
            HwRequest {
                rate: Some(46050),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.rate, 44100);
        let c = run(
            &mut d,
            HwRequest {
                rate: Some(8000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.rate, 44100);
        let c = run(
            &mut d,
            HwRequest {
                rate: Some(192000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.rate, 48000);
    }

    #[test]
    fn requested_format() {
        let mut d = FakeDev::typical();
        let c = run(
            &mut d,
            HwRequest {
                format: Some(SNDRV_PCM_FORMAT_S16_LE),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.format, SNDRV_PCM_FORMAT_S16_LE);
        let e = run(
            &mut d,
            HwRequest {
                format: Some(SNDRV_PCM_FORMAT_FLOAT_LE),
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.message().contains("FLOAT_LE") && e.message().contains("S16_LE, S32_LE"),
            "{}",
            e.message()
        );
        let mut d = FakeDev::typical();
        d.formats = vec![SNDRV_PCM_FORMAT_FLOAT_LE];
        let e = run(&mut d, HwRequest::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("FLOAT_LE"), "{}", e.message());
    }

    #[test]
    fn access_fallback_and_refusal() {
        let mut d = FakeDev::typical();
        d.access = vec![
            SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED,
            SNDRV_PCM_ACCESS_RW_NONINTERLEAVED,
        ];
        assert_eq!(
            run(&mut d, HwRequest::default()).unwrap().access,
            SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED
        );
        d.access = vec![SNDRV_PCM_ACCESS_RW_INTERLEAVED];
        let e = run(&mut d, HwRequest::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("RW_INTERLEAVED"), "{}", e.message());
    }

    #[test]
    fn time_wins_over_size() {
        let mut d = FakeDev::typical();
        let c = run(
            &mut d,
            HwRequest {
                period_time: Some(10_000),
                period_size: Some(64),
                buffer_time: Some(40_000),
                buffer_size: Some(128),
                ..Default::default()
            },
        )
        .unwrap();
        // 10 ms = 480 frames (a multiple of 32); 40 ms = 1920 frames.
        assert_eq!((c.period, c.buffer), (480, 1920));
    }

    #[test]
    fn periods_only_without_buffer() {
        let mut d = FakeDev::typical();
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(1000),
                periods: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (992, 2976));
        // A buffer request makes `periods` irrelevant; the period defaults to a quarter.
        let c = run(
            &mut d,
            HwRequest {
                buffer_size: Some(8192),
                periods: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (2048, 8192));
        // Only periods.
        let c = run(
            &mut d,
            HwRequest {
                periods: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (1024, 8192));
    }

    #[test]
    fn single_period_is_halved() {
        let mut d = FakeDev::typical();
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(4096),
                buffer_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (2048, 4096));
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(8192),
                buffer_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (2048, 4096));
        // periods 1 is raised to 2.
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(1024),
                periods: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (1024, 2048));
        // A device whose buffer cannot exceed one requested period.
        let mut small = FakeDev::typical();
        small.buffer_max = 1024;
        let c = run(
            &mut small,
            HwRequest {
                period_size: Some(1024),
                periods: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (512, 1024));
        // A device that can only do one period.
        d.periods = (1, 1);
        let e = run(&mut d, HwRequest::default()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("2 periods"), "{}", e.message());
    }

    #[test]
    fn sizes_snap_to_the_device() {
        let mut d = FakeDev::typical();
        // Buffer 5000 is not a multiple of any allowed period count × step… nearest valid.
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(1024),
                buffer_size: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.buffer % c.period, 0);
        assert!(c.buffer / c.period >= 2);
        assert_eq!(c.period % 32, 0);
        // Period below the minimum.
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(5),
                buffer_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (128, 4096)); // periods ≤ 32
                                                       // Buffer above the maximum.
        let c = run(
            &mut d,
            HwRequest {
                period_size: Some(8192),
                buffer_size: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.period, c.buffer), (8192, 65536));
    }

    #[test]
    fn pages_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<StatusPage>();
        check::<ControlPage>();
        check::<DmaBuffer>();
        check::<HwPcm>();
    }

    #[test]
    fn open_missing_device_names_path() {
        let e = HwPcm::open(97, 3, None).err().unwrap();
        assert!(
            e.message().contains("/dev/snd/pcmC97D3p"),
            "{}",
            e.message()
        );
        let e = HwPcm::open(97, 3, Some(1)).err().unwrap();
        assert!(
            e.message().contains("/dev/snd/controlC97"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn mapping_roundtrip_on_a_memfd() {
        // The Mapping/page types work on any mmappable fd; use a temporary file as stand-in.
        let path = std::env::temp_dir().join(format!("rdmix-hw-map-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file.set_len(8192).unwrap();
        let fd: OwnedFd = file.into();
        let m = Mapping::new(
            fd.as_fd(),
            4096,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            0,
        )
        .unwrap();
        let ctl = ControlPage { map: m };
        ctl.set_appl_ptr(12345);
        ctl.set_avail_min(7);
        assert_eq!((ctl.appl_ptr(), ctl.avail_min()), (12345, 7));
        let st = StatusPage {
            map: Mapping::new(fd.as_fd(), 4096, ProtFlags::PROT_READ, 0).unwrap(),
        };
        // Same page: hw_ptr (offset 8) aliases avail_min (offset 8).
        assert_eq!(st.hw_ptr(), 7);
        assert_eq!(st.state(), 12345);
        let _ = format!("{st:?} {ctl:?}");
    }
}
