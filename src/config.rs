//! Parsing of the plugin's configuration node (`pcm.NAME { type rdmix ... }`).
//!
//! Accepted keys:
//! - `slave`: a PCM name string (`"hw:0,0"`, `"hw:Loopback,0,0"`, or any PCM whose definition is
//!   `type hw`), the name of a `pcm_slave` definition, or a compound
//!   `{ pcm format rate channels period_size period_time buffer_size buffer_time periods }`.
//! - `virtual`: instead of a card, the server's virtual device (`virtual_dev`), a compound
//!   `{ sink null }`, `{ sink wav file "/path/mix.wav" }` or `{ sink pcm pcm "NAME" }`; the
//!   `slave` compound then gives only the parameters (no `pcm`), and may be left out.
//! - `ipc_key`: an integer distinguishing independent mixers on the same device (default 0).
//! - `server`: path of the `rdmix-server` binary (also `RDMIX_SERVER` in the environment; by
//!   default the binary next to the plugin `.so`, then `../libexec/rdmix/rdmix-server`,
//!   `../../libexec/...` and `../../../libexec/...` relative to it: `client::server_candidates`).
//! - `comment`, `type`, `hint`: ignored, as alsa-lib's own plugins do.
//!
//! Any other key, or a key with the wrong type, is an error naming the key and the PCM.

use std::ffi::{CStr, CString};
use std::ptr;

use alsa_sys::snd_config_t;

use crate::error::{Error, Result};
use crate::hw::HwRequest;

/// Parameters the first client asks the server to configure the hardware with: the server's
/// [`HwRequest`]; absent values take its defaults (dmix's: the device's preferred format,
/// 48000 Hz, 2 channels, period 1024 frames, buffer 4 periods).
pub type SlaveParams = HwRequest;

/// Where the hardware is: `/dev/snd/pcmC{card}D{device}p`, optionally a fixed subdevice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwAddress {
    pub card: u32,
    pub device: u32,
    pub subdevice: Option<u32>,
}

/// Where a client's first frame lands relative to slave periods (dmix's `hw_ptr_alignment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Alignment {
    /// One slave period ahead of the hardware position, unaligned (rdmix's default; dmix's
    /// `auto` picks per period size, rdmix never needs to drop frames to align).
    #[default]
    No,
    /// Rounded up to a slave period boundary, at least one period ahead.
    Roundup,
    /// dmix rounds down and drops up to a period of the client's head; rdmix aligns to a period
    /// boundary at least one period ahead instead, so no frame is dropped.
    Rounddown,
}

/// Timestamps alsa-lib reports for the PCM (dmix's `tstamp_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TstampType {
    /// CLOCK_MONOTONIC (also for `default` and `monotonic_raw`, which ioplug cannot express).
    #[default]
    Monotonic,
    Gettimeofday,
}

/// Who may join a mixer besides its owner (dmix's `ipc_perm` / `ipc_gid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Permission bits (octal, like a file mode): the group bits admit members of `gid`,
    /// the other bits admit everyone. Default 0600: the owner alone.
    pub perm: u32,
    pub gid: Option<u32>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            perm: 0o600,
            gid: None,
        }
    }
}

impl Access {
    /// Whether users other than the owner may join.
    pub fn shared(&self) -> bool {
        self.perm & 0o077 != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// The slave PCM name as written in the config, for messages.
    pub slave_name: String,
    pub hw: HwAddress,
    pub params: SlaveParams,
    pub ipc_key: i64,
    /// Make the mixer per user even when shared by permissions (dmix's `ipc_key_add_uid`).
    pub ipc_key_add_uid: bool,
    pub access: Access,
    pub server: Option<String>,
    /// Client channel -> slave channel; `None` entries are not played. Absent: identity.
    pub bindings: Option<Vec<Option<u16>>>,
    pub alignment: Alignment,
    pub tstamp: TstampType,
    /// HWSYNC before reading the hardware position (dmix's `slowptr`, default on).
    pub slowptr: bool,
    /// The server's virtual device instead of a card (`hw` is then unused).
    pub virtual_sink: Option<crate::virtual_dev::SinkSpec>,
}

/// A borrowed node of alsa-lib's configuration tree.
#[derive(Clone, Copy, Debug)]
struct Node {
    ptr: *mut snd_config_t,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Integer,
    Integer64,
    Real,
    String,
    Pointer,
    Compound,
}

impl Node {
    fn id(&self) -> String {
        let mut id: *const libc::c_char = ptr::null();
        // SAFETY: `ptr` is a live config node for the duration of the open call; alsa-lib writes a
        // pointer to its own NUL-terminated id string (or leaves it NULL).
        let r = unsafe { alsa_sys::snd_config_get_id(self.ptr, &mut id) };
        if r < 0 || id.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, owned by the node which outlives this call.
        unsafe { CStr::from_ptr(id) }.to_string_lossy().into_owned()
    }

    fn kind(&self) -> Kind {
        // SAFETY: `ptr` is a live config node.
        match unsafe { alsa_sys::snd_config_get_type(self.ptr) } {
            alsa_sys::SND_CONFIG_TYPE_INTEGER => Kind::Integer,
            alsa_sys::SND_CONFIG_TYPE_INTEGER64 => Kind::Integer64,
            alsa_sys::SND_CONFIG_TYPE_REAL => Kind::Real,
            alsa_sys::SND_CONFIG_TYPE_STRING => Kind::String,
            alsa_sys::SND_CONFIG_TYPE_COMPOUND => Kind::Compound,
            _ => Kind::Pointer,
        }
    }

    fn string(&self) -> Option<String> {
        let mut s: *const libc::c_char = ptr::null();
        // SAFETY: live node; alsa-lib returns a pointer to the node's own string.
        let r = unsafe { alsa_sys::snd_config_get_string(self.ptr, &mut s) };
        if r < 0 || s.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, owned by the node.
        Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
    }

    fn integer(&self) -> Option<i64> {
        match self.kind() {
            Kind::Integer => {
                let mut v: libc::c_long = 0;
                // SAFETY: live node of integer type; `v` is a valid out-pointer.
                let r = unsafe { alsa_sys::snd_config_get_integer(self.ptr, &mut v) };
                (r >= 0).then_some(v as i64)
            }
            Kind::Integer64 => {
                let mut v: libc::c_longlong = 0;
                // SAFETY: as above.
                let r = unsafe { alsa_sys::snd_config_get_integer64(self.ptr, &mut v) };
                (r >= 0).then_some(v as i64)
            }
            _ => None,
        }
    }

    fn children(&self) -> Vec<Node> {
        let mut out = Vec::new();
        if self.kind() != Kind::Compound {
            return out;
        }
        // SAFETY: iterating a live compound node with alsa-lib's iterator functions, which is
        // what the `snd_config_for_each` C macro expands to.
        unsafe {
            let end = alsa_sys::snd_config_iterator_end(self.ptr);
            let mut it = alsa_sys::snd_config_iterator_first(self.ptr);
            while it != end {
                out.push(Node {
                    ptr: alsa_sys::snd_config_iterator_entry(it),
                });
                it = alsa_sys::snd_config_iterator_next(it);
            }
        }
        out
    }
}

/// A configuration node expanded by `snd_config_search_definition`, deleted on drop.
struct Expanded(Node);

impl Drop for Expanded {
    fn drop(&mut self) {
        // SAFETY: the node was returned by snd_config_search_definition, which hands ownership
        // of an expanded copy to the caller.
        unsafe { alsa_sys::snd_config_delete(self.0.ptr) };
    }
}

fn search_definition(root: *mut snd_config_t, base: &str, name: &str) -> Option<Expanded> {
    let base = CString::new(base).ok()?;
    let key = CString::new(name).ok()?;
    let mut out: *mut snd_config_t = ptr::null_mut();
    // SAFETY: `root` is the live configuration root alsa-lib passed to the open function; the
    // strings are NUL-terminated; on success `out` is a new tree we own (see `Expanded`).
    let r = unsafe {
        alsa_sys::snd_config_search_definition(root, base.as_ptr(), key.as_ptr(), &mut out)
    };
    // Lazily: an Expanded built from a null pointer would be deleted on drop.
    (r >= 0 && !out.is_null()).then(|| Expanded(Node { ptr: out }))
}

/// Builds the errors of one parse (the plugin adds the PCM's name to every message).
struct Ctx;

impl Ctx {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::config(msg.to_string())
    }

    fn uint(&self, n: &Node, key: &str, max: u64) -> Result<u64> {
        match n.integer() {
            Some(v) if v >= 0 && (v as u64) <= max => Ok(v as u64),
            Some(v) => Err(self.err(format!("{key} = {v} is out of range (0..={max})"))),
            None => Err(self.err(format!("{key} must be an integer"))),
        }
    }

    fn boolean(&self, n: &Node, key: &str) -> Result<bool> {
        // SAFETY: live node; snd_config_get_bool accepts yes/no/true/false/on/off/0/1.
        match unsafe { alsa_sys::snd_config_get_bool(n.ptr) } {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err(format!(
                "{key} must be a boolean (yes/no, true/false, on/off, 1/0)"
            ))),
        }
    }

    /// A permission mode: an integer (alsa reads `0660` as octal) or an octal string.
    fn octal(&self, n: &Node, key: &str) -> Result<u32> {
        let v = match n.kind() {
            Kind::String => {
                let s = n.string().unwrap_or_default();
                i64::from_str_radix(s.trim_start_matches("0o"), 8)
                    .map_err(|_| self.err(format!("{key} = {s} is not an octal mode")))?
            }
            _ => n
                .integer()
                .ok_or_else(|| self.err(format!("{key} must be an octal mode such as 0660")))?,
        };
        if !(0..=0o777).contains(&v) {
            return Err(self.err(format!("{key} = {v:o} is out of range (0..0777)")));
        }
        Ok(v as u32)
    }

    /// A group: a number or a name from the group database.
    fn group(&self, n: &Node, key: &str) -> Result<u32> {
        if let Some(v) = n.integer() {
            return u32::try_from(v)
                .map_err(|_| self.err(format!("{key} = {v} is not a group id")));
        }
        let name = n
            .string()
            .ok_or_else(|| self.err(format!("{key} must be a group name or number")))?;
        match nix::unistd::Group::from_name(&name) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            _ => Err(self.err(format!("{key} = {name}: no such group"))),
        }
    }

    /// `bindings { 0 1  1 0 }`: client channel -> slave channel.
    fn bindings(&self, n: &Node) -> Result<Vec<Option<u16>>> {
        if n.kind() != Kind::Compound {
            return Err(
                self.err("bindings must be a compound { CLIENT_CHANNEL SLAVE_CHANNEL ... }")
            );
        }
        let mut map: Vec<Option<u16>> = Vec::new();
        for b in n.children() {
            let id = b.id();
            let c: usize = id.parse().ok().filter(|&c| c < 256).ok_or_else(|| {
                self.err(format!("bindings: '{id}' is not a channel number (0..255)"))
            })?;
            let sc = self.uint(&b, &format!("bindings.{id}"), 255)? as u16;
            if map.len() <= c {
                map.resize(c + 1, None);
            }
            if map[c].is_some() {
                return Err(self.err(format!("bindings: client channel {c} is bound twice")));
            }
            map[c] = Some(sc);
        }
        if map.is_empty() {
            return Err(self.err("bindings is empty"));
        }
        Ok(map)
    }

    fn format(&self, n: &Node, key: &str) -> Result<i32> {
        let s = n
            .string()
            .ok_or_else(|| self.err(format!("{key} must be a format name such as S16_LE")))?;
        let c = CString::new(s.as_str()).map_err(|_| self.err(format!("{key}: bad string")))?;
        // SAFETY: NUL-terminated string; alsa-lib only reads it.
        let v = unsafe { alsa_sys::snd_pcm_format_value(c.as_ptr()) };
        if v < 0 {
            return Err(self.err(format!("{key} = {s} is not a known sample format")));
        }
        Ok(v)
    }
}

/// Parse the plugin node. `root` is the whole configuration (for resolving slave definitions).
///
/// # Safety
/// `root` and `conf` must be the live configuration pointers alsa-lib passed to the plugin's
/// open function.
pub unsafe fn parse(root: *mut snd_config_t, conf: *mut snd_config_t) -> Result<PluginConfig> {
    let ctx = Ctx;
    let mut slave: Option<Node> = None;
    let mut ipc_key = 0i64;
    let mut ipc_key_add_uid = false;
    let mut access = Access::default();
    let mut perm_given = false;
    let mut server = None;
    let mut bindings = None;
    let mut alignment = Alignment::default();
    let mut tstamp = TstampType::default();
    let mut slowptr = true;
    let mut virtual_sink = None;
    for n in (Node { ptr: conf }).children() {
        let id = n.id();
        match id.as_str() {
            "comment" | "type" | "hint" => {}
            "slave" => slave = Some(n),
            "ipc_key" => {
                ipc_key = n
                    .integer()
                    .ok_or_else(|| ctx.err("ipc_key must be an integer"))?;
            }
            "ipc_key_add_uid" => ipc_key_add_uid = ctx.boolean(&n, &id)?,
            "ipc_perm" => {
                access.perm = ctx.octal(&n, &id)?;
                perm_given = true;
            }
            "ipc_gid" => access.gid = Some(ctx.group(&n, &id)?),
            "server" => {
                let s = n
                    .string()
                    .ok_or_else(|| ctx.err("server must be a path string"))?;
                if s.is_empty() {
                    return Err(ctx.err("server must not be empty"));
                }
                server = Some(s);
            }
            "bindings" => bindings = Some(ctx.bindings(&n)?),
            "hw_ptr_alignment" => {
                alignment = match n.string().as_deref() {
                    Some("no") | Some("off") | Some("auto") => Alignment::No,
                    Some("roundup") => Alignment::Roundup,
                    Some("rounddown") => Alignment::Rounddown,
                    _ => {
                        return Err(ctx.err(
                            "hw_ptr_alignment must be one of no, off, auto, roundup, rounddown",
                        ))
                    }
                }
            }
            "tstamp_type" => tstamp = match n.string().as_deref() {
                Some("default") | Some("monotonic") | Some("monotonic_raw") => {
                    TstampType::Monotonic
                }
                Some("gettimeofday") => TstampType::Gettimeofday,
                _ => return Err(ctx.err(
                    "tstamp_type must be one of default, gettimeofday, monotonic, monotonic_raw",
                )),
            },
            "slowptr" => slowptr = ctx.boolean(&n, &id)?,
            "virtual" => virtual_sink = Some(parse_virtual(&ctx, n)?),
            other => return Err(ctx.err(format!("unknown configuration key '{other}'"))),
        }
    }
    if ipc_key_add_uid && access.shared() {
        return Err(ctx.err(format!(
            "ipc_key_add_uid makes the mixer per user, but ipc_perm {:04o} shares it with other \
             users: drop one of the two",
            access.perm
        )));
    }
    if access.gid.is_some() && access.perm & 0o070 == 0 {
        return Err(ctx.err(format!(
            "ipc_gid is set but ipc_perm {:04o} gives the group no access (use e.g. 0660)",
            access.perm
        )));
    }
    if access.perm & 0o600 != 0o600 && perm_given {
        return Err(ctx.err(format!(
            "ipc_perm {:04o} locks the owner out; the owner needs rw (0600)",
            access.perm
        )));
    }
    let (slave_name, params, hw) = match (&virtual_sink, slave) {
        (Some(v), slave) => {
            let params = match slave {
                Some(n) if n.kind() == Kind::Compound => {
                    let (pcm, params, _) = parse_slave_fields(&ctx, root, n)?;
                    if pcm.is_some() {
                        return Err(ctx.err(
                            "virtual and slave.pcm contradict each other: the virtual device \
                             replaces the slave PCM (keep slave { format rate ... } for its \
                             parameters)",
                        ));
                    }
                    params
                }
                Some(_) => {
                    return Err(ctx.err(
                        "virtual and a slave PCM name contradict each other: give the virtual \
                         device's parameters as slave { format rate channels ... }",
                    ))
                }
                None => SlaveParams::default(),
            };
            let hw = HwAddress {
                card: 0,
                device: 0,
                subdevice: None,
            };
            (format!("virtual:{}", v.arg()), params, hw)
        }
        (None, None) => {
            return Err(ctx.err(
                "no slave is defined (add: slave.pcm \"hw:0,0\", or virtual { sink null } \
                 without a sound card)",
            ))
        }
        (None, Some(slave)) => {
            let (slave_name, params, hw) = parse_slave(&ctx, root, slave)?;
            let hw = match hw {
                Some(hw) => hw,
                None => resolve_hw(&ctx, root, &slave_name)?,
            };
            (slave_name, params, hw)
        }
    };
    Ok(PluginConfig {
        slave_name,
        hw,
        params,
        ipc_key,
        ipc_key_add_uid,
        access,
        server,
        bindings,
        alignment,
        tstamp,
        slowptr,
        virtual_sink,
    })
}

/// `virtual { sink null | wav | pcm  file "PATH"  pcm "NAME" }`.
fn parse_virtual(ctx: &Ctx, n: Node) -> Result<crate::virtual_dev::SinkSpec> {
    use crate::virtual_dev::SinkSpec;
    if n.kind() != Kind::Compound {
        return Err(ctx.err(
            "virtual must be a compound: virtual { sink null }, { sink wav file \"PATH\" } or \
             { sink pcm pcm \"NAME\" }",
        ));
    }
    let (mut sink, mut file, mut pcm) = (None, None, None);
    for c in n.children() {
        let id = c.id();
        let val = || {
            c.string()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ctx.err(format!("virtual.{id} must be a non-empty string")))
        };
        match id.as_str() {
            "comment" => {}
            "sink" => sink = Some(val()?),
            "file" => file = Some(val()?),
            "pcm" => pcm = Some(val()?),
            other => return Err(ctx.err(format!("unknown configuration key 'virtual.{other}'"))),
        }
    }
    let spec = match (sink.as_deref(), file, pcm) {
        (Some("null"), None, None) => SinkSpec::Null,
        (Some("wav"), Some(f), None) => {
            let p = std::path::PathBuf::from(&f);
            // The server runs in another directory: a relative name is the application's.
            let p = if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|e| ctx.err(format!("virtual.file '{f}': {e}")))?
                    .join(p)
            };
            SinkSpec::Wav(p)
        }
        (Some("pcm"), None, Some(name)) => SinkSpec::Pcm(name),
        (Some("wav"), None, _) => return Err(ctx.err("virtual.sink wav needs virtual.file")),
        (Some("pcm"), _, None) => return Err(ctx.err("virtual.sink pcm needs virtual.pcm")),
        (Some(s @ ("null" | "wav" | "pcm")), _, _) => {
            return Err(ctx.err(format!(
                "virtual.sink {s} takes {}",
                match s {
                    "null" => "neither file nor pcm",
                    "wav" => "file only",
                    _ => "pcm only",
                }
            )))
        }
        (Some(other), _, _) => {
            return Err(ctx.err(format!(
                "virtual.sink '{other}' is not one of null, wav, pcm"
            )))
        }
        (None, _, _) => return Err(ctx.err("virtual.sink is missing (null, wav or pcm)")),
    };
    if let SinkSpec::Wav(p) = &spec {
        if p.to_str().is_none_or(|s| s.contains('\n')) {
            return Err(ctx.err(format!("virtual.file {} is not a usable path", p.display())));
        }
    }
    Ok(spec)
}

/// The slave's name (for messages), its parameters, and its address when the slave PCM was given
/// inline as a compound (`pcm { type hw card 0 device 0 }`) rather than by name.
type Slave = (String, SlaveParams, Option<HwAddress>);

fn parse_slave(ctx: &Ctx, root: *mut snd_config_t, slave: Node) -> Result<Slave> {
    match slave.kind() {
        Kind::String => {
            let name = slave.string().unwrap_or_default();
            // A `pcm_slave.NAME` definition, as alsa-lib's snd_pcm_slave_conf accepts.
            if let Some(def) = search_definition(root, "pcm_slave", &name) {
                return parse_slave_compound(ctx, root, def.0);
            }
            Ok((name, SlaveParams::default(), None))
        }
        Kind::Compound => parse_slave_compound(ctx, root, slave),
        _ => Err(ctx.err("slave must be a PCM name string or a compound { pcm ... }")),
    }
}

fn parse_slave_compound(ctx: &Ctx, root: *mut snd_config_t, node: Node) -> Result<Slave> {
    let (pcm, p, inline) = parse_slave_fields(ctx, root, node)?;
    let pcm = pcm.ok_or_else(|| ctx.err("slave.pcm is missing"))?;
    Ok((pcm, p, inline))
}

/// The slave compound's fields, checked; `pcm` may be absent (the virtual device has none).
fn parse_slave_fields(
    ctx: &Ctx,
    _root: *mut snd_config_t,
    node: Node,
) -> Result<(Option<String>, SlaveParams, Option<HwAddress>)> {
    let mut p = SlaveParams::default();
    let mut pcm = None;
    let mut inline = None;
    for n in node.children() {
        let id = n.id();
        let key = format!("slave.{id}");
        match id.as_str() {
            "comment" => {}
            "pcm" if n.kind() == Kind::Compound => {
                let hw = hw_from_definition(ctx, "slave.pcm", n)?;
                pcm = Some(format!("hw:{},{}", hw.card, hw.device));
                inline = Some(hw);
            }
            "pcm" => {
                pcm = Some(n.string().ok_or_else(|| {
                    ctx.err("slave.pcm must be a PCM name such as \"hw:0,0\" or { type hw ... }")
                })?)
            }
            "format" => p.format = Some(ctx.format(&n, &key)?),
            "rate" => p.rate = Some(ctx.uint(&n, &key, 768_000)? as u32),
            "channels" => p.channels = Some(ctx.uint(&n, &key, 256)? as u32),
            "period_size" => p.period_size = Some(ctx.uint(&n, &key, 1 << 24)?),
            "period_time" => p.period_time = Some(ctx.uint(&n, &key, 10_000_000)? as u32),
            "buffer_size" => p.buffer_size = Some(ctx.uint(&n, &key, 1 << 26)?),
            "buffer_time" => p.buffer_time = Some(ctx.uint(&n, &key, 100_000_000)? as u32),
            "periods" => p.periods = Some(ctx.uint(&n, &key, 1024)? as u32),
            other => return Err(ctx.err(format!("unknown configuration key 'slave.{other}'"))),
        }
    }
    for (a, b, both) in [
        (
            "period_size",
            "period_time",
            p.period_size.is_some() && p.period_time.is_some(),
        ),
        (
            "buffer_size",
            "buffer_time",
            p.buffer_size.is_some() && p.buffer_time.is_some(),
        ),
        (
            "periods",
            "buffer_size/buffer_time",
            p.periods.is_some() && (p.buffer_size.is_some() || p.buffer_time.is_some()),
        ),
    ] {
        if both {
            return Err(ctx.err(format!(
                "slave.{a} and slave.{b} contradict each other; give one"
            )));
        }
    }
    for (key, v) in [("rate", p.rate), ("channels", p.channels)] {
        if v == Some(0) {
            return Err(ctx.err(format!("slave.{key} must be positive")));
        }
    }
    // A ring needs at least two periods, and a period needs room for a few pointer steps.
    for (key, v, min) in [
        ("period_size", p.period_size, 16),
        ("buffer_size", p.buffer_size, 32),
        ("period_time", p.period_time.map(u64::from), 100),
        ("buffer_time", p.buffer_time.map(u64::from), 200),
        ("periods", p.periods.map(u64::from), 2),
    ] {
        if let Some(v) = v.filter(|&v| v < min) {
            return Err(ctx.err(format!(
                "slave.{key} = {v} is out of range (at least {min})"
            )));
        }
    }
    Ok((pcm, p, inline))
}

/// Follow the slave PCM name to its `type hw` definition and read card/device/subdevice.
fn resolve_hw(ctx: &Ctx, root: *mut snd_config_t, name: &str) -> Result<HwAddress> {
    let def = search_definition(root, "pcm", name)
        .ok_or_else(|| ctx.err(format!("slave PCM '{name}' is not defined")))?;
    hw_from_definition(ctx, name, def.0)
}

/// Read `type hw`, `card`, `device`, `subdevice` from an (expanded) PCM definition.
fn hw_from_definition(ctx: &Ctx, name: &str, def: Node) -> Result<HwAddress> {
    let mut ty = None;
    let (mut card, mut device, mut subdevice) = (None, 0u32, None);
    for n in def.children() {
        match n.id().as_str() {
            "type" => ty = n.string(),
            "card" => {
                // SAFETY: live node; snd_config_get_card accepts an integer or a card name/id.
                let c = unsafe { alsa_sys::snd_config_get_card(n.ptr) };
                if c < 0 {
                    return Err(ctx.err(format!("slave '{name}': no such sound card")));
                }
                card = Some(c as u32);
            }
            "device" => device = ctx.uint(&n, "slave device", 1023)? as u32,
            "subdevice" => {
                let v = n
                    .integer()
                    .ok_or_else(|| ctx.err("slave subdevice must be an integer"))?;
                subdevice = (v >= 0).then_some(v as u32);
            }
            _ => {}
        }
    }
    match ty.as_deref() {
        Some("hw") => {}
        Some(t) => {
            return Err(ctx.err(format!(
                "slave '{name}' is of type '{t}'; rdmix needs a 'hw' device (e.g. \"hw:0,0\")"
            )))
        }
        None => return Err(ctx.err(format!("slave '{name}' has no type"))),
    }
    let card = card.ok_or_else(|| ctx.err(format!("slave '{name}' names no card")))?;
    Ok(HwAddress {
        card,
        device,
        subdevice,
    })
}
