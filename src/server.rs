//! `rdmix-server`: owns the hardware PCM of one mixer and hands clients its fd.
//!
//! It does only non-real-time work: configure and start the device once, answer each client's
//! `Hello` with the hw fd and the shared-state memfd, reclaim the slot of a client whose
//! connection closes (including a crashed one), and exit when the last client has gone.
//! Clients never talk to it per period.
//!
//! Lifecycle: bind the abstract socket (an atomic claim of the mixer's name: a second server
//! started at the same moment gets EADDRINUSE and exits 0, its client connects to the first),
//! listen (early arrivals wait in the backlog), open and configure the device, create the shared
//! state, then fork into the
//! background; the foreground process exits 0, which tells the spawning client the socket is
//! ready. Errors before that point go to the spawning application's stderr and become the exit
//! status (an errno value).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};

use crate::error::{Error, Result};
use crate::hw::{HwPcm, HwRequest};
use crate::protocol::{self, Message};
use crate::shm::{Geometry, SharedState};
use crate::virtual_dev::{ClientRecord, Player, SinkSpec, VirtualDevice, VirtualGeometry};

/// Command-line options of `rdmix-server`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub socket: String,
    pub card: u32,
    pub device: u32,
    pub subdevice: Option<u32>,
    pub request: HwRequest,
    /// Who besides the owner may join (octal mode bits, as dmix's ipc_perm) and the group the
    /// group bits refer to (ipc_gid; default: the owner's primary group).
    pub perm: u32,
    pub gid: Option<u32>,
    /// Stay in the foreground and log to stderr (for debugging).
    pub foreground: bool,
    /// Run the virtual device with this sink instead of opening a card.
    pub virtual_sink: Option<SinkSpec>,
}

pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        perm: 0o600,
        ..Options::default()
    };
    let mut it = args.iter();
    let mut socket = None;
    let mut card = None;
    while let Some(a) = it.next() {
        if a == "--foreground" {
            o.foreground = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| Error::config(format!("{a} needs a value")))?;
        let num = |v: &str| -> Result<u64> {
            v.parse::<u64>()
                .map_err(|_| Error::config(format!("{a}: '{v}' is not a number")))
        };
        match a.as_str() {
            "--socket" => socket = Some(v.clone()),
            "--card" => card = Some(num(v)? as u32),
            "--device" => o.device = num(v)? as u32,
            "--subdevice" => o.subdevice = Some(num(v)? as u32),
            "--format" => o.request.format = Some(num(v)? as i32),
            "--rate" => o.request.rate = Some(num(v)? as u32),
            "--channels" => o.request.channels = Some(num(v)? as u32),
            "--period-size" => o.request.period_size = Some(num(v)?),
            "--period-time" => o.request.period_time = Some(num(v)? as u32),
            "--buffer-size" => o.request.buffer_size = Some(num(v)?),
            "--buffer-time" => o.request.buffer_time = Some(num(v)? as u32),
            "--periods" => o.request.periods = Some(num(v)? as u32),
            "--perm" => {
                o.perm = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| Error::config(format!("--perm: '{v}' is not an octal mode")))?
            }
            "--gid" => o.gid = Some(num(v)? as u32),
            "--virtual" => o.virtual_sink = Some(SinkSpec::parse(v)?),
            _ => return Err(Error::config(format!("unknown option {a}"))),
        }
    }
    o.socket = socket.ok_or_else(|| Error::config("--socket is required"))?;
    o.card = match (card, &o.virtual_sink) {
        (Some(c), None) => c,
        (None, Some(_)) => 0,
        (None, None) => return Err(Error::config("--card or --virtual is required")),
        (Some(_), Some(_)) => return Err(Error::config("--card and --virtual exclude each other")),
    };
    Ok(o)
}

/// How long a connection may stay silent before its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server waits for its first client before giving up.
const FIRST_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many connections wait for their first message at once; a newcomer beyond it
/// closes the oldest silent one (a real client speaks at once, a flood does not), so a flood of
/// silent connections can neither exhaust the server's fds nor lock out the clients after it.
const MAX_UNWELCOMED: usize = 128;
/// Connections accepted per round of the loop, so that a connect flood cannot starve the
/// servicing of connections already accepted.
const ACCEPT_BATCH: usize = 64;

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    since: Instant,
    /// Set once the client has been welcomed: (slot, pid).
    slot: Option<(u32, u32)>,
    /// The client's program name, read at its welcome (it may be gone when it leaves).
    program: String,
}

/// What the server plays on: a kernel hw PCM, or its own virtual device.
#[derive(Debug)]
enum Device {
    Hw {
        pcm: HwPcm,
        /// The device's status page, for the housekeeping sweep's hardware position.
        status: crate::hw::StatusPage,
    },
    Virtual {
        dev: std::sync::Arc<VirtualDevice>,
        /// The sink, opened before the fork (its errors reach the application); moved into
        /// the playing thread, which starts after the fork.
        sink: Option<crate::virtual_dev::Sink>,
        player: Option<Player>,
        /// Clients that have left (a WAV sink's summary).
        played: Vec<ClientRecord>,
    },
}

impl Device {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Device::Hw { pcm, .. } => pcm.fd(),
            Device::Virtual { dev, .. } => dev.fd(),
        }
    }
    fn path(&self) -> &str {
        match self {
            Device::Hw { pcm, .. } => pcm.path(),
            Device::Virtual { dev, .. } => dev.name(),
        }
    }
    fn hw_ptr(&self) -> u64 {
        match self {
            Device::Hw { status, .. } => status.hw_ptr(),
            Device::Virtual { dev, .. } => dev.hw_ptr(),
        }
    }
}

#[derive(Debug)]
pub struct Server {
    listener: OwnedFd,
    device: Device,
    shared: SharedState,
    conns: HashMap<RawFd, Conn>,
    uid: u32,
    perm: u32,
    gid: u32,
    had_client: bool,
    started: Instant,
    /// A spare fd (on /dev/null), given up to accept and close one connection when the fd table
    /// is full: otherwise EMFILE leaves the listener readable and `poll` spinning.
    reserve: Option<OwnedFd>,
    last_sweep: Instant,
}

/// How often the server re-tags stale accumulators (see `mix::refresh_stale`): far more often
/// than the 2^23 laps (hours) after which a stale lap would look newer.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Bound {
    Ready(Box<Server>),
    /// Another server owns the name already.
    AlreadyRunning,
}

/// Claim the socket name, open and start the device, create the shared state.
pub fn setup(o: &Options) -> Result<Bound> {
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| Error::sys("socket", e))?;
    let addr = protocol::socket_addr(&o.socket)?;
    match bind(listener.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::EADDRINUSE) => return Ok(Bound::AlreadyRunning),
        Err(e) => return Err(Error::sys(format!("bind @{}", o.socket), e)),
    }
    // Listen at once: clients that arrive while the device is being set up wait in the backlog
    // for their Welcome instead of racing to start servers of their own.
    listen(
        &listener,
        Backlog::new(64).map_err(|e| Error::sys("listen backlog", e))?,
    )
    .map_err(|e| Error::sys("listen", e))?;
    let (device, g) = match &o.virtual_sink {
        None => {
            let hw = HwPcm::open(o.card, o.device, o.subdevice)?;
            let cfg = hw.configure(&o.request)?;
            hw.prepare()?;
            hw.start()?;
            let g = Geometry {
                format: cfg.format,
                channels: cfg.channels,
                rate: cfg.rate,
                sample_bits: cfg.sample_bits,
                period_size: cfg.period_size,
                buffer_size: cfg.buffer_size,
                boundary: cfg.boundary,
                interleaved: cfg.interleaved,
                card: o.card,
                device: o.device,
                subdevice: o.subdevice.unwrap_or(0),
                slave_kind: crate::shm::SLAVE_HW,
            };
            let status = hw.map_status()?;
            (Device::Hw { pcm: hw, status }, g)
        }
        Some(sink) => {
            let vg = VirtualGeometry::choose(&o.request)?;
            let dev = VirtualDevice::create(vg, sink.clone())?;
            let g = Geometry {
                format: vg.format,
                channels: vg.channels,
                rate: vg.rate,
                sample_bits: vg.sample_bits,
                period_size: vg.period_size,
                buffer_size: vg.buffer_size,
                boundary: vg.boundary,
                interleaved: true,
                card: 0,
                device: 0,
                subdevice: 0,
                slave_kind: crate::shm::SLAVE_VIRTUAL,
            };
            let sink = dev.open_sink()?;
            let device = Device::Virtual {
                dev: std::sync::Arc::new(dev),
                sink: Some(sink),
                player: None,
                played: Vec::new(),
            };
            (device, g)
        }
    };
    let shared = SharedState::create(&g, std::process::id(), device.path())?;
    Ok(Bound::Ready(Box::new(Server {
        listener,
        device,
        shared,
        conns: HashMap::new(),
        uid: nix::unistd::getuid().as_raw(),
        perm: o.perm,
        gid: o.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw()),
        had_client: false,
        started: Instant::now(),
        reserve: None,
        last_sweep: Instant::now(),
    })))
}

impl Server {
    /// Serve until the last client has gone.
    pub fn run(mut self) -> Result<()> {
        // The pid clients and tools see is the background process's (the one that setup ran
        // in has exited after the fork).
        self.shared.set_server_pid(std::process::id());
        if let Device::Virtual {
            dev, sink, player, ..
        } = &mut self.device
        {
            if let Some(sink) = sink.take() {
                *player = Some(dev.start(sink)?);
            }
        }
        loop {
            if let Device::Virtual {
                player: Some(p), ..
            } = &self.device
            {
                if p.finished() {
                    // The sink failed: say why and stop (clients see the device stopped).
                    break;
                }
            }
            if self.conns.is_empty()
                && (self.had_client || self.started.elapsed() > FIRST_CLIENT_TIMEOUT)
            {
                break;
            }
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let keys: Vec<RawFd> = self.conns.keys().copied().collect();
            for k in &keys {
                fds.push(PollFd::new(self.conns[k].fd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(500u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll", e)),
            }
            let listen_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            let ready: Vec<RawFd> = keys
                .iter()
                .zip(&fds[1..])
                .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(k, _)| *k)
                .collect();
            drop(fds);
            for k in ready {
                self.service(k);
            }
            if listen_ready {
                self.accept_all();
            }
            self.expire_silent();
            if self.last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.sweep();
            }
        }
        eprintln!(
            "rdmix-server {}: no client left, stopping the device and exiting",
            std::process::id()
        );
        // Unbind the name first so no new client connects to a server that is leaving.
        drop(self.listener);
        match self.device {
            Device::Hw { pcm, .. } => {
                let _ = pcm.drop_stream();
                Ok(())
            }
            Device::Virtual {
                dev,
                player,
                played,
                ..
            } => {
                dev.mark_stopped();
                let result = player.map(Player::stop).transpose();
                let frames = result.as_ref().ok().copied().flatten().unwrap_or(0);
                write_summary(&dev, &played, frames);
                result.map(|_| ())
            }
        }
    }

    /// Housekeeping off the real-time path: keep stale lap tags from wrapping.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let g = self.shared.geometry();
        crate::mix::refresh_stale(
            self.shared.sum_ring(),
            g.channels as usize,
            g.buffer_size,
            self.device.hw_ptr(),
        );
    }

    /// Accept what the backlog holds (at most `ACCEPT_BATCH`). Never spins on an error: EMFILE
    /// or ENFILE closes the oldest silent connection, or else accepts and drops the newcomer
    /// through the reserve fd; transient errors skip one connection; anything else waits for
    /// the next round.
    fn accept_all(&mut self) {
        if self.reserve.is_none() {
            self.reserve = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
        }
        for _ in 0..ACCEPT_BATCH {
            match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => {
                    // SAFETY: accept4 returned a new fd that nobody else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    if self.unwelcomed() >= MAX_UNWELCOMED {
                        self.drop_oldest_unwelcomed();
                    }
                    self.conns.insert(
                        fd.as_raw_fd(),
                        Conn {
                            fd,
                            since: Instant::now(),
                            slot: None,
                            program: String::new(),
                        },
                    );
                }
                Err(
                    nix::errno::Errno::EINTR
                    | nix::errno::Errno::ECONNABORTED
                    | nix::errno::Errno::EPROTO,
                ) => continue,
                Err(nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE) => {
                    if self.drop_oldest_unwelcomed() {
                        continue;
                    }
                    // Every fd is a welcomed client's: turn the newcomer away (it sees EOF).
                    let Some(spare) = self.reserve.take() else {
                        return;
                    };
                    drop(spare);
                    if let Ok(fd) = accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                        // SAFETY: as above; closed at once.
                        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                    }
                    self.reserve = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
                }
                // EAGAIN: the backlog is empty. ENOBUFS, ENOMEM...: try again next round.
                Err(_) => return,
            }
        }
    }

    /// Connections that have not been welcomed (yet).
    fn unwelcomed(&self) -> usize {
        self.conns.values().filter(|c| c.slot.is_none()).count()
    }

    /// Close the connection that has waited longest for its first message; false if none.
    fn drop_oldest_unwelcomed(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.slot.is_none())
            .min_by_key(|(_, c)| c.since)
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.conns.remove(&k);
                true
            }
            None => false,
        }
    }

    fn expire_silent(&mut self) {
        let stale: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| c.slot.is_none() && c.since.elapsed() > HELLO_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.conns.remove(&k);
        }
    }

    fn close(&mut self, k: RawFd) {
        if let Some(c) = self.conns.remove(&k) {
            if let Some((slot, pid)) = c.slot {
                if let (Device::Virtual { played, .. }, Some(s)) =
                    (&mut self.device, self.shared.slot(slot))
                {
                    // The slot is this client's until the server (this thread) welcomes
                    // another client into it: its last figures are still there.
                    let start = s.start_pos.load(std::sync::atomic::Ordering::Relaxed);
                    let frames = s.frames_mixed.load(std::sync::atomic::Ordering::Relaxed);
                    played.push(ClientRecord {
                        pid,
                        program: c.program.clone(),
                        start_frame: if frames > 0 { start } else { 0 },
                        frames,
                        late: s.late.load(std::sync::atomic::Ordering::Relaxed),
                        xruns: s.xruns.load(std::sync::atomic::Ordering::Relaxed),
                        clips: s.clips.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
                self.shared.release_slot(slot, pid);
            }
        }
    }

    /// A connection is readable: a Hello, or (for a welcomed client) EOF or junk.
    fn service(&mut self, k: RawFd) {
        let Some(c) = self.conns.get(&k) else { return };
        let res = protocol::recv(c.fd.as_fd());
        let welcomed = c.slot.is_some();
        // The protocol has no message that carries fds to the server: one that does is
        // malformed (handled as junk below). Every received fd is closed when `res` drops.
        match res {
            Ok((Message::Hello { .. }, fds)) if !welcomed && fds.is_empty() => {
                if let Err(e) = self.welcome(k) {
                    if let Some(c) = self.conns.get(&k) {
                        let _ = protocol::send(
                            c.fd.as_fd(),
                            &Message::Refuse {
                                errno: e.errno(),
                                message: e.message().to_string(),
                            },
                            &[],
                        );
                    }
                    self.close(k);
                } else {
                    self.forget_stale_slot(k);
                }
            }
            Ok((Message::Query { .. }, fds)) if !welcomed && fds.is_empty() => {
                let reply = self.status_reply(k);
                if let Some(c) = self.conns.get(&k) {
                    let _ = match reply {
                        Ok(m) => protocol::send(c.fd.as_fd(), &m, &[self.shared.fd()]),
                        Err(e) => protocol::send(
                            c.fd.as_fd(),
                            &Message::Refuse {
                                errno: e.errno(),
                                message: e.message().to_string(),
                            },
                            &[],
                        ),
                    };
                }
                self.close(k);
            }
            Err(e) if e.errno() == libc::EAGAIN => {}
            // EOF, a second Hello, anything else: the conversation is over.
            _ => self.close(k),
        }
    }

    /// Connection `k` was just welcomed into a slot that was free: any other connection still
    /// recorded as holding that slot is stale (its client released the slot itself, then left,
    /// and its EOF has not been read yet). Forget the record, so that reading that EOF cannot
    /// release the slot now held by `k`: a process that closes and reopens its PCM gets its
    /// old slot back under the same pid, and the EOF of its old connection may be read after
    /// its new Hello.
    fn forget_stale_slot(&mut self, k: RawFd) {
        let Some(slot) = self.conns.get(&k).and_then(|c| c.slot).map(|(s, _)| s) else {
            return;
        };
        for (other, c) in self.conns.iter_mut() {
            if *other != k && c.slot.is_some_and(|(s, _)| s == slot) {
                c.slot = None;
            }
        }
    }

    /// The owner and root always; members of the group when the group bits are set; anyone
    /// when the other bits are set. Group membership counts the peer's primary and
    /// supplementary groups as the kernel recorded them at connect (SO_PEERGROUPS).
    fn admits(&self, peer: &protocol::PeerCred) -> bool {
        if peer.uid == self.uid || peer.uid == 0 || self.perm & 0o007 != 0 {
            return true;
        }
        self.perm & 0o070 != 0 && peer.in_group(self.gid)
    }

    /// Check the peer's credentials (SO_PEERCRED: what the kernel recorded at connect, not
    /// what the peer says) against the mixer's access rule; returns its pid.
    fn check_peer(&self, k: RawFd) -> Result<u32> {
        let c = self.conns.get(&k).ok_or_else(|| Error::protocol("gone"))?;
        let peer = protocol::peer_cred(c.fd.as_fd())?;
        if !self.admits(&peer) {
            let why = if self.perm & 0o070 != 0 {
                format!(
                    "the mixer of uid {} admits group {} (ipc_perm {:04o}, ipc_gid {}) and uid {} \
                     is not in it: add the user to group {}, or change ipc_gid / ipc_perm in the \
                     rdmix PCM's configuration",
                    self.uid, self.gid, self.perm, self.gid, peer.uid, self.gid
                )
            } else {
                format!(
                    "the mixer of uid {} is private (ipc_perm {:04o}): to share it between users, \
                     set ipc_perm (e.g. 0660) and ipc_gid (a group both are in) in the rdmix \
                     PCM's configuration",
                    self.uid, self.perm
                )
            };
            return Err(Error::new(
                crate::error::ErrorKind::Access,
                libc::EACCES,
                format!("uid {} may not join: {why}", peer.uid),
            ));
        }
        Ok(peer.pid as u32)
    }

    /// Introspection: the number of live clients (the memfd goes with the reply).
    fn status_reply(&self, k: RawFd) -> Result<Message> {
        self.check_peer(k)?;
        Ok(Message::Status {
            server_pid: std::process::id(),
            clients: self
                .shared
                .header()
                .clients
                .load(std::sync::atomic::Ordering::Acquire),
        })
    }

    fn welcome(&mut self, k: RawFd) -> Result<()> {
        let pid = self.check_peer(k)?;
        let c = self.conns.get(&k).ok_or_else(|| Error::protocol("gone"))?;
        let slot = self
            .shared
            .claim_slot(pid)
            .ok_or_else(|| Error::server(libc::EBUSY, "the mixer has no free client slot"))?;
        let msg = Message::Welcome {
            slot,
            hw_path: self.device.path().to_string(),
        };
        if let Err(e) = protocol::send(c.fd.as_fd(), &msg, &[self.device.fd(), self.shared.fd()]) {
            self.shared.release_slot(slot, pid);
            return Err(e);
        }
        if let Some(c) = self.conns.get_mut(&k) {
            c.slot = Some((slot, pid));
            c.program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
        }
        self.had_client = true;
        Ok(())
    }
}

/// The virtual device's summary when the server stops: one line per client that played, and
/// the total; to the server's log, and for a WAV sink also to `<file>.txt` (the frames are WAV
/// frames: the device's position 0 is the file's first frame).
fn write_summary(dev: &VirtualDevice, played: &[ClientRecord], frames: u64) {
    let g = dev.geometry();
    let mut text = format!(
        "rdmix virtual device {}: {} {} Hz {} ch, period {} buffer {}, {frames} frames played\n",
        dev.name(),
        crate::hw::format_name(g.format),
        g.rate,
        g.channels,
        g.period_size,
        g.buffer_size
    );
    for c in played {
        text.push_str(&format!(
            "client pid={} program={} start_frame={} frames={} late_samples={} xruns={} clips={}\n",
            c.pid, c.program, c.start_frame, c.frames, c.late, c.xruns, c.clips
        ));
    }
    eprint!("{text}");
    if let SinkSpec::Wav(p) = dev.sink() {
        let mut path = p.clone().into_os_string();
        path.push(".txt");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("rdmix-server: cannot write {}: {e}", path.to_string_lossy());
        }
    }
}

/// Close every inherited fd above stderr: the server must not keep the application's files,
/// sockets or pipes open.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; at this point (start of main) nothing in this
    // process owns an fd above 2.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: as above; closing an fd that was the read_dir's own is harmless now.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Fork into the background: the parent exits 0 (socket ready), the child continues detached
/// with stdio on /dev/null (or on `$RDMIX_SERVER_LOG`).
pub fn daemonize() -> Result<()> {
    // SAFETY: the server is single-threaded at this point, so the child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        nix::unistd::ForkResult::Parent { .. } => std::process::exit(0),
        nix::unistd::ForkResult::Child => {}
    }
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    let log = std::env::var_os("RDMIX_SERVER_LOG").and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    if let Ok(null) = null {
        let out = log
            .as_ref()
            .map(|l| l.as_raw_fd())
            .unwrap_or(null.as_raw_fd());
        // SAFETY: dup2 onto the standard descriptors of our own process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(out, 1);
            libc::dup2(out, 2);
        }
    }
    Ok(())
}

/// Leave a real-time scheduling policy inherited from the application that started us (audio
/// programs often run SCHED_FIFO): the server does no real-time work, and any local user can
/// connect to an abstract socket, so a real-time server kept busy by a connection flood would
/// take the CPU from everything below its priority, the mixing clients' feeders included.
fn drop_realtime() {
    // SAFETY: sched_getscheduler/sched_setscheduler act on our own process; the parameter is a
    // plain struct that lives across the call.
    unsafe {
        let policy = libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK;
        if policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
        }
    }
}

/// The whole server: returns the process exit status.
pub fn main(args: &[String]) -> i32 {
    close_inherited_fds();
    drop_realtime();
    // So that a virtual device's sink PCM cannot lead back into rdmix (the plugin refuses to
    // open in this process). Set while the process has one thread.
    std::env::set_var(crate::alsa_out::IN_SERVER_ENV, "1");
    // SAFETY: installing SIG_IGN for SIGPIPE in our own single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rdmix-server: {e}");
            return 2;
        }
    };
    let server = match setup(&o) {
        Ok(Bound::Ready(s)) => s,
        Ok(Bound::AlreadyRunning) => return 0,
        Err(e) => {
            match &o.virtual_sink {
                Some(s) => eprintln!("rdmix-server: virtual:{}: {e}", s.arg()),
                None => eprintln!("rdmix-server: hw:{},{}: {e}", o.card, o.device),
            }
            return e.errno().clamp(1, 255);
        }
    };
    if !o.foreground {
        if let Err(e) = daemonize() {
            eprintln!("rdmix-server: {e}");
            return e.errno().clamp(1, 255);
        }
    }
    match server.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rdmix-server: {e}");
            1
        }
    }
}
