//! The client's side of the socket: find the mixer's server, start it if it is not running, and
//! receive the hw PCM fd and the shared-state memfd.
//!
//! The server is a separate executable (`rdmix-server`), never a fork of the host application:
//! a fork of a multi-threaded program may run only async-signal-safe code, and the plugin must
//! leave no thread or process of its own inside the application. The spawned server binds its
//! socket, opens and starts the hardware, then forks into the background; its foreground process
//! exits 0 only when the socket is ready, which is what the client waits for.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};

use crate::config::PluginConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Message};

/// What a client holds after a successful handshake.
#[derive(Debug)]
pub struct Connection {
    /// Kept open for the client's lifetime: its EOF tells the server the client is gone.
    pub sock: OwnedFd,
    pub hw_fd: OwnedFd,
    pub hw_path: String,
    pub shm_fd: OwnedFd,
    pub slot: u32,
}

fn try_connect(name: &str) -> Result<Option<OwnedFd>> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::sys("socket", e))?;
    let addr = protocol::socket_addr(name)?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr) {
        Ok(()) => Ok(Some(sock)),
        Err(nix::errno::Errno::ECONNREFUSED) | Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::sys(format!("connect to rdmix-server @{name}"), e)),
    }
}

fn handshake(sock: OwnedFd) -> Result<Connection> {
    let tv = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| Error::sys("setsockopt SO_RCVTIMEO", e))?;
    protocol::send(
        sock.as_fd(),
        &Message::Hello {
            pid: std::process::id(),
        },
        &[],
    )?;
    let (msg, mut fds) = protocol::recv(sock.as_fd())?;
    match msg {
        Message::Welcome { slot, hw_path } => {
            if fds.len() != 2 {
                return Err(Error::protocol(format!(
                    "server sent {} file descriptors, expected 2",
                    fds.len()
                )));
            }
            let shm_fd = fds.pop().ok_or_else(|| Error::protocol("missing memfd"))?;
            let hw_fd = fds.pop().ok_or_else(|| Error::protocol("missing hw fd"))?;
            let st = nix::sys::stat::fstat(&hw_fd).map_err(|e| Error::sys("fstat hw fd", e))?;
            // A device node, or the memfd of the server's virtual device (Stream::attach
            // checks it against the shared state's slave kind).
            let kind = st.st_mode & libc::S_IFMT;
            if kind != libc::S_IFCHR && kind != libc::S_IFREG {
                return Err(Error::protocol("the hw fd from the server is not a device"));
            }
            Ok(Connection {
                sock,
                hw_fd,
                hw_path,
                shm_fd,
                slot,
            })
        }
        Message::Refuse { errno, message } => Err(Error::server(errno, message)),
        other => Err(Error::protocol(format!(
            "server answered the Hello with {}",
            other.kind_name()
        ))),
    }
}

/// What an introspection query returns: the server's pid, its live client count, and the
/// shared-state memfd (to map read-only).
#[derive(Debug)]
pub struct QueryReply {
    pub server_pid: u32,
    pub clients: u32,
    pub shm_fd: OwnedFd,
}

/// Ask the server behind abstract socket `name` for its state (no slot is claimed).
pub fn query(name: &str) -> Result<QueryReply> {
    let sock = try_connect(name)?.ok_or_else(|| {
        Error::server(libc::ENOENT, format!("no rdmix-server listens on @{name}"))
    })?;
    let tv = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| Error::sys("setsockopt SO_RCVTIMEO", e))?;
    protocol::send(
        sock.as_fd(),
        &Message::Query {
            pid: std::process::id(),
        },
        &[],
    )?;
    let (msg, mut fds) = protocol::recv(sock.as_fd())?;
    match msg {
        Message::Status {
            server_pid,
            clients,
        } if fds.len() == 1 => Ok(QueryReply {
            server_pid,
            clients,
            shm_fd: fds.remove(0),
        }),
        Message::Refuse { errno, message } => Err(Error::server(errno, message)),
        other => Err(Error::protocol(format!(
            "server answered the Query with {} and {} fds",
            other.kind_name(),
            fds.len()
        ))),
    }
}

/// Where the server binary is: config `server`, then `$RDMIX_SERVER`, then the first of
/// [`server_candidates`] of the plugin `.so`'s directory that exists.
pub fn server_path(cfg: &PluginConfig) -> Result<PathBuf> {
    if let Some(s) = &cfg.server {
        return Ok(PathBuf::from(s));
    }
    if let Some(s) = std::env::var_os("RDMIX_SERVER").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(s));
    }
    let dir = plugin_dir().ok_or_else(|| {
        Error::server(
            libc::ENOENT,
            "cannot locate the plugin's own directory; set `server`",
        )
    })?;
    let candidates = server_candidates(&dir);
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::server(
                libc::ENOENT,
                format!(
                    "rdmix-server not found (looked in {}); set the `server` key or RDMIX_SERVER",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// Where the plugin looks for `rdmix-server`, in order, relative to the directory holding the
/// plugin `.so` (canonical: `dladdr`'s path with symlinks resolved): next to it, then
/// `../libexec/rdmix/` (a private prefix such as /opt/rdmix/lib), `../../libexec/rdmix/`
/// (/usr/lib/alsa-lib → /usr/libexec) and `../../../libexec/rdmix/` (Debian's multiarch
/// /usr/lib/x86_64-linux-gnu/alsa-lib → /usr/libexec, where `rdmix install` and the .deb put it).
pub fn server_candidates(plugin_dir: &Path) -> [PathBuf; 4] {
    [
        plugin_dir.join("rdmix-server"),
        plugin_dir.join("../libexec/rdmix/rdmix-server"),
        plugin_dir.join("../../libexec/rdmix/rdmix-server"),
        plugin_dir.join("../../../libexec/rdmix/rdmix-server"),
    ]
}

/// The directory holding this shared object, from `dladdr` on one of our own functions.
fn plugin_dir() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe_zeroed_dl_info();
    let f = plugin_dir as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`; our function is mapped.
    let r = unsafe { libc::dladdr(f, &mut info) };
    if r == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic loader.
    let p = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    let p = Path::new(&p);
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    p.parent().map(Path::to_path_buf)
}

fn unsafe_zeroed_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}

fn server_args(cfg: &PluginConfig, name: &str) -> Vec<String> {
    let mut a = vec!["--socket".to_string(), name.to_string()];
    if let Some(v) = &cfg.virtual_sink {
        a.extend(["--virtual".into(), v.arg()]);
    } else {
        a.extend([
            "--card".into(),
            cfg.hw.card.to_string(),
            "--device".into(),
            cfg.hw.device.to_string(),
        ]);
        if let Some(s) = cfg.hw.subdevice {
            a.extend(["--subdevice".into(), s.to_string()]);
        }
    }
    a.extend(["--perm".into(), format!("{:o}", cfg.access.perm)]);
    if let Some(g) = cfg.access.gid {
        a.extend(["--gid".into(), g.to_string()]);
    }
    let p = &cfg.params;
    let opts: [(&str, Option<u64>); 8] = [
        ("--format", p.format.map(|v| v as u64)),
        ("--rate", p.rate.map(u64::from)),
        ("--channels", p.channels.map(u64::from)),
        ("--period-size", p.period_size),
        ("--period-time", p.period_time.map(u64::from)),
        ("--buffer-size", p.buffer_size),
        ("--buffer-time", p.buffer_time.map(u64::from)),
        ("--periods", p.periods.map(u64::from)),
    ];
    for (k, v) in opts {
        if let Some(v) = v {
            a.extend([k.to_string(), v.to_string()]);
        }
    }
    a
}

/// Start the server; its start-up errors go to the application's stderr unless `quiet` (a retry
/// after the first attempt said why).
fn spawn_server(cfg: &PluginConfig, name: &str, quiet: bool) -> Result<()> {
    let path = server_path(cfg)?;
    let status = Command::new(&path)
        .args(server_args(cfg, name))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let code = s.code().unwrap_or(libc::EIO);
            Err(Error::server(
                if code > 0 && code < 256 {
                    code
                } else {
                    libc::EIO
                },
                format!(
                    "{} failed to start the mixer on {} ({s})",
                    path.display(),
                    cfg.slave_name
                ),
            ))
        }
        // The host application reaped our child itself (SIGCHLD handler): carry on and connect.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        Err(e) => Err(Error::server(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("cannot run {}: {e}", path.display()),
        )),
    }
}

/// The server behind a mixer's name must be who the name says: for a private mixer the user
/// itself (or root); for one shared with a group, a member of that group (or root); anyone only
/// for a mixer open to all (other bits in `ipc_perm`). Abstract socket names are first come,
/// first served: without this check another user could claim the name first, be sent this
/// client's Hello and hand it a device of their choosing (and so hear its audio).
fn check_server(sock: &OwnedFd, cfg: &PluginConfig, name: &str) -> Result<()> {
    let me = nix::unistd::getuid().as_raw();
    let srv = protocol::peer_cred(sock.as_fd())?;
    if srv.uid == me || srv.uid == 0 {
        return Ok(());
    }
    let ok = cfg.access.shared()
        && (cfg.access.perm & 0o007 != 0
            || match cfg.access.gid {
                Some(g) => srv.in_group(g),
                // The group is the starting user's primary group, which we must be in to join.
                None => {
                    nix::unistd::getgid().as_raw() == srv.gid
                        || nix::unistd::getgroups()
                            .unwrap_or_default()
                            .iter()
                            .any(|g| g.as_raw() == srv.gid)
                }
            });
    if ok {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Access,
        libc::EACCES,
        format!(
            "@{name} is served by pid {} of uid {}, which may not serve this {} mixer of uid \
             {me}: refusing to talk to it (another user has claimed the mixer's name)",
            srv.pid,
            srv.uid,
            if cfg.access.shared() {
                "shared"
            } else {
                "private"
            }
        ),
    ))
}

/// The other rdmix mixers that play on the same device (card, device, subdevice): the names of
/// the listening abstract sockets in `/proc/net/unix` other than `name`.
fn other_mixers(name: &str, card: u32, device: u32, sub: u32) -> Vec<String> {
    let dev = format!("/c{card}d{device}s{sub}/");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
            let path = cols.get(7)?.strip_prefix('@')?;
            (cols.get(3) == Some(&"00010000")
                && path.starts_with("rdmix/")
                && path.contains(&dev)
                && path != name)
                .then(|| path.to_string())
        })
        .collect()
}

/// Who holds the device when the server could not open it: if an `rdmix-server` holds it
/// (one that is exiting, or one we may not inspect), `None` (worth a retry); if only processes
/// that map rdmix shared state hold it, the clients of a server that is gone: their pids.
/// Read from `/proc/*/fd` and `/proc/*/maps` (our own processes; others are skipped), off the
/// real-time path, only after a failed start.
fn orphaned_clients(card: u32, device: u32) -> Option<Vec<u32>> {
    let dev = std::path::PathBuf::from(format!("/dev/snd/pcmC{card}D{device}p"));
    let mut clients = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            if comm.trim() == "rdmix-server" {
                return None;
            }
            continue;
        };
        let holds = fds
            .flatten()
            .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l == dev));
        if !holds {
            continue;
        }
        if comm.trim() == "rdmix-server" {
            return None;
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.contains("memfd:rdmix-shared-state") {
            clients.push(pid);
        }
    }
    (!clients.is_empty()).then_some(clients)
}

/// The server could not open the device because it is busy: say who holds it, and when it is
/// another rdmix mixer, how to make one mixer shared instead.
fn busy_error(cfg: &PluginConfig, e: Error, others: &[String]) -> Error {
    let msg = match others.first() {
        Some(m) => {
            let whose = match m.split('/').nth(1).and_then(|w| w.strip_prefix('u')) {
                Some(uid) => format!("the private mixer of uid {uid}"),
                None => "a shared mixer".to_string(),
            };
            format!(
                "{} is busy: another rdmix mixer plays on it (@{m}, {whose}). A mixer is \
                 private to its user unless its PCM sets ipc_perm (e.g. 0660) and ipc_gid (a \
                 group every user is in); then all users' clients join that one mixer",
                cfg.slave_name
            )
        }
        None => format!("{} is busy (another program has it open)", cfg.slave_name),
    };
    Error::new(e.kind(), e.errno(), format!("{msg}: {e}"))
}

/// Connect to the mixer for `cfg`, starting its server if needed.
pub fn open(cfg: &PluginConfig) -> Result<Connection> {
    let uid = nix::unistd::getuid().as_raw();
    let sub = cfg.hw.subdevice.unwrap_or(0);
    let owner = (!cfg.access.shared() || cfg.ipc_key_add_uid).then_some(uid);
    let name = match &cfg.virtual_sink {
        Some(v) => v.socket_name(owner, cfg.ipc_key),
        None => protocol::socket_name(owner, cfg.hw.card, cfg.hw.device, sub, cfg.ipc_key),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last_err: Option<Error> = None;
    let mut quiet = false;
    loop {
        if let Some(sock) = try_connect(&name)? {
            check_server(&sock, cfg, &name)?;
            match handshake(sock) {
                Ok(c) => return Ok(c),
                // The server was exiting as we connected: start a new one.
                Err(e) if e.errno() == libc::ECONNRESET || e.errno() == libc::EPIPE => {
                    last_err = Some(e)
                }
                Err(e) => return Err(e),
            }
        } else {
            match spawn_server(cfg, &name, quiet) {
                Ok(()) => {}
                Err(e) if e.errno() == libc::EBUSY && cfg.virtual_sink.is_none() => {
                    // Our own previous server may still hold the device while it exits (it
                    // unbinds its name first): retry. Another mixer that still listens is not
                    // leaving: fail now, saying whose it is.
                    let others = other_mixers(&name, cfg.hw.card, cfg.hw.device, sub);
                    // A mixer that still listens holds the device: name it (checked first: the
                    // device's owner_pid is the server's foreground process, gone after it forks).
                    if !others.is_empty() {
                        return Err(busy_error(cfg, e, &others));
                    }
                    if let Some(pids) = orphaned_clients(cfg.hw.card, cfg.hw.device) {
                        return Err(Error::new(
                            e.kind(),
                            libc::EBUSY,
                            format!(
                                "{} is busy: the rdmix server that opened it is gone, and its \
                                 clients (pids {pids:?}) still play on it (they keep their \
                                 sound); this client can join once they have closed it",
                                cfg.slave_name
                            ),
                        ));
                    }
                    if !others.is_empty() || Instant::now() >= deadline {
                        return Err(busy_error(cfg, e, &others));
                    }
                    last_err = Some(e);
                    quiet = true;
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(last_err.unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Server,
                    libc::ETIMEDOUT,
                    "timed out reaching rdmix-server",
                )
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
