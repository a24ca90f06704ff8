//! The socket protocol between a client (the plugin) and `rdmix-server`.
//!
//! Transport: a `SOCK_SEQPACKET` unix socket in the abstract namespace (nothing on disk, nothing
//! stale after a crash). Each message is one packet, little-endian, fixed layout:
//!
//! ```text
//! 0  u32 magic "RDMX"
//! 4  u16 protocol version
//! 6  u16 message kind
//! 8  ... body (per kind)
//! ```
//!
//! - `Hello` (client → server), body: `u32 pid`, `u32 reserved`. Sent once after connect.
//! - `Welcome` (server → client), body: `u32 slot`, `u32 reserved`, `u64 hw path length`, then the
//!   device path bytes; carries two fds with SCM_RIGHTS: the hw PCM fd and the shared-state memfd.
//! - `Refuse` (server → client), body: `i32 errno`, `u32 message length`, then a UTF-8 message.
//! - `Query` (client → server), body: `u32 pid`, `u32 reserved`: introspection instead of `Hello`
//!   (no slot is claimed; the same admission check applies).
//! - `Status` (server → client), body: `u32 server pid`, `u32 live clients`; carries one fd: the
//!   shared-state memfd, for the asker to map read-only. The server then closes the connection.
//!
//! The fixed parts are the `#[repr(C)]` structs below ([`MsgHeader`] and one body per kind), with
//! the `KIND_*` tags and the limits as constants; the encoder and decoder use them, and cbindgen
//! exports them to `include/rdmix.h` for C tools.
//!
//! After `Welcome` nothing more is said: the connection stays open only so that the server sees
//! the client go (EOF) and can reclaim its slot. There is no per-period traffic.
//!
//! Every send uses `MSG_NOSIGNAL` (a dead peer gives EPIPE, never SIGPIPE in the host
//! application) and every receive `MSG_CMSG_CLOEXEC`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::error::{Error, Result};

/// "RDMX" as a little-endian u32 (a literal, so that cbindgen can export it; pinned below).
pub const MAGIC: u32 = 0x584d_4452;
pub const PROTO_VERSION: u16 = 1;
/// No packet is larger than this; a bigger one is malformed.
pub const MAX_PACKET: usize = 1024;
/// The longest device path a `Welcome` carries (bytes, no terminating NUL).
pub const MAX_HW_PATH: usize = 256;
/// The longest message a `Refuse` carries (bytes, no terminating NUL): the whole packet
/// (header, `RefuseBody`, message) fits in `MAX_PACKET`.
pub const MAX_REFUSE_MESSAGE: usize = 1008;

/// `MsgHeader::kind` of a `Hello` (client → server), body `HelloBody`, no fds.
pub const KIND_HELLO: u16 = 1;
/// `MsgHeader::kind` of a `Welcome` (server → client), body `WelcomeBody` and the device path;
/// two fds: the hw PCM fd (or the virtual device's), then the shared-state memfd.
pub const KIND_WELCOME: u16 = 2;
/// `MsgHeader::kind` of a `Refuse` (server → client), body `RefuseBody` and the message.
pub const KIND_REFUSE: u16 = 3;
/// `MsgHeader::kind` of a `Query` (client → server), body `QueryBody`, no fds.
pub const KIND_QUERY: u16 = 4;
/// `MsgHeader::kind` of a `Status` (server → client), body `StatusBody`; one fd: the
/// shared-state memfd. The server closes the connection after it.
pub const KIND_STATUS: u16 = 5;

/// Every socket name starts with this. Abstract namespace: a NUL byte, then the name, no
/// terminator; `/proc/net/unix` shows it with a leading `@`. The whole name is
/// `rdmix/u<uid>/c<card>d<device>s<subdevice>/k<ipc_key>` for a private mixer and
/// `rdmix/shared/c<card>d<device>s<subdevice>/k<ipc_key>` for one shared between users.
/// (`RDMIX_SOCKET_PREFIX` in the C header comes from include/cbindgen.toml, as cbindgen 0.24
/// exports no string constant; tests/c_header.rs checks that the two are equal.)
pub const SOCKET_PREFIX: &str = "rdmix/";

/// The first 8 bytes of every packet. Every field on the wire is little-endian and the
/// structs of the wire have no padding, so on a little-endian machine a packet is these
/// structs' memory image: the header, the kind's body, then the body's variable bytes if any.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHeader {
    /// `MAGIC`.
    pub magic: u32,
    /// `PROTO_VERSION`.
    pub version: u16,
    /// `KIND_*`.
    pub kind: u16,
}

/// Body of a `Hello`: sent once after connect, to join the mixer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloBody {
    pub pid: u32,
    /// Written as 0, ignored.
    pub reserved: u32,
}

/// Body of a `Welcome`, followed by `path_len` (at most `MAX_HW_PATH`) bytes of the device path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WelcomeBody {
    /// The client's slot in the shared state.
    pub slot: u32,
    /// Written as 0, ignored.
    pub reserved: u32,
    pub path_len: u64,
}

/// Body of a `Refuse`, followed by `len` (at most `MAX_REFUSE_MESSAGE`) bytes of UTF-8 message.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefuseBody {
    /// Positive errno value (not named `errno`, a macro in C).
    pub error: i32,
    pub len: u32,
}

/// Body of a `Query`: introspection instead of `Hello` (no slot is claimed; the same admission
/// check applies).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryBody {
    pub pid: u32,
    /// Written as 0, ignored.
    pub reserved: u32,
}

/// Body of a `Status`: the answer to a `Query`, with the shared-state memfd attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusBody {
    pub server_pid: u32,
    /// Live clients (slots in use) when the server answered.
    pub clients: u32,
}

// The wire structs have no padding (their memory image on a little-endian machine is the wire
// format), and the constants are what their definitions say.
const _: () = {
    assert!(size_of::<MsgHeader>() == 8);
    assert!(size_of::<HelloBody>() == 8);
    assert!(size_of::<WelcomeBody>() == 16);
    assert!(size_of::<RefuseBody>() == 8);
    assert!(size_of::<QueryBody>() == 8);
    assert!(size_of::<StatusBody>() == 8);
    assert!(MAGIC == u32::from_le_bytes(*b"RDMX"));
    assert!(MAX_REFUSE_MESSAGE == MAX_PACKET - size_of::<MsgHeader>() - size_of::<RefuseBody>());
};

impl MsgHeader {
    fn put(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&self.magic.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.kind.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<MsgHeader> {
        Ok(MsgHeader {
            magic: r.u32()?,
            version: r.u16()?,
            kind: r.u16()?,
        })
    }
}

/// Wire form of the fixed-size bodies: their fields in order, little-endian.
macro_rules! wire_body {
    ($t:ident { $($f:ident: $get:ident),* }) => {
        impl $t {
            fn put(&self, b: &mut Vec<u8>) {
                $(b.extend_from_slice(&self.$f.to_le_bytes());)*
            }
            fn get(r: &mut Reader<'_>) -> Result<$t> {
                Ok($t { $($f: r.$get()?),* })
            }
        }
    };
}
wire_body!(HelloBody {
    pid: u32,
    reserved: u32
});
wire_body!(WelcomeBody {
    slot: u32,
    reserved: u32,
    path_len: u64
});
wire_body!(RefuseBody {
    error: i32,
    len: u32
});
wire_body!(QueryBody {
    pid: u32,
    reserved: u32
});
wire_body!(StatusBody {
    server_pid: u32,
    clients: u32
});

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello { pid: u32 },
    Welcome { slot: u32, hw_path: String },
    Refuse { errno: i32, message: String },
    Query { pid: u32 },
    Status { server_pid: u32, clients: u32 },
}

impl Message {
    /// The message's name, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Refuse { .. } => "Refuse",
            Message::Query { .. } => "Query",
            Message::Status { .. } => "Status",
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Message::Hello { .. } => KIND_HELLO,
            Message::Welcome { .. } => KIND_WELCOME,
            Message::Refuse { .. } => KIND_REFUSE,
            Message::Query { .. } => KIND_QUERY,
            Message::Status { .. } => KIND_STATUS,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        MsgHeader {
            magic: MAGIC,
            version: PROTO_VERSION,
            kind: self.kind(),
        }
        .put(&mut b);
        match self {
            Message::Hello { pid } => HelloBody {
                pid: *pid,
                reserved: 0,
            }
            .put(&mut b),
            Message::Welcome { slot, hw_path } => {
                let p = truncate(hw_path, MAX_HW_PATH);
                WelcomeBody {
                    slot: *slot,
                    reserved: 0,
                    path_len: p.len() as u64,
                }
                .put(&mut b);
                b.extend_from_slice(p.as_bytes());
            }
            Message::Refuse { errno, message } => {
                let m = truncate(message, MAX_REFUSE_MESSAGE);
                RefuseBody {
                    error: *errno,
                    len: m.len() as u32,
                }
                .put(&mut b);
                b.extend_from_slice(m.as_bytes());
            }
            Message::Query { pid } => QueryBody {
                pid: *pid,
                reserved: 0,
            }
            .put(&mut b),
            Message::Status {
                server_pid,
                clients,
            } => StatusBody {
                server_pid: *server_pid,
                clients: *clients,
            }
            .put(&mut b),
        }
        b
    }

    /// Decode one packet. Every length is checked; anything unexpected is an error naming it.
    pub fn decode(b: &[u8]) -> Result<Message> {
        let mut r = Reader { b, pos: 0 };
        let h = MsgHeader::get(&mut r)?;
        if h.magic != MAGIC {
            return Err(Error::protocol(format!("bad magic {:#010x}", h.magic)));
        }
        if h.version != PROTO_VERSION {
            return Err(Error::protocol(format!(
                "protocol version {}, this build speaks {PROTO_VERSION}",
                h.version
            )));
        }
        let msg = match h.kind {
            KIND_HELLO => Message::Hello {
                pid: HelloBody::get(&mut r)?.pid,
            },
            KIND_WELCOME => {
                let w = WelcomeBody::get(&mut r)?;
                if w.path_len > MAX_HW_PATH as u64 {
                    return Err(Error::protocol(format!(
                        "device path length {} > {MAX_HW_PATH}",
                        w.path_len
                    )));
                }
                let hw_path = r.string(w.path_len as usize)?;
                Message::Welcome {
                    slot: w.slot,
                    hw_path,
                }
            }
            KIND_REFUSE => {
                let f = RefuseBody::get(&mut r)?;
                // What encode writes at most: the whole packet within MAX_PACKET.
                if f.len as usize > MAX_REFUSE_MESSAGE {
                    return Err(Error::protocol(format!(
                        "message length {} too large",
                        f.len
                    )));
                }
                let message = r.string(f.len as usize)?;
                Message::Refuse {
                    errno: f.error,
                    message,
                }
            }
            KIND_QUERY => Message::Query {
                pid: QueryBody::get(&mut r)?.pid,
            },
            KIND_STATUS => {
                let s = StatusBody::get(&mut r)?;
                Message::Status {
                    server_pid: s.server_pid,
                    clients: s.clients,
                }
            }
            k => return Err(Error::protocol(format!("unknown message kind {k}"))),
        };
        if r.pos != b.len() {
            return Err(Error::protocol(format!(
                "{} trailing bytes after the message",
                b.len() - r.pos
            )));
        }
        Ok(msg)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                Error::protocol(format!("truncated message ({} bytes)", self.b.len()))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn string(&mut self, n: usize) -> Result<String> {
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| Error::protocol("string is not UTF-8"))
    }
}

/// The abstract socket name of one mixer: one per (owner, card, device, subdevice, ipc_key).
/// `owner` is the user's uid for a private mixer, `None` for one shared between users.
pub fn socket_name(
    owner: Option<u32>,
    card: u32,
    device: u32,
    subdevice: u32,
    ipc_key: i64,
) -> String {
    mixer_socket_name(owner, &format!("c{card}d{device}s{subdevice}"), ipc_key)
}

/// `rdmix/{u<uid>|shared}/{device}/k{ipc_key}`: the name scheme every mixer's socket follows
/// (`device` names what it plays on: `c0d0s0`, or `virtual-<hash>` for the virtual device).
pub fn mixer_socket_name(owner: Option<u32>, device: &str, ipc_key: i64) -> String {
    let who = match owner {
        Some(uid) => format!("u{uid}"),
        None => "shared".to_string(),
    };
    format!("{SOCKET_PREFIX}{who}/{device}/k{ipc_key}")
}

pub fn socket_addr(name: &str) -> Result<UnixAddr> {
    UnixAddr::new_abstract(name.as_bytes()).map_err(|e| Error::sys("socket name", e))
}

/// Who is at the other end of a connected unix socket, as the kernel recorded it when the
/// connection was made: what the peer is, not what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl PeerCred {
    /// Whether the peer is a member of group `g` (primary or supplementary).
    pub fn in_group(&self, g: u32) -> bool {
        self.gid == g || self.groups.contains(&g)
    }
}

/// `SO_PEERGROUPS` (Linux 4.13; not exported by the libc crate). 59 on every architecture
/// rdmix builds for except SPARC.
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(target_arch = "sparc64")]
const SO_PEERGROUPS: libc::c_int = 0x003d;

/// The peer's credentials: SO_PEERCRED, and its supplementary groups from SO_PEERGROUPS
/// (recorded at connect, like SO_PEERCRED); on a kernel without SO_PEERGROUPS, from
/// `/proc/PID/status` (read now: weaker, as the pid may have changed hands).
pub fn peer_cred(sock: BorrowedFd<'_>) -> Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::sys("SO_PEERCRED", e))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    let groups = loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `groups`, which has that many, and
        // sets `len` to the bytes written (or, with ERANGE, to the bytes needed).
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            break groups;
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::ERANGE if n > groups.len() && n <= 65536 => groups.resize(n, 0),
            nix::errno::Errno::ENOPROTOOPT => break proc_groups(c.pid()),
            e => return Err(Error::sys("SO_PEERGROUPS", e)),
        }
    };
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
        groups,
    })
}

/// Supplementary groups of a process, from `/proc/PID/status` (empty if unreadable).
fn proc_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Send one message with optional fds. Never raises SIGPIPE.
pub fn send(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<()> {
    let bytes = msg.encode();
    let iov = [IoSlice::new(&bytes)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| Error::sys("send to rdmix-server socket", e))?;
    if n != bytes.len() {
        return Err(Error::protocol("short send"));
    }
    Ok(())
}

/// The most fds Linux passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Receive one message and the fds that came with it (CLOEXEC). Truncated packets and
/// truncated control data are errors; fds that arrive are always owned (closed on error).
///
/// The control buffer has room for `SCM_MAX_FD` fds, so a peer cannot make the kernel truncate
/// SCM_RIGHTS; should any control data be truncated anyway, the fds the kernel did install are
/// still collected and closed (nix's `cmsgs()` refuses to iterate a truncated buffer, which
/// would leak them).
pub fn recv(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>)> {
    let mut buf = [0u8; MAX_PACKET + 1];
    // u64 elements: cmsghdr alignment.
    let mut cbuf = [0u64; (SCM_MAX_FD * 4 + 64) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: `mh` points at `iov` (into `buf`) and `cbuf`, both live and as long as stated.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = nix::errno::Errno::last();
        if e != nix::errno::Errno::EINTR {
            return Err(Error::sys("receive from rdmix socket", e));
        }
    };
    let mut fds = Vec::new();
    // SAFETY: `mh` is the header recvmsg just filled; the CMSG macros stay within
    // msg_control/msg_controllen, which the kernel set to what it wrote.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&mh) };
    while !c.is_null() {
        // SAFETY: `c` is a non-null header inside the control buffer (from CMSG_*HDR).
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(hdr as _) as usize / size_of::<RawFd>();
            // SAFETY: the data of this header holds `count` fds (cmsg_len as the kernel wrote
            // it, within the buffer); read unaligned, as CMSG_DATA need not be int-aligned.
            let data = unsafe { libc::CMSG_DATA(c) } as *const RawFd;
            for i in 0..count {
                // SAFETY: as above, i < count.
                let fd = unsafe { data.add(i).read_unaligned() };
                if fd >= 0 {
                    // SAFETY: the kernel just installed this fd in our table for us; nobody
                    // else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: `c` is a valid header of `mh`'s control buffer.
        c = unsafe { libc::CMSG_NXTHDR(&mh, c) };
    }
    if n == 0 {
        return Err(Error::server(
            libc::ECONNRESET,
            "the peer closed the connection",
        ));
    }
    if mh.msg_flags & libc::MSG_TRUNC != 0 || n > MAX_PACKET {
        return Err(Error::protocol(format!(
            "oversized message (> {MAX_PACKET} bytes)"
        )));
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Error::protocol("too many file descriptors attached"));
    }
    Ok((Message::decode(&buf[..n])?, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for m in [
            Message::Hello { pid: 1234 },
            Message::Welcome {
                slot: 3,
                hw_path: "/dev/snd/pcmC0D0p".into(),
            },
            Message::Refuse {
                errno: 13,
                message: "nope".into(),
            },
            Message::Query { pid: 77 },
            Message::Status {
                server_pid: 5,
                clients: 2,
            },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn rejects_truncation_at_every_length() {
        let full = Message::Welcome {
            slot: 3,
            hw_path: "/dev/snd/pcmC0D0p".into(),
        }
        .encode();
        for n in 0..full.len() {
            assert!(Message::decode(&full[..n]).is_err(), "accepted {n} bytes");
        }
        let mut long = full.clone();
        long.push(0);
        assert!(Message::decode(&long)
            .unwrap_err()
            .message()
            .contains("trailing"));
    }

    #[test]
    fn rejects_bad_header_fields() {
        let mut b = Message::Hello { pid: 1 }.encode();
        b[0] ^= 1;
        assert!(Message::decode(&b).unwrap_err().message().contains("magic"));
        let mut b = Message::Hello { pid: 1 }.encode();
        b[4] = 9;
        assert!(Message::decode(&b)
            .unwrap_err()
            .message()
            .contains("version"));
        let mut b = Message::Hello { pid: 1 }.encode();
        b[6] = 77;
        assert!(Message::decode(&b).unwrap_err().message().contains("kind"));
    }

    #[test]
    fn passes_fds_over_a_socketpair() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let memfd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let m = Message::Welcome {
            slot: 1,
            hw_path: "x".into(),
        };
        send(a.as_fd(), &m, &[memfd.as_fd(), memfd.as_fd()]).unwrap();
        let (got, fds) = recv(b.as_fd()).unwrap();
        assert_eq!(got, m);
        assert_eq!(fds.len(), 2);
        let fl = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fl & libc::FD_CLOEXEC, 0, "received fd must be CLOEXEC");
        drop(a);
        assert_eq!(recv(b.as_fd()).unwrap_err().errno(), libc::ECONNRESET);
    }

    /// Every fd a peer attaches is closed, whatever the message: a valid one, junk, an
    /// oversized packet, and the most fds the kernel passes at once. The attached fd is a
    /// pipe's write end: once ours is closed too, the read end sees EOF only if no copy is left.
    #[test]
    fn closes_every_attached_fd() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // CLOEXEC: another test of this process that spawns a program must not keep a copy.
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .unwrap();
        let raw_send = |bytes: &[u8], n: usize| {
            let raw = vec![wr.as_raw_fd(); n];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(
                a.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &cmsg,
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        };
        let hello = Message::Hello { pid: 1 }.encode();
        raw_send(&hello, 8);
        assert_eq!(recv(b.as_fd()).unwrap().1.len(), 8);
        raw_send(b"junk", 8);
        assert!(recv(b.as_fd()).is_err());
        raw_send(&vec![0u8; MAX_PACKET + 100], 8);
        assert!(recv(b.as_fd()).unwrap_err().message().contains("oversized"));
        raw_send(&hello, SCM_MAX_FD);
        assert_eq!(recv(b.as_fd()).unwrap().1.len(), SCM_MAX_FD);
        drop(wr);
        let mut x = [0u8; 1];
        // A concurrent test's fork holds copies of every fd until its exec closes them: allow
        // that moment to pass.
        let mut r = nix::unistd::read(&rd, &mut x);
        for _ in 0..200 {
            if r != Err(nix::errno::Errno::EAGAIN) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            r = nix::unistd::read(&rd, &mut x);
        }
        assert_eq!(
            r,
            Ok(0),
            "a received copy of the pipe's write end is still open"
        );
    }

    #[test]
    fn peer_cred_is_our_own_over_a_socketpair() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let c = peer_cred(a.as_fd()).unwrap();
        assert_eq!(c.pid as u32, std::process::id());
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert!(c.in_group(nix::unistd::getegid().as_raw()));
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = c.groups.clone();
        mine.sort();
        got.sort();
        assert_eq!(got, mine);
    }
}
