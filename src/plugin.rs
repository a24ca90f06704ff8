//! The ioplug glue: the two exported symbols and every callback alsa-lib calls.
//!
//! Each `extern "C"` function catches panics inside itself (a panic escaping into C aborts the
//! host application) and reports errors the alsa-lib way: a negative errno, plus one line on
//! stderr naming the PCM and the cause.
//!
//! Aliasing: alsa-lib holds a raw pointer to `Plugin::io` and writes `appl_ptr`, `state` and
//! the hw_params fields behind our back, so `io` is only ever read through the raw pointer
//! (volatile for the pointers); Rust references are taken only to the `stream` field.

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use alsa_sys::{snd_config_t, snd_pcm_hw_params_t, snd_pcm_sw_params_t, snd_pcm_t};
use libc::{c_char, c_int, c_uint, c_ushort, pollfd};

use crate::error::{Error, Result};
use crate::ffi::*;
use crate::stream::Stream;

/// alsa-lib refuses a plugin without this marker (`SND_PCM_PLUGIN_SYMBOL(rdmix)`).
#[no_mangle]
#[used]
pub static __snd_pcm_rdmix_open_dlsym_pcm_001: c_char = 0;

const SND_PCM_STREAM_PLAYBACK: c_int = 0;
const SND_PCM_NONBLOCK: c_int = 1;
const SND_PCM_STATE_DRAINING: c_int = 5;
const SND_PCM_STATE_XRUN: c_int = 4;
const SND_PCM_STATE_RUNNING: c_int = 3;
const SND_PCM_STATE_PREPARED: c_int = 2;

#[repr(C)]
struct Plugin {
    /// Must stay first and never move: alsa-lib keeps a pointer to it.
    io: UnsafeCell<snd_pcm_ioplug_t>,
    name: CString,
    stream: Stream,
}

/// Debug trace of callbacks, enabled by `RDMIX_TRACE=1` at open (off the hot path otherwise:
/// one branch on a bool).
macro_rules! trace {
    ($s:expr, $($arg:tt)*) => {
        if $s.trace {
            eprintln!("rdmix[{:.6}] {}", $crate::plugin::now_secs(), format_args!($($arg)*));
        }
    };
}

pub(crate) fn now_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn report(name: &str, e: &Error) -> c_int {
    eprintln!("rdmix: PCM '{name}': {e}");
    -e.errno().max(1)
}

/// Run `f` on the plugin behind `io`, catching panics; `fail` is returned on panic.
///
/// # Safety
/// `io` must be the pointer alsa-lib passes to callbacks of a PCM created by `open`.
unsafe fn with<R>(
    io: *mut snd_pcm_ioplug_t,
    fail: R,
    f: impl FnOnce(&mut Stream, *mut snd_pcm_ioplug_t, &str) -> R,
) -> R {
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: private_data was set to our Box<Plugin> in open and stays valid until close.
        let p = unsafe { (*io).private_data as *mut Plugin };
        if p.is_null() {
            return None;
        }
        // SAFETY: only the `stream` and `name` fields are referenced; alsa-lib touches `io`.
        let (stream, name) = unsafe { (&mut (*p).stream, (*p).name.to_str().unwrap_or("rdmix")) };
        Some(f(stream, io, name))
    }));
    match r {
        Ok(Some(v)) => v,
        _ => {
            eprintln!("rdmix: internal error (panic) in a callback");
            fail
        }
    }
}

/// alsa-lib's application pointer (moved by writes, and by rewind/forward without a callback).
fn appl(io: *mut snd_pcm_ioplug_t) -> u64 {
    // SAFETY: io is live; appl_ptr is written by alsa-lib under its lock, read volatile here.
    unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*io).appl_ptr)) as u64 }
}

fn state(io: *mut snd_pcm_ioplug_t) -> c_int {
    // SAFETY: io is live; state is written by alsa-lib under its lock, read volatile here.
    unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*io).state)) }
}

unsafe extern "C" fn cb_start(io: *mut snd_pcm_ioplug_t) -> c_int {
    // SAFETY: called by alsa-lib with our io.
    unsafe {
        with(io, -libc::EIO, |s, _, name| match s.start() {
            Ok(()) => {
                trace!(s, "start {}", s.debug_positions());
                0
            }
            Err(e) => report(name, &e),
        })
    }
}

unsafe extern "C" fn cb_stop(io: *mut snd_pcm_ioplug_t) -> c_int {
    // SAFETY: called by alsa-lib with our io.
    unsafe {
        with(io, -libc::EIO, |s, _, _| {
            trace!(s, "stop {}", s.debug_positions());
            s.stop();
            0
        })
    }
}

unsafe extern "C" fn cb_pointer(io: *mut snd_pcm_ioplug_t) -> snd_pcm_sframes_t {
    // SAFETY: called by alsa-lib with our io.
    unsafe {
        with(io, -(libc::EPIPE as snd_pcm_sframes_t), |s, io, name| {
            s.follow_appl(appl(io));
            let r = s.pointer(state(io) == SND_PCM_STATE_DRAINING);
            trace!(
                s,
                "pointer st={} -> {:?} {}",
                state(io),
                r.as_ref().map_err(|e| e.errno()),
                s.debug_positions()
            );
            match r {
                Ok(v) => v as snd_pcm_sframes_t,
                Err(e) if e.errno() == libc::EPIPE => -(libc::EPIPE as snd_pcm_sframes_t),
                Err(e) => report(name, &e) as snd_pcm_sframes_t,
            }
        })
    }
}

unsafe extern "C" fn cb_transfer(
    io: *mut snd_pcm_ioplug_t,
    areas: *const snd_pcm_channel_area_t,
    offset: snd_pcm_uframes_t,
    size: snd_pcm_uframes_t,
) -> snd_pcm_sframes_t {
    // SAFETY: called by alsa-lib with our io and valid areas for offset..offset+size.
    unsafe {
        with(io, -(libc::EIO as snd_pcm_sframes_t), |s, io, name| {
            trace!(s, "transfer off={offset} size={size}");
            s.follow_appl(appl(io));
            match s.transfer(areas, offset, size) {
                Ok(n) => n as snd_pcm_sframes_t,
                Err(e) => report(name, &e) as snd_pcm_sframes_t,
            }
        })
    }
}

unsafe extern "C" fn cb_close(io: *mut snd_pcm_ioplug_t) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: close is the last callback; private_data is our Box<Plugin>, reclaimed once.
        unsafe {
            let p = (*io).private_data as *mut Plugin;
            (*io).private_data = std::ptr::null_mut();
            if !p.is_null() {
                if std::env::var_os("RDMIX_STATS").is_some_and(|v| v == "1") {
                    eprintln!(
                        "rdmix: PCM '{}': {}",
                        (*p).name.to_string_lossy(),
                        (*p).stream.stats_line()
                    );
                }
                drop(Box::from_raw(p));
            }
        }
    }));
    if r.is_err() {
        eprintln!("rdmix: internal error (panic) while closing");
    }
    0
}

unsafe extern "C" fn cb_hw_params(
    io: *mut snd_pcm_ioplug_t,
    _p: *mut snd_pcm_hw_params_t,
) -> c_int {
    // SAFETY: called by alsa-lib with our io; the hw fields were filled before this call.
    unsafe {
        with(io, -libc::EIO, |s, io, name| {
            let (fmt, ch, rate, period, buffer) = (
                (*io).format,
                (*io).channels,
                (*io).rate,
                (*io).period_size,
                (*io).buffer_size,
            );
            match s.set_hw_params(fmt, ch, rate, period, buffer) {
                Ok(()) => 0,
                Err(e) => report(name, &e),
            }
        })
    }
}

unsafe extern "C" fn cb_sw_params(io: *mut snd_pcm_ioplug_t, p: *mut snd_pcm_sw_params_t) -> c_int {
    // SAFETY: called by alsa-lib with our io and a valid sw_params container.
    unsafe {
        with(io, -libc::EIO, |s, _, _| {
            let (mut b, mut st, mut am): (alsa_sys::snd_pcm_uframes_t, _, _) = (0, 0, 0);
            alsa_sys::snd_pcm_sw_params_get_boundary(p, &mut b);
            alsa_sys::snd_pcm_sw_params_get_stop_threshold(p, &mut st);
            alsa_sys::snd_pcm_sw_params_get_avail_min(p, &mut am);
            s.set_sw_params(b, st, am);
            0
        })
    }
}

unsafe extern "C" fn cb_prepare(io: *mut snd_pcm_ioplug_t) -> c_int {
    // SAFETY: called by alsa-lib with our io.
    unsafe {
        with(io, -libc::EIO, |s, _, name| match s.prepare() {
            Ok(()) => 0,
            Err(e) => report(name, &e),
        })
    }
}

unsafe extern "C" fn cb_pause(io: *mut snd_pcm_ioplug_t, enable: c_int) -> c_int {
    // SAFETY: called by alsa-lib with our io.
    unsafe {
        with(io, -libc::EIO, |s, _, name| {
            let r = if enable != 0 { s.pause() } else { s.unpause() };
            trace!(s, "pause({enable}) {}", s.debug_positions());
            match r {
                Ok(()) => 0,
                Err(e) => report(name, &e),
            }
        })
    }
}

unsafe extern "C" fn cb_poll_count(_io: *mut snd_pcm_ioplug_t) -> c_int {
    1
}

unsafe extern "C" fn cb_poll_descriptors(
    io: *mut snd_pcm_ioplug_t,
    pfd: *mut pollfd,
    space: c_uint,
) -> c_int {
    if space < 1 || pfd.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: called by alsa-lib with our io and room for `space` pollfds.
    unsafe {
        with(io, -libc::EIO, |s, io, _| {
            *pfd = pollfd {
                fd: s.timer_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let st = state(io);
            // A stream that is not running can take data at once if it has room.
            let appl = std::ptr::read_volatile(std::ptr::addr_of!((*io).appl_ptr));
            let hw = std::ptr::read_volatile(std::ptr::addr_of!((*io).hw_ptr));
            let room = st == SND_PCM_STATE_PREPARED && appl.wrapping_sub(hw) < (*io).buffer_size;
            s.arm_timer_for(
                st == SND_PCM_STATE_DRAINING,
                room || (st != SND_PCM_STATE_RUNNING && st != SND_PCM_STATE_DRAINING),
            );
            trace!(
                s,
                "poll_descriptors st={st} room={room} {}",
                s.debug_positions()
            );
            1
        })
    }
}

unsafe extern "C" fn cb_poll_revents(
    io: *mut snd_pcm_ioplug_t,
    _pfd: *mut pollfd,
    _nfds: c_uint,
    revents: *mut c_ushort,
) -> c_int {
    if revents.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: called by alsa-lib with our io.
    let pcm = unsafe {
        with(io, std::ptr::null_mut(), |s, io, _| {
            s.ack_timer();
            (*io).pcm
        })
    };
    if pcm.is_null() {
        return -libc::EIO;
    }
    // Let alsa-lib update its pointers (it calls our pointer(), and ends a drain when done).
    // No reference into the plugin is held across this call.
    // SAFETY: pcm is the live handle of this plugin; alsa-lib's mutex is recursive.
    let avail = unsafe { alsa_sys::snd_pcm_avail_update(pcm as *mut snd_pcm_t) };
    // SAFETY: as above.
    unsafe {
        with(io, -libc::EIO, |s, io, _| {
            let st = state(io);
            let bufsize = (*io).buffer_size as i64;
            let ev: c_ushort = if avail < 0 {
                (libc::POLLOUT | libc::POLLERR) as c_ushort
            } else if st == SND_PCM_STATE_DRAINING {
                if avail as i64 >= bufsize {
                    libc::POLLOUT as c_ushort
                } else {
                    s.arm_timer_for(true, false);
                    0
                }
            } else if st == SND_PCM_STATE_RUNNING {
                if s.ready(avail as u64) {
                    // Level-triggered: stay readable until the application writes.
                    s.arm_timer_for(false, true);
                    libc::POLLOUT as c_ushort
                } else {
                    s.arm_timer_for(false, false);
                    0
                }
            } else {
                s.arm_timer_for(false, true);
                libc::POLLOUT as c_ushort
            };
            trace!(
                s,
                "revents st={st} avail={avail} -> {ev:#x} {}",
                s.debug_positions()
            );
            *revents = ev;
            0
        })
    }
}

unsafe extern "C" fn cb_delay(io: *mut snd_pcm_ioplug_t, delayp: *mut snd_pcm_sframes_t) -> c_int {
    // SAFETY: called by alsa-lib with our io and a valid out-pointer.
    unsafe {
        with(io, -libc::EIO, |s, io, name| {
            s.follow_appl(appl(io));
            if state(io) == SND_PCM_STATE_RUNNING || state(io) == SND_PCM_STATE_DRAINING {
                if let Err(e) = s.pointer(state(io) == SND_PCM_STATE_DRAINING) {
                    if e.errno() == libc::EPIPE {
                        // alsa-lib's delay path does not look at the result: put the PCM in
                        // XRUN here, as its pointer path would.
                        snd_pcm_ioplug_set_state(io, SND_PCM_STATE_XRUN);
                        return -libc::EPIPE;
                    }
                    return report(name, &e);
                }
            }
            *delayp = s.delay() as snd_pcm_sframes_t;
            0
        })
    }
}

static CALLBACKS: snd_pcm_ioplug_callback_t = snd_pcm_ioplug_callback_t {
    start: Some(cb_start),
    stop: Some(cb_stop),
    pointer: Some(cb_pointer),
    transfer: Some(cb_transfer),
    close: Some(cb_close),
    hw_params: Some(cb_hw_params),
    hw_free: None,
    sw_params: Some(cb_sw_params),
    prepare: Some(cb_prepare),
    drain: None,
    pause: Some(cb_pause),
    resume: None,
    poll_descriptors_count: Some(cb_poll_count),
    poll_descriptors: Some(cb_poll_descriptors),
    poll_revents: Some(cb_poll_revents),
    dump: None,
    delay: Some(cb_delay),
    query_chmaps: None,
    get_chmap: None,
    set_chmap: None,
};

const SND_PCM_ACCESS_MMAP_INTERLEAVED: c_uint = 0;
const SND_PCM_ACCESS_MMAP_NONINTERLEAVED: c_uint = 1;
const SND_PCM_ACCESS_RW_INTERLEAVED: c_uint = 3;
const SND_PCM_ACCESS_RW_NONINTERLEAVED: c_uint = 4;

fn check(r: c_int, what: &str) -> Result<()> {
    if r < 0 {
        Err(Error::new(
            crate::error::ErrorKind::Io,
            -r,
            format!("{what} failed ({r})"),
        ))
    } else {
        Ok(())
    }
}

/// Constrain the client to what the mixer runs: the slave's format or FLOAT_LE, the slave's
/// rate, one channel per binding, any access, and a buffer no longer than the slave's. ioplug
/// constrains bytes, not frames: the byte limits use the narrower of the two sample widths, so
/// a client in the wider one gets a proportionally shorter maximum buffer.
///
/// # Safety
/// `io` must be a plugin created by `snd_pcm_ioplug_create`.
unsafe fn set_constraints(io: *mut snd_pcm_ioplug_t, s: &Stream) -> Result<()> {
    let g = s.geometry();
    let access = [
        SND_PCM_ACCESS_MMAP_INTERLEAVED,
        SND_PCM_ACCESS_MMAP_NONINTERLEAVED,
        SND_PCM_ACCESS_RW_INTERLEAVED,
        SND_PCM_ACCESS_RW_NONINTERLEAVED,
    ];
    let fmt = [
        g.format as c_uint,
        crate::hw::SNDRV_PCM_FORMAT_FLOAT_LE as c_uint,
    ];
    let ch = s.client_channels();
    let native = s.slave_format().bytes() as c_uint;
    let min_fb = native.min(4) * ch;
    let buf = g.buffer_size as c_uint;
    // SAFETY: io is live; lists are valid for their lengths.
    unsafe {
        check(
            snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_ACCESS, 4, access.as_ptr()),
            "access constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_FORMAT, 2, fmt.as_ptr()),
            "format constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_CHANNELS, ch, ch),
            "channels constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_RATE, g.rate, g.rate),
            "rate constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_minmax(
                io,
                SND_PCM_IOPLUG_HW_PERIOD_BYTES,
                16 * min_fb,
                buf / 2 * min_fb,
            ),
            "period constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_minmax(
                io,
                SND_PCM_IOPLUG_HW_BUFFER_BYTES,
                32 * min_fb,
                buf * min_fb,
            ),
            "buffer constraint",
        )?;
        check(
            snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_PERIODS, 2, 1024),
            "periods constraint",
        )?;
    }
    Ok(())
}

/// # Safety
/// Called by alsa-lib's loader with valid configuration pointers.
unsafe fn open(
    pcmp: *mut *mut snd_pcm_t,
    name: &str,
    root: *mut snd_config_t,
    conf: *mut snd_config_t,
    stream: c_int,
    mode: c_int,
) -> Result<()> {
    if stream != SND_PCM_STREAM_PLAYBACK {
        return Err(Error::config(
            "rdmix is a playback mixer; it cannot capture",
        ));
    }
    if std::env::var_os(crate::alsa_out::IN_SERVER_ENV).is_some() {
        return Err(Error::config(
            "an rdmix PCM cannot be opened inside rdmix-server (a virtual device's sink PCM \
             must not lead back to rdmix)",
        ));
    }
    // SAFETY: forwarded from the loader.
    let cfg = unsafe { crate::config::parse(root, conf) }?;
    let conn = crate::client::open(&cfg)?;
    let s = Stream::attach(conn, &cfg)?;
    let cname = CString::new(name).unwrap_or_else(|_| CString::from(c"rdmix"));
    let timer = s.timer_fd();
    let plugin = Box::new(Plugin {
        io: UnsafeCell::new(snd_pcm_ioplug_t {
            version: SND_PCM_IOPLUG_VERSION,
            name: std::ptr::null(),
            flags: SND_PCM_IOPLUG_FLAG_BOUNDARY_WA
                | match cfg.tstamp {
                    crate::config::TstampType::Monotonic => SND_PCM_IOPLUG_FLAG_MONOTONIC,
                    crate::config::TstampType::Gettimeofday => 0,
                },
            poll_fd: timer,
            poll_events: libc::POLLIN as c_uint,
            mmap_rw: 0,
            callback: &CALLBACKS,
            private_data: std::ptr::null_mut(),
            pcm: std::ptr::null_mut(),
            stream: 0,
            state: 0,
            appl_ptr: 0,
            hw_ptr: 0,
            // alsa-lib does not set this for a PCM opened with SND_PCM_NONBLOCK; its drain
            // returns -EAGAIN only when it is set.
            nonblock: (mode & SND_PCM_NONBLOCK != 0) as c_int,
            access: 0,
            format: 0,
            channels: 0,
            rate: 0,
            period_size: 0,
            buffer_size: 0,
        }),
        name: cname,
        stream: s,
    });
    let p = Box::into_raw(plugin);
    // SAFETY: p is a fresh, never-moving allocation; from here on alsa-lib owns a pointer to
    // its io field, and cb_close (or the error path below) frees it exactly once.
    unsafe {
        let io = (*p).io.get();
        (*io).name = (*p).name.as_ptr();
        (*io).private_data = p as *mut libc::c_void;
        let r = snd_pcm_ioplug_create(io, (*p).name.as_ptr(), stream, mode);
        if r < 0 {
            drop(Box::from_raw(p));
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                -r,
                "snd_pcm_ioplug_create failed",
            ));
        }
        if let Err(e) = set_constraints(io, &(*p).stream) {
            // snd_pcm_ioplug_delete closes the PCM, which calls cb_close and frees p.
            snd_pcm_ioplug_delete(io);
            return Err(e);
        }
        *pcmp = (*io).pcm;
    }
    Ok(())
}

/// The plugin's entry point (`SND_PCM_PLUGIN_DEFINE_FUNC(rdmix)`).
///
/// # Safety
/// Called by alsa-lib's PCM loader with valid pointers.
#[no_mangle]
pub unsafe extern "C" fn _snd_pcm_rdmix_open(
    pcmp: *mut *mut snd_pcm_t,
    name: *const c_char,
    root: *mut snd_config_t,
    conf: *mut snd_config_t,
    stream: c_int,
    mode: c_int,
) -> c_int {
    let name = if name.is_null() {
        "rdmix".to_string()
    } else {
        // SAFETY: alsa-lib passes a NUL-terminated PCM name.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: forwarding the loader's pointers.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe {
        open(pcmp, &name, root, conf, stream, mode)
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => report(&name, &e),
        Err(_) => {
            eprintln!("rdmix: PCM '{name}': internal error (panic) during open");
            -libc::EIO
        }
    }
}
