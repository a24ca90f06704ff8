//! The one error type of rdmix: a kind (mapped to a negative errno for alsa-lib) and a message.

use std::fmt;

/// What went wrong, coarse enough to pick an errno from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration key is unknown, has the wrong type or an out-of-range value.
    Config,
    /// The device or the kernel refused an operation.
    Device,
    /// The server could not be started or reached, or spoke out of protocol.
    Server,
    /// A message on the socket was malformed.
    Protocol,
    /// The shared-state layout does not match this build.
    Layout,
    /// Permission denied.
    Access,
    /// Some other system call failed.
    Io,
    /// The stream under- or overran.
    Xrun,
    /// The device went away.
    Disconnected,
}

/// An rdmix error: a kind, the errno to report, and a message naming what is wrong.
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    errno: i32,
    msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, errno: i32, msg: impl Into<String>) -> Self {
        Error {
            kind,
            errno,
            msg: msg.into(),
        }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, libc::EINVAL, msg)
    }
    pub fn protocol(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, libc::EPROTO, msg)
    }
    pub fn layout(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Layout, libc::EINVAL, msg)
    }
    pub fn server(errno: i32, msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Server, errno, msg)
    }
    /// A failed system call: `what` names the call and its object, `err` is its errno.
    pub fn sys(what: impl fmt::Display, err: nix::errno::Errno) -> Self {
        Self::new(ErrorKind::Io, err as i32, format!("{what}: {}", err.desc()))
    }
    /// A failed ioctl or other operation on the hw PCM.
    pub fn device(what: impl fmt::Display, err: nix::errno::Errno) -> Self {
        Self::new(
            ErrorKind::Device,
            err as i32,
            format!("{what}: {}", err.desc()),
        )
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The positive errno; alsa-lib callbacks return its negation.
    pub fn errno(&self) -> i32 {
        self.errno
    }
    pub fn message(&self) -> &str {
        &self.msg
    }
    /// Prefix the message with context, keeping kind and errno.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Self {
        Self::new(ErrorKind::Io, e as i32, e.desc())
    }
}
