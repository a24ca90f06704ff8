//! Talk to an rdmix server's socket directly, as any process could: the access test runs it as
//! another user against a mixer's abstract socket to show that admission is checked at the
//! socket (SO_PEERCRED), not by a file mode — an abstract socket has none, anyone may connect.
//!
//! `socket_probe hello|query SOCKET_NAME` (the name without the leading `@`, e.g.
//! `rdmix/u1000/c0d0s0/k0`) connects, sends a `Hello` (asks for the mixer's fds and a slot) or a
//! `Query` (asks for its status), prints one line and exits:
//!
//! | line | exit status |
//! | --- | --- |
//! | `welcomed slot=N fds=M` (the fds are closed at once, which frees the slot) | 0 |
//! | `status server_pid=P clients=C fds=M` | 0 |
//! | `refused errno=E: MESSAGE` | 1 |
//! | `error: ...` (no server, protocol error, unexpected reply) | 3 |
//! | usage | 2 |
//!
//! `socket_probe squat SOCKET_NAME SECS` plays the impostor: it claims the name first (binds
//! and listens), and for SECS seconds answers whoever connects with a `Welcome` carrying
//! `/dev/null` as the "device" and an empty memfd. It prints `connect uid=U pid=P` per
//! connection, `hello pid=P` per Hello received (a client that checks who serves the name
//! never sends one), and `squatted connects=N hellos=M` at the end; exit 0, or 3 if the name
//! is taken.

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use asound_module_pcm_rdmix::protocol::{self, Message};
use nix::sys::socket::{
    accept4, bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType,
};

fn squat(name: &str, secs: u64) -> Result<ExitCode, String> {
    let l = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = protocol::socket_addr(name).map_err(|e| e.to_string())?;
    bind(l.as_raw_fd(), &addr).map_err(|e| format!("bind @{name}: {e}"))?;
    listen(&l, Backlog::new(8).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    println!("squatting @{name}");
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let memfd = nix::sys::memfd::memfd_create(c"squat", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut connects, mut hellos) = (0, 0);
    let mut conns = Vec::new();
    while Instant::now() < end {
        match accept4(
            l.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(fd) => {
                // SAFETY: accept4 returned a new fd that nobody else owns.
                let fd =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                connects += 1;
                match protocol::peer_cred(fd.as_fd()) {
                    Ok(c) => println!("connect uid={} pid={}", c.uid, c.pid),
                    Err(e) => println!("connect (credentials: {e})"),
                }
                conns.push(fd);
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        conns.retain(|fd| match protocol::recv(fd.as_fd()) {
            Ok((Message::Hello { pid }, _)) => {
                hellos += 1;
                println!("hello pid={pid}");
                let _ = protocol::send(
                    fd.as_fd(),
                    &Message::Welcome {
                        slot: 0,
                        hw_path: "/dev/null".into(),
                    },
                    &[null.as_fd(), memfd.as_fd()],
                );
                true
            }
            Err(e) if e.errno() == libc::EAGAIN => true,
            _ => false,
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("squatted connects={connects} hellos={hellos}");
    Ok(ExitCode::SUCCESS)
}

fn run(kind: &str, name: &str) -> Result<ExitCode, String> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = protocol::socket_addr(name).map_err(|e| e.to_string())?;
    connect(sock.as_raw_fd(), &addr).map_err(|e| format!("connect to @{name}: {e}"))?;
    let tv = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let pid = std::process::id();
    let msg = match kind {
        "hello" => Message::Hello { pid },
        _ => Message::Query { pid },
    };
    protocol::send(sock.as_fd(), &msg, &[]).map_err(|e| e.to_string())?;
    let (reply, fds) = protocol::recv(sock.as_fd()).map_err(|e| e.to_string())?;
    match reply {
        Message::Welcome { slot, .. } => {
            println!("welcomed slot={slot} fds={}", fds.len());
            Ok(ExitCode::SUCCESS)
        }
        Message::Status {
            server_pid,
            clients,
        } => {
            println!(
                "status server_pid={server_pid} clients={clients} fds={}",
                fds.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Message::Refuse { errno, message } => {
            println!("refused errno={errno}: {message}");
            Ok(ExitCode::from(1))
        }
        other => Err(format!("unexpected reply {}", other.kind_name())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [kind, name, secs] = args.as_slice() {
        if kind == "squat" {
            let Ok(secs) = secs.parse() else {
                eprintln!("squat: '{secs}' is not a number of seconds");
                return ExitCode::from(2);
            };
            return match squat(name.trim_start_matches('@'), secs) {
                Ok(c) => c,
                Err(e) => {
                    println!("error: {e}");
                    ExitCode::from(3)
                }
            };
        }
    }
    let [kind, name] = args.as_slice() else {
        eprintln!("usage: socket_probe hello|query SOCKET_NAME | squat SOCKET_NAME SECS");
        return ExitCode::from(2);
    };
    if kind != "hello" && kind != "query" {
        eprintln!("usage: socket_probe hello|query SOCKET_NAME | squat SOCKET_NAME SECS");
        return ExitCode::from(2);
    }
    match run(kind, name.trim_start_matches('@')) {
        Ok(c) => c,
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(3)
        }
    }
}
