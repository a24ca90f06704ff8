//! The shared state: a memfd created by the server and mapped by every client.
//!
//! Layout (all fields fixed-width, native endian, offsets pinned by asserts):
//!
//! ```text
//! 0                     ShmHeader (256 bytes)
//! header.slots_offset   ClientSlot[max_clients] (128 bytes each)
//! header.sum_offset     u64[buffer_size * channels]: the sum ring, one accumulator per slave sample
//!                       (lap and sum packed; see `mix`)
//! ```
//!
//! A client checks `magic`, `version`, `header_size`, `slot_size` and `total_size` at attach and
//! refuses a mismatch with a message; it never guesses at a layout it does not know.

use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// "RDMIXSHM" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RDMIXSHM");
/// [`MAGIC`] as a literal, for the C header (cbindgen cannot evaluate `from_le_bytes`).
pub const SHM_MAGIC: u64 = 0x4d48_5358_494d_4452;
const _: () = assert!(SHM_MAGIC == MAGIC);
/// Bumped on any layout change. v2: client slots of 128 bytes (client parameters, start
/// position, volume, mute, peak, clips) and the header's `slave_kind`.
pub const VERSION: u32 = 2;
/// `ShmHeader::slave_kind`: a kernel hw PCM (`/dev/snd/pcmC*D*p`).
pub const SLAVE_HW: u32 = 0;
/// `ShmHeader::slave_kind`: the server's virtual device (a timer-driven memfd; see `virtual_dev`).
pub const SLAVE_VIRTUAL: u32 = 1;
/// `ClientSlot::volume` of unity gain (Q16.16).
pub const VOLUME_UNITY: u32 = 1 << 16;
/// `ClientSlot::volume` is at most this (4.0, +12 dB).
pub const VOLUME_MAX: u32 = 4 << 16;
/// `ClientSlot::peak` of a full-scale sample.
pub const PEAK_FULL_SCALE: u32 = 1 << 16;
pub const MAX_CLIENTS: u32 = 64;

/// The header at offset 0. Written once by the server before any client sees the memfd, except
/// for the atomics.
#[repr(C)]
#[derive(Debug)]
pub struct ShmHeader {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub total_size: u64,
    pub slot_size: u32,
    pub max_clients: u32,
    pub slots_offset: u64,
    pub sum_offset: u64,
    pub sum_len: u64,
    /// The hardware as configured (snd_pcm_format_t value).
    pub format: i32,
    pub channels: u32,
    pub rate: u32,
    /// Physical bits per sample in the DMA buffer.
    pub sample_bits: u32,
    pub period_size: u64,
    pub buffer_size: u64,
    /// The kernel's boundary: hw_ptr wraps at this value.
    pub boundary: u64,
    /// 1 if the DMA buffer is interleaved.
    pub interleaved: u32,
    /// The server's pid (stored again after it forks into the background).
    pub server_pid: AtomicU32,
    /// [`SLAVE_HW`] or [`SLAVE_VIRTUAL`]: what the fd handed with the Welcome is.
    pub slave_kind: u32,
    pub _pad_kind: u32,
    pub card: u32,
    pub device: u32,
    pub subdevice: u32,
    pub _pad0: u32,
    /// Number of slots in use (introspection).
    pub clients: AtomicU32,
    pub _pad1: u32,
    /// Counts every attach, for introspection.
    pub attaches: AtomicU64,
    /// The device the mixer plays on, NUL-terminated (`/dev/snd/pcmC0D0p`, `virtual:wav:…`;
    /// truncated to 63 bytes), for introspection.
    pub device_name: [u8; 64],
    pub _reserved: [u64; 6],
}

/// One client's slot: owned by the client that claimed it (pid != 0).
#[repr(C)]
#[derive(Debug)]
pub struct ClientSlot {
    /// 0 = free; otherwise the owner's pid. Claimed with a CAS.
    pub pid: AtomicU32,
    pub state: AtomicU32,
    /// Slave frame position the client has mixed up to (monotone, modulo boundary).
    pub mixed_to: AtomicU64,
    pub frames_mixed: AtomicU64,
    pub xruns: AtomicU32,
    /// Samples that could not be mixed because the hardware had passed them.
    pub late: AtomicU32,
    /// Poll wakeups, and those that found the application's condition not yet met.
    pub wakeups: AtomicU64,
    pub early_wakeups: AtomicU64,
    /// Slave position of the client's frame 0 in its current run (set at start and resume).
    pub start_pos: AtomicU64,
    /// Gain applied to the client's samples as they are written, Q16.16 ([`VOLUME_UNITY`] =
    /// 1.0, at most [`VOLUME_MAX`]). Set by `rdmix volume`; read by the client once per write.
    pub volume: AtomicU32,
    /// Non-zero: the client's samples are written as silence (its volume is kept).
    pub muted: AtomicU32,
    /// Largest |sample| the client mixed since a reader last took it (swap to 0), in
    /// 1/65536 of full scale ([`PEAK_FULL_SCALE`]).
    pub peak: AtomicU32,
    /// Samples the client published saturated (the sum was out of the slave's range).
    pub clips: AtomicU32,
    /// The client's negotiated parameters (written at its hw_params; 0 before).
    pub format: AtomicI32,
    pub channels: AtomicU32,
    pub rate: AtomicU32,
    pub _pad: u32,
    pub period_size: AtomicU64,
    pub buffer_size: AtomicU64,
    /// Frames of the current run played so far (the position the client reports), and frames
    /// written but not yet played (its delay): published at each position update.
    pub played: AtomicU64,
    pub delay: AtomicU64,
    pub _reserved: [u64; 1],
}

const _: () = {
    assert!(size_of::<ShmHeader>() == 256);
    assert!(offset_of!(ShmHeader, format) == 56);
    assert!(offset_of!(ShmHeader, boundary) == 88);
    assert!(offset_of!(ShmHeader, clients) == 128);
    assert!(offset_of!(ShmHeader, slave_kind) == 104);
    assert!(size_of::<ClientSlot>() == 128);
    assert!(offset_of!(ClientSlot, start_pos) == 48);
    assert!(offset_of!(ClientSlot, volume) == 56);
    assert!(offset_of!(ClientSlot, peak) == 64);
    assert!(offset_of!(ClientSlot, format) == 72);
    assert!(offset_of!(ClientSlot, period_size) == 88);
    assert!(offset_of!(ClientSlot, played) == 104);
    assert!(offset_of!(ClientSlot, delay) == 112);
};

/// Geometry of the hardware that the shared state describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub format: i32,
    pub channels: u32,
    pub rate: u32,
    pub sample_bits: u32,
    pub period_size: u64,
    pub buffer_size: u64,
    pub boundary: u64,
    pub interleaved: bool,
    pub card: u32,
    pub device: u32,
    pub subdevice: u32,
    /// [`SLAVE_HW`] or [`SLAVE_VIRTUAL`].
    pub slave_kind: u32,
}

fn layout(g: &Geometry) -> (u64, u64, u64, u64) {
    let slots_offset = size_of::<ShmHeader>() as u64;
    let sum_offset = slots_offset + MAX_CLIENTS as u64 * size_of::<ClientSlot>() as u64;
    let sum_len = g.buffer_size * g.channels as u64 * 8;
    let total = (sum_offset + sum_len + 4095) & !4095;
    (slots_offset, sum_offset, sum_len, total)
}

/// Map `len` bytes of the shared-state memfd, shared and writable.
fn map_shared(fd: &OwnedFd, len: u64) -> Result<MmapRaw> {
    MmapOptions::new()
        .len(len as usize)
        .map_raw(fd)
        .map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("mmap shared state: {e}"),
            )
        })
}

/// A mapping of the shared state.
#[derive(Debug)]
pub struct SharedState {
    map: MmapRaw,
    fd: OwnedFd,
}

// SAFETY: the mapping is shared memory accessed only through atomics (slots, sum ring, counters)
// or through header fields that are immutable after creation.
unsafe impl Send for SharedState {}
// SAFETY: as above.
unsafe impl Sync for SharedState {}

impl SharedState {
    /// Server side: create the memfd, size it and write the header.
    pub fn create(g: &Geometry, server_pid: u32, device: &str) -> Result<SharedState> {
        let (slots_offset, sum_offset, sum_len, total) = layout(g);
        let fd = nix::sys::memfd::memfd_create(
            c"rdmix-shared-state",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::sys("memfd_create", e))?;
        nix::unistd::ftruncate(&fd, total as i64).map_err(|e| Error::sys("ftruncate memfd", e))?;
        // No client may shrink it under the others.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_truncate(seals)),
        )
        .map_err(|e| Error::sys("seal memfd", e))?;
        let map = map_shared(&fd, total)?;
        let h = ShmHeader {
            magic: MAGIC,
            version: VERSION,
            header_size: size_of::<ShmHeader>() as u32,
            total_size: total,
            slot_size: size_of::<ClientSlot>() as u32,
            max_clients: MAX_CLIENTS,
            slots_offset,
            sum_offset,
            sum_len,
            format: g.format,
            channels: g.channels,
            rate: g.rate,
            sample_bits: g.sample_bits,
            period_size: g.period_size,
            buffer_size: g.buffer_size,
            boundary: g.boundary,
            interleaved: g.interleaved as u32,
            server_pid: AtomicU32::new(server_pid),
            slave_kind: g.slave_kind,
            _pad_kind: 0,
            card: g.card,
            device: g.device,
            subdevice: g.subdevice,
            _pad0: 0,
            clients: AtomicU32::new(0),
            _pad1: 0,
            attaches: AtomicU64::new(0),
            device_name: [0; 64],
            _reserved: [0; 6],
        };
        let mut h = h;
        let n = device.len().min(63);
        h.device_name[..n].copy_from_slice(&device.as_bytes()[..n]);
        // SAFETY: the mapping is at least 256 bytes, page-aligned, freshly zeroed, and nobody
        // else has the fd yet.
        unsafe { std::ptr::write(map.as_mut_ptr() as *mut ShmHeader, h) };
        Ok(SharedState { map, fd })
    }

    /// The device name from the header (see [`ShmHeader::device_name`]).
    pub fn device_name(&self) -> String {
        let d = &self.header().device_name;
        let n = d.iter().position(|&b| b == 0).unwrap_or(d.len());
        String::from_utf8_lossy(&d[..n]).into_owned()
    }

    /// Client side: map a memfd received from the server and check its layout.
    pub fn attach(fd: OwnedFd) -> Result<SharedState> {
        let st = nix::sys::stat::fstat(&fd).map_err(|e| Error::sys("fstat shared state", e))?;
        let size = st.st_size as u64;
        if size < size_of::<ShmHeader>() as u64 {
            return Err(Error::layout(format!(
                "shared state is {size} bytes, smaller than its header"
            )));
        }
        let map = map_shared(&fd, size)?;
        let s = SharedState { map, fd };
        let h = s.header();
        if h.magic != MAGIC {
            return Err(Error::layout(
                "shared state has a bad magic number (not an rdmix server?)",
            ));
        }
        if h.version != VERSION
            || h.header_size as usize != size_of::<ShmHeader>()
            || h.slot_size as usize != size_of::<ClientSlot>()
        {
            return Err(Error::layout(format!(
                "shared state layout v{} (header {} B, slot {} B) does not match this plugin's \
                 v{VERSION} ({} B, {} B): the running rdmix-server is from another version",
                h.version,
                h.header_size,
                h.slot_size,
                size_of::<ShmHeader>(),
                size_of::<ClientSlot>()
            )));
        }
        let g = s.geometry();
        let (so, su, sl, total) = layout(&g);
        if h.total_size != size
            || total != size
            || so != h.slots_offset
            || su != h.sum_offset
            || sl != h.sum_len
            || h.max_clients != MAX_CLIENTS
        {
            return Err(Error::layout(format!(
                "shared state is inconsistent: size {size}, header says {}, expected {total}",
                h.total_size
            )));
        }
        Ok(s)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Record the server's pid after it has forked into the background.
    pub fn set_server_pid(&self, pid: u32) {
        self.header().server_pid.store(pid, Ordering::Release);
    }

    pub fn header(&self) -> &ShmHeader {
        // SAFETY: the mapping is page-aligned and at least header-sized (checked at attach,
        // guaranteed at create); the header's non-atomic fields are never written after
        // creation.
        unsafe { &*(self.map.as_ptr() as *const ShmHeader) }
    }

    pub fn geometry(&self) -> Geometry {
        let h = self.header();
        Geometry {
            format: h.format,
            channels: h.channels,
            rate: h.rate,
            sample_bits: h.sample_bits,
            period_size: h.period_size,
            buffer_size: h.buffer_size,
            boundary: h.boundary,
            interleaved: h.interleaved != 0,
            card: h.card,
            device: h.device,
            subdevice: h.subdevice,
            slave_kind: h.slave_kind,
        }
    }

    pub fn slot(&self, i: u32) -> Option<&ClientSlot> {
        let h = self.header();
        if i >= h.max_clients {
            return None;
        }
        let off = h.slots_offset as usize + i as usize * size_of::<ClientSlot>();
        // SAFETY: offset within the mapping (layout checked at attach), 64-byte aligned; slots
        // are only accessed through atomics.
        Some(unsafe { &*(self.map.as_ptr().add(off) as *const ClientSlot) })
    }

    /// Claim a free slot for `pid`. Returns its index.
    pub fn claim_slot(&self, pid: u32) -> Option<u32> {
        let max = self.header().max_clients;
        for i in 0..max {
            let s = self.slot(i)?;
            if s.pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.state.store(0, Ordering::Relaxed);
                s.mixed_to.store(0, Ordering::Relaxed);
                s.frames_mixed.store(0, Ordering::Relaxed);
                s.xruns.store(0, Ordering::Relaxed);
                s.late.store(0, Ordering::Relaxed);
                s.wakeups.store(0, Ordering::Relaxed);
                s.early_wakeups.store(0, Ordering::Relaxed);
                s.start_pos.store(0, Ordering::Relaxed);
                s.volume.store(VOLUME_UNITY, Ordering::Relaxed);
                s.muted.store(0, Ordering::Relaxed);
                s.peak.store(0, Ordering::Relaxed);
                s.clips.store(0, Ordering::Relaxed);
                s.format.store(0, Ordering::Relaxed);
                s.channels.store(0, Ordering::Relaxed);
                s.rate.store(0, Ordering::Relaxed);
                s.period_size.store(0, Ordering::Relaxed);
                s.buffer_size.store(0, Ordering::Relaxed);
                s.played.store(0, Ordering::Relaxed);
                s.delay.store(0, Ordering::Relaxed);
                self.header().clients.fetch_add(1, Ordering::AcqRel);
                self.header().attaches.fetch_add(1, Ordering::Relaxed);
                return Some(i);
            }
        }
        None
    }

    /// Release a slot claimed by `pid` (the client at close, or the server for a dead client).
    pub fn release_slot(&self, i: u32, pid: u32) -> bool {
        match self.slot(i) {
            Some(s)
                if s.pid
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok() =>
            {
                self.header().clients.fetch_sub(1, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// The sum ring: one accumulator per slave sample, `buffer_size * channels` of them,
    /// interleaved by frame (see `mix` for the protocol).
    pub fn sum_ring(&self) -> &[AtomicU64] {
        let h = self.header();
        let n = (h.sum_len / 8) as usize;
        // SAFETY: the range lies within the mapping (checked at attach), is 8-byte aligned, and
        // is only ever accessed atomically by every process.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(h.sum_offset as usize) as *const AtomicU64,
                n,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom() -> Geometry {
        Geometry {
            format: 2,
            channels: 2,
            rate: 48000,
            sample_bits: 16,
            period_size: 1024,
            buffer_size: 4096,
            boundary: 4096 << 40,
            interleaved: true,
            card: 0,
            device: 0,
            subdevice: 0,
            slave_kind: SLAVE_HW,
        }
    }

    #[test]
    fn create_attach_roundtrip() {
        let s = SharedState::create(&geom(), 42, "test").unwrap();
        let fd = s.fd().try_clone_to_owned().unwrap();
        let c = SharedState::attach(fd).unwrap();
        assert_eq!(c.geometry(), geom());
        assert_eq!(c.sum_ring().len(), 8192);
        let i = c.claim_slot(7).unwrap();
        assert_eq!(s.header().clients.load(Ordering::Relaxed), 1);
        assert!(!s.release_slot(i, 8));
        assert!(s.release_slot(i, 7));
        assert_eq!(c.header().clients.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn attach_rejects_foreign_memfd() {
        let fd =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 8192).unwrap();
        let e = SharedState::attach(fd).unwrap_err();
        assert!(e.message().contains("magic"), "{e}");
    }

    #[test]
    fn attach_rejects_other_version() {
        let s = SharedState::create(&geom(), 1, "test").unwrap();
        // SAFETY: test-only write of the version field of a mapping we own.
        unsafe { *(s.map.as_mut_ptr().add(8) as *mut u32) = 99 };
        let e = SharedState::attach(s.fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert!(e.message().contains("v99"), "{e}");
    }
}
