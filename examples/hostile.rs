//! Attack a live `rdmix-server` socket and check that it keeps serving.
//!
//! `hostile --socket rdmix/u0/c0d0s0/k0 [--messages N] [--expect-clients N] [--batch N]
//!  [--seed N] [--flood N] [--verbose]`
//!
//! Sends N hostile packets, each kind in turn at random: random bytes; valid messages
//! truncated, extended, bit-flipped; oversized packets (> `protocol::MAX_PACKET`); messages the
//! server never expects (Welcome, Refuse, Status); a Hello followed on the same connection by
//! a second Hello or by junk (the server welcomes, then must close and free the slot); Hello,
//! Query and junk carrying fds the server did not ask for (SCM_RIGHTS, up to `SCM_MAX_FD`).
//! Every batch also opens a flood of connections at once, queries the server while they are
//! open, and leaves a few connections silent for the whole batch (the server must close them
//! after its Hello timeout).
//!
//! The server closes a connection at its first unexpected message, so each hostile packet goes
//! on a connection of its own (connect, send, close: the server still reads what was sent);
//! only the Hello-then-more attacks put two packets on one connection. Between batches it
//! checks that `client::query` still answers, from the same server pid, with the expected
//! number of live clients (default: what the first query says). Ends with one summary line;
//! exit status 0 if every query was answered correctly, 1 if the server stopped answering,
//! 2 if it answered with the wrong pid or client count.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use asound_module_pcm_rdmix::client;
use asound_module_pcm_rdmix::protocol::{self, Message, MAX_PACKET};
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// Connections made and queries answered so far, for the watchdog.
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// A run that makes no progress for this long has a server that stopped accepting.
const STALL: Duration = Duration::from_secs(20);

/// End the process with status 1 if the attack stops making progress (a blocked connect, a
/// reply that never comes).
fn watchdog() {
    std::thread::spawn(|| {
        let mut last = (PROGRESS.load(Ordering::Relaxed), Instant::now());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let p = PROGRESS.load(Ordering::Relaxed);
            if p != last.0 {
                last = (p, Instant::now());
            } else if last.1.elapsed() > STALL {
                println!(
                    "hostile: no progress for {} s after {p} connections and queries: the server \
                     stopped accepting or answering",
                    STALL.as_secs()
                );
                std::process::exit(1);
            }
        }
    });
}

/// The most fds Linux passes in one message.
const SCM_MAX_FD: usize = 253;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    Random,
    Truncated,
    Extended,
    Flipped,
    Oversized,
    Unexpected,
    HelloThenJunk,
    SecondHello,
    FdsOnHello,
    FdsOnJunk,
    FdsOnQuery,
}

const ATTACKS: [Attack; 11] = [
    Attack::Random,
    Attack::Truncated,
    Attack::Extended,
    Attack::Flipped,
    Attack::Oversized,
    Attack::Unexpected,
    Attack::HelloThenJunk,
    Attack::SecondHello,
    Attack::FdsOnHello,
    Attack::FdsOnJunk,
    Attack::FdsOnQuery,
];

struct Opts {
    socket: String,
    messages: u64,
    expect: Option<u32>,
    batch: u64,
    seed: u64,
    flood: usize,
    silent: usize,
    verbose: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        socket: String::new(),
        messages: 100_000,
        expect: None,
        batch: 5_000,
        seed: 1,
        flood: 300,
        silent: 16,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--verbose" {
            o.verbose = true;
            continue;
        }
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        let n = || v.parse::<u64>().map_err(|_| format!("{a}: bad number {v}"));
        match a.as_str() {
            "--socket" => o.socket = v.trim_start_matches('@').to_string(),
            "--messages" => o.messages = n()?,
            "--expect-clients" => o.expect = Some(n()? as u32),
            "--batch" => o.batch = n()?.max(1),
            "--seed" => o.seed = n()?.max(1),
            "--flood" => o.flood = n()? as usize,
            "--silent" => o.silent = n()? as usize,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.socket.is_empty() {
        return Err(
            "usage: hostile --socket NAME [--messages N] [--expect-clients N] [--batch N] \
                    [--seed N] [--flood N] [--silent N] [--verbose]"
                .into(),
        );
    }
    Ok(o)
}

struct Attacker {
    addr: UnixAddr,
    rng: Rng,
    /// fds to attach: /dev/null opened many times over is enough (any fd will do).
    spare: Vec<OwnedFd>,
    messages: u64,
    connections: u64,
    connect_failures: u64,
    send_failures: u64,
    welcomes_checked: u64,
    per_kind: [u64; ATTACKS.len()],
}

impl Attacker {
    fn connect(&mut self) -> Option<OwnedFd> {
        let s = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ok()?;
        // No socket timeouts (two syscalls more per connection): the watchdog ends a run that
        // a server which stops accepting would block.
        match connect(s.as_raw_fd(), &self.addr) {
            Ok(()) => {
                self.connections += 1;
                PROGRESS.fetch_add(1, Ordering::Relaxed);
                Some(s)
            }
            Err(_) => {
                self.connect_failures += 1;
                None
            }
        }
    }

    fn send(&mut self, s: &OwnedFd, bytes: &[u8], nfds: usize) {
        let raw: Vec<i32> = self.spare[..nfds.min(self.spare.len())]
            .iter()
            .map(|f| f.as_raw_fd())
            .collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        match sendmsg::<()>(
            s.as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => self.messages += 1,
            // The server may close first (it answered an earlier packet): not a failure.
            Err(_) => self.send_failures += 1,
        }
    }

    fn valid(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let m = match r.below(5) {
            0 => Message::Hello {
                pid: r.next() as u32,
            },
            1 => Message::Query {
                pid: r.next() as u32,
            },
            2 => Message::Welcome {
                slot: r.below(70) as u32,
                hw_path: "/dev/snd/pcmC0D0p".into(),
            },
            3 => Message::Refuse {
                errno: r.below(200) as i32,
                message: "x".repeat(r.below(MAX_PACKET)),
            },
            _ => Message::Status {
                server_pid: r.next() as u32,
                clients: r.next() as u32,
            },
        };
        m.encode()
    }

    fn hello(&mut self) -> Vec<u8> {
        Message::Hello {
            pid: std::process::id(),
        }
        .encode()
    }

    /// One attack on one connection.
    fn attack(&mut self, a: Attack) {
        let Some(s) = self.connect() else { return };
        match a {
            Attack::Random => {
                let n = 1 + self.rng.below(MAX_PACKET);
                let b = self.rng.bytes(n);
                self.send(&s, &b, 0);
            }
            Attack::Truncated => {
                let mut b = self.valid();
                let n = self.rng.below(b.len());
                b.truncate(n.max(1));
                self.send(&s, &b, 0);
            }
            Attack::Extended => {
                let mut b = self.valid();
                let n = 1 + self.rng.below(64);
                b.extend(self.rng.bytes(n));
                b.truncate(MAX_PACKET);
                self.send(&s, &b, 0);
            }
            Attack::Flipped => {
                let mut b = self.valid();
                for _ in 0..1 + self.rng.below(4) {
                    let i = self.rng.below(b.len());
                    b[i] ^= 1 << self.rng.below(8);
                }
                self.send(&s, &b, 0);
            }
            Attack::Oversized => {
                let n = MAX_PACKET + 1 + self.rng.below(64 * 1024);
                let mut b = self.hello();
                b.resize(n, 0xA5);
                self.send(&s, &b, 0);
            }
            Attack::Unexpected => {
                // Only the kinds the server sends, never receives.
                let b = loop {
                    let b = self.valid();
                    if !matches!(
                        Message::decode(&b),
                        Ok(Message::Hello { .. } | Message::Query { .. })
                    ) {
                        break b;
                    }
                };
                self.send(&s, &b, 0);
            }
            Attack::HelloThenJunk | Attack::SecondHello => {
                // Both packets at once: the server welcomes the first (a slot, two fds sent to
                // us), then must close the connection at the second and free that slot.
                let h = self.hello();
                self.send(&s, &h, 0);
                let second = match a {
                    Attack::SecondHello => self.hello(),
                    _ => {
                        let n = 1 + self.rng.below(64);
                        self.rng.bytes(n)
                    }
                };
                // Now and then, read the Welcome first: the server still welcomes properly.
                if self.rng.below(16) == 0 {
                    if let Ok((Message::Welcome { .. }, fds)) = protocol::recv(s.as_fd()) {
                        if fds.len() == 2 {
                            self.welcomes_checked += 1;
                        }
                    }
                }
                self.send(&s, &second, 0);
            }
            Attack::FdsOnHello | Attack::FdsOnJunk | Attack::FdsOnQuery => {
                let b = match a {
                    Attack::FdsOnHello => self.hello(),
                    Attack::FdsOnQuery => Message::Query {
                        pid: std::process::id(),
                    }
                    .encode(),
                    _ => {
                        let n = 1 + self.rng.below(256);
                        self.rng.bytes(n)
                    }
                };
                let nfds = if self.rng.below(32) == 0 {
                    SCM_MAX_FD
                } else {
                    1 + self.rng.below(8)
                };
                self.send(&s, &b, nfds);
            }
        }
    }

    /// Hundreds of connections at once; the server must still answer a query made while they
    /// are all open. Returns how many the server had closed by then (it keeps at most a
    /// bounded number of silent connections).
    fn flood(&mut self, n: usize, q: &mut Checker) -> usize {
        let conns: Vec<OwnedFd> = (0..n).filter_map(|_| self.connect()).collect();
        q.check("during a flood");
        conns.iter().filter(|c| closed_by_peer(c)).count()
    }
}

/// Whether the server has closed this connection (EOF pending), without blocking.
fn closed_by_peer(s: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    matches!(
        nix::sys::socket::recv(s.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT),
        Ok(0) | Err(nix::errno::Errno::ECONNRESET)
    )
}

struct Checker {
    socket: String,
    expect: Option<u32>,
    pid: Option<u32>,
    ok: u64,
    total: u64,
    no_answer: u64,
    wrong: u64,
}

impl Checker {
    /// Query the server (retrying for up to 3 s while our own closed connections are still
    /// being reaped, which lowers the count); record the outcome.
    fn check(&mut self, when: &str) {
        self.total += 1;
        let deadline = Instant::now() + Duration::from_secs(3);
        let last = loop {
            match client::query(&self.socket) {
                Ok(r) => {
                    let expect = *self.expect.get_or_insert(r.clients);
                    let pid = *self.pid.get_or_insert(r.server_pid);
                    PROGRESS.fetch_add(1, Ordering::Relaxed);
                    if r.clients == expect && r.server_pid == pid {
                        self.ok += 1;
                        return;
                    }
                    if r.server_pid != pid || Instant::now() > deadline {
                        self.wrong += 1;
                        break format!(
                            "server pid {} with {} clients (expected pid {pid}, {expect} \
                             clients)",
                            r.server_pid, r.clients
                        );
                    }
                }
                Err(e) => {
                    if Instant::now() > deadline {
                        self.no_answer += 1;
                        break format!("no answer: {e}");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!("hostile: query {when}: {last}");
    }
}

fn fd_count(pid: Option<u32>) -> Option<usize> {
    Some(
        std::fs::read_dir(format!("/proc/{}/fd", pid?))
            .ok()?
            .count(),
    )
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hostile: {e}");
            return ExitCode::from(64);
        }
    };
    // Floods and fd attachments need a few hundred fds of our own: raise the soft limit.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let addr = match protocol::socket_addr(&o.socket) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile: {e}");
            return ExitCode::from(64);
        }
    };
    let spare = (0..SCM_MAX_FD)
        .filter_map(|_| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .collect();
    let mut a = Attacker {
        addr,
        rng: Rng(o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        spare,
        messages: 0,
        connections: 0,
        connect_failures: 0,
        send_failures: 0,
        welcomes_checked: 0,
        per_kind: [0; ATTACKS.len()],
    };
    let mut q = Checker {
        socket: o.socket.clone(),
        expect: o.expect,
        pid: None,
        ok: 0,
        total: 0,
        no_answer: 0,
        wrong: 0,
    };
    watchdog();
    q.check("before the attack");
    let fds_before = fd_count(q.pid);
    let t0 = Instant::now();
    let (mut flood_closed, mut flood_total, mut silent_closed, mut silent_total) = (0, 0, 0, 0);
    while a.messages < o.messages && q.no_answer == 0 {
        let batch_start = Instant::now();
        let silent: Vec<OwnedFd> = (0..o.silent).filter_map(|_| a.connect()).collect();
        let stop = (a.messages + o.batch).min(o.messages);
        while a.messages < stop {
            let k = a.rng.below(ATTACKS.len());
            // The welcomed attacks cost the server a slot and a round trip: fewer of them.
            if matches!(ATTACKS[k], Attack::HelloThenJunk | Attack::SecondHello)
                && a.rng.below(4) != 0
            {
                continue;
            }
            let before = a.messages;
            a.attack(ATTACKS[k]);
            a.per_kind[k] += a.messages - before;
            if a.connect_failures > 100 {
                break;
            }
        }
        if o.flood > 0 {
            flood_closed += a.flood(o.flood, &mut q);
            flood_total += o.flood;
        }
        // Silent connections older than the server's Hello timeout (2 s) must be closed.
        if batch_start.elapsed() > Duration::from_secs(3) {
            silent_closed += silent.iter().filter(|c| closed_by_peer(c)).count();
            silent_total += silent.len();
        }
        drop(silent);
        q.check("after a batch");
        if o.verbose {
            eprintln!(
                "hostile: {} messages, {} connections, {:.1} s",
                a.messages,
                a.connections,
                t0.elapsed().as_secs_f64()
            );
        }
        if a.connect_failures > 100 {
            eprintln!("hostile: {} connects failed", a.connect_failures);
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // Let the server read the EOFs of our last connections, then compare its fd table.
    std::thread::sleep(Duration::from_millis(500));
    q.check("at the end");
    let fds_after = fd_count(q.pid);
    if o.verbose {
        for (k, n) in ATTACKS.iter().zip(a.per_kind) {
            eprintln!("hostile:   {k:?}: {n}");
        }
        eprintln!(
            "hostile: {} sends refused (server had closed first), {} connects failed, {} Welcomes \
             read and checked; flood connections closed by the server: {flood_closed}/{flood_total}; \
             silent connections closed by the server: {silent_closed}/{silent_total}; server fds \
             before {fds_before:?}, after {fds_after:?}",
            a.send_failures, a.connect_failures, a.welcomes_checked
        );
    }
    println!(
        "hostile: {} messages, {} connections, {}/{} queries ok ({} clients, server pid {}), \
         {:.1} s, {:.0} messages/s, silent closed {silent_closed}/{silent_total}, server fds \
         {} -> {}",
        a.messages,
        a.connections,
        q.ok,
        q.total,
        q.expect.map_or("?".into(), |c| c.to_string()),
        q.pid.map_or("?".into(), |p| p.to_string()),
        secs,
        a.messages as f64 / secs.max(1e-9),
        fds_before.map_or("?".into(), |n| n.to_string()),
        fds_after.map_or("?".into(), |n| n.to_string()),
    );
    if q.no_answer > 0 || a.connect_failures > 100 {
        ExitCode::from(1)
    } else if q.wrong > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
