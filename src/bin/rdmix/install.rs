//! `rdmix install [--default] [--destdir DIR] [--dry-run]` and `rdmix uninstall [--destdir DIR]`:
//! put rdmix where a distribution package would, and take it away again.
//!
//! The files come from the directory holding this `rdmix` binary (the cargo target directory:
//! `cargo build --release && target/release/rdmix install`): `libasound_module_pcm_rdmix.so`
//! and `rdmix-server` must be next to it. The configuration files are compiled in from
//! `alsa-conf/`. Layout (the same as the Debian package of `[package.metadata.deb]`):
//!
//! | what | where |
//! | --- | --- |
//! | the plugin | alsa-lib's plugin directory (see [`plugin_dir`]), mode 0644 |
//! | `rdmix-server` | `/usr/libexec/rdmix/` when the plugin finds it from there (`client::server_candidates`), else next to the plugin; 0755 |
//! | `rdmix` | `/usr/bin/`, 0755 |
//! | `50-rdmix.conf` | `/usr/share/alsa/alsa.conf.d/`, linked from `/etc/alsa/conf.d/` (alsa.conf loads that directory), as Debian's plugin packages do |
//! | `99-rdmix-default.conf` | `/etc/alsa/conf.d/99-rdmix-default.conf.example` (not loaded: alsa-lib reads `*.conf` only); with `--default` also `/usr/share/alsa/alsa.conf.d/99-rdmix-default.conf` and its link in `/etc/alsa/conf.d/` |
//!
//! Everything written is recorded in a manifest ([`MANIFEST`]): files with a content hash,
//! symlinks with their target, and every directory the install created. Uninstall removes
//! exactly those (a file changed since is left, and said), then the directories if empty.
//! Files are written to a temporary name in the target directory and renamed over the old one,
//! so an application that has the old plugin mapped keeps a consistent copy.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use asound_module_pcm_rdmix::client::server_candidates;

const SO_NAME: &str = "libasound_module_pcm_rdmix.so";
const SERVER_NAME: &str = "rdmix-server";
const CONF_NAME: &str = "50-rdmix.conf";
const DEFAULT_NAME: &str = "99-rdmix-default.conf";
const CONF: &str = include_str!("../../../alsa-conf/50-rdmix.conf");
const DEFAULT_CONF: &str = include_str!("../../../alsa-conf/99-rdmix-default.conf");
/// Where Debian's ALSA plugin packages put their configuration; alsa.conf does not read it.
const SHARE_CONF_DIR: &str = "/usr/share/alsa/alsa.conf.d";
/// The directory alsa.conf (1.2.x) loads, holding symlinks into [`SHARE_CONF_DIR`].
const ETC_CONF_DIR: &str = "/etc/alsa/conf.d";
const LIBEXEC_DIR: &str = "/usr/libexec/rdmix";
const BIN_DIR: &str = "/usr/bin";
/// What `rdmix install` wrote, for `rdmix uninstall`.
pub const MANIFEST: &str = "/var/lib/rdmix/installed-files";

pub const INSTALL_USAGE: &str = concat!(
    "       rdmix install [--default] [--destdir DIR] [--dry-run]\n",
    "       rdmix uninstall [--destdir DIR]\n",
    "install: put the plugin, rdmix-server, this command and the ALSA configuration in place so\n",
    "that `aplay -D rdmix` works (--default: rdmix becomes the default PCM too). Run it from the\n",
    "build: `cargo build --release && sudo target/release/rdmix install`; the plugin .so and\n",
    "rdmix-server are taken from the directory holding this rdmix binary. The plugin goes to\n",
    "$ALSA_PLUGIN_DIR if set, else to the directory alsa-lib loads plugins from.\n",
    "uninstall: remove exactly what install recorded in /var/lib/rdmix/installed-files."
);

enum Source {
    File(PathBuf),
    Text(&'static str),
}

enum Item {
    File {
        dest: PathBuf,
        src: Source,
        mode: u32,
    },
    Link {
        dest: PathBuf,
        target: PathBuf,
    },
}

impl Item {
    fn dest(&self) -> &Path {
        match self {
            Item::File { dest, .. } | Item::Link { dest, .. } => dest,
        }
    }
}

/// One manifest line: `file\t<hash>\t<path>`, `link\t<target>\t<path>` or `dir\t-\t<path>`.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    meta: String,
    path: PathBuf,
}

struct Opts {
    default: bool,
    destdir: Option<PathBuf>,
    dry_run: bool,
}

fn parse(args: &[String], allow: &[&str]) -> Result<Opts, String> {
    let mut o = Opts {
        default: false,
        destdir: None,
        dry_run: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.as_str();
        let name = a.split('=').next().unwrap_or(a);
        if !allow.contains(&name) {
            return Err(format!("unknown argument {a:?}"));
        }
        match name {
            "--default" => o.default = true,
            "--dry-run" => o.dry_run = true,
            "--destdir" => {
                let v = match a.split_once('=') {
                    Some((_, v)) => v.to_string(),
                    None => it.next().ok_or("--destdir needs a directory")?.clone(),
                };
                let p = PathBuf::from(&v);
                if v.is_empty() || !p.is_dir() {
                    return Err(format!("--destdir {v:?} is not an existing directory"));
                }
                o.destdir = Some(p);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

/// The real path of `p` (absolute, final) under `destdir`.
fn under(destdir: &Option<PathBuf>, p: &Path) -> PathBuf {
    match destdir {
        Some(d) => d.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    }
}

/// `a/b/../c` → `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// FNV-1a, 64 bits: enough to tell whether an installed file is still the one we wrote.
fn hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The file libasound.so.2 was loaded from, as alsa-lib itself sees it (`dladdr` on one of its
/// functions, after the dynamic loader's own search).
fn libasound_path() -> Result<PathBuf, String> {
    // SAFETY: a valid NUL-terminated name; libasound's constructors are harmless.
    let h = unsafe { libc::dlopen(c"libasound.so.2".as_ptr(), libc::RTLD_LAZY) };
    if h.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated (see above).
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        };
        return Err(format!(
            "cannot load libasound.so.2 to find alsa-lib's plugin directory ({msg}): install \
             alsa-lib (Debian: libasound2) or set ALSA_PLUGIN_DIR"
        ));
    }
    // SAFETY: h is a live handle, the name is NUL-terminated.
    let sym = unsafe { libc::dlsym(h, c"snd_pcm_open".as_ptr()) };
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the address and fills `info`.
    let ok = !sym.is_null() && unsafe { libc::dladdr(sym, &mut info) } != 0;
    let path = (ok && !info.dli_fname.is_null()).then(|| {
        // SAFETY: dli_fname is a NUL-terminated path owned by the loader while h is open.
        PathBuf::from(
            unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned(),
        )
    });
    // SAFETY: h came from dlopen; the path was copied out above.
    unsafe { libc::dlclose(h) };
    path.ok_or_else(|| "libasound.so.2 has no snd_pcm_open: set ALSA_PLUGIN_DIR".to_string())
}

/// The plugin directory compiled into libasound (its `ALSA_PLUGIN_DIR` macro): the only
/// NUL-terminated absolute path in the file that ends in `/alsa-lib`.
fn compiled_plugin_dir(lib: &Path) -> Option<PathBuf> {
    let data = fs::read(lib).ok()?;
    let needle = b"/alsa-lib\0";
    let mut i = 0;
    while let Some(pos) = data[i..].windows(needle.len()).position(|w| w == needle) {
        let end = i + pos + needle.len() - 1;
        let start = data[..end]
            .iter()
            .rposition(|b| *b == 0)
            .map_or(0, |p| p + 1);
        let s = &data[start..end];
        if s.first() == Some(&b'/') && s.iter().all(|b| b.is_ascii_graphic()) {
            return Some(PathBuf::from(String::from_utf8_lossy(s).into_owned()));
        }
        i = end + 1;
    }
    None
}

/// alsa-lib's plugin directory and why. alsa-lib (src/dlmisc.c, `snd_dlpath`) uses
/// `$ALSA_PLUGIN_DIR` if set; else `<directory of libasound.so.2>/alsa-lib` if that exists;
/// else its compiled-in `ALSA_PLUGIN_DIR` (`$libdir/alsa-lib`: on Debian
/// /usr/lib/x86_64-linux-gnu/alsa-lib). This follows the same order, with the library's
/// directory resolved (/lib → /usr/lib on a merged-/usr system) so that the path is canonical.
pub fn plugin_dir() -> Result<(PathBuf, String), String> {
    if let Some(d) = std::env::var_os("ALSA_PLUGIN_DIR").filter(|d| !d.is_empty()) {
        let p = PathBuf::from(&d);
        if !p.is_absolute() {
            return Err(format!(
                "ALSA_PLUGIN_DIR={} is not an absolute path",
                p.display()
            ));
        }
        let p = p.canonicalize().unwrap_or_else(|_| normalize(&p));
        return Ok((p, "$ALSA_PLUGIN_DIR".into()));
    }
    let lib = libasound_path()?;
    let libdir = lib
        .parent()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()))
        .ok_or_else(|| format!("{} has no directory", lib.display()))?;
    let origin = libdir.join("alsa-lib");
    if origin.is_dir() {
        return Ok((
            origin,
            format!("next to {}, where alsa-lib looks first", lib.display()),
        ));
    }
    if let Some(c) = compiled_plugin_dir(&lib) {
        return Ok((
            c.canonicalize().unwrap_or(c),
            format!("compiled into {}", lib.display()),
        ));
    }
    Ok((origin, format!("next to {}", lib.display())))
}

fn plan(default: bool) -> Result<(Vec<Item>, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this rdmix binary: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let build = exe
        .parent()
        .ok_or("this rdmix binary has no directory")?
        .to_path_buf();
    for name in [SO_NAME, SERVER_NAME] {
        let p = build.join(name);
        if !p.is_file() {
            return Err(format!(
                "{} is missing: `rdmix install` takes the plugin and the server from the \
                 directory holding this rdmix binary ({}); run it from the build, as in \
                 `cargo build --release && sudo target/release/rdmix install`",
                p.display(),
                build.display()
            ));
        }
    }
    let (pdir, why) = plugin_dir()?;
    let libexec_server = Path::new(LIBEXEC_DIR).join(SERVER_NAME);
    let found = server_candidates(&pdir)
        .iter()
        .any(|c| normalize(c) == libexec_server);
    let (server_dest, server_why) = if found {
        (libexec_server, "the plugin finds it there")
    } else {
        (
            pdir.join(SERVER_NAME),
            "next to the plugin: no libexec path the plugin searches from this directory",
        )
    };
    let notes = vec![
        format!("plugin directory {} ({why})", pdir.display()),
        format!("server {} ({server_why})", server_dest.display()),
    ];
    let share = Path::new(SHARE_CONF_DIR);
    let etc = Path::new(ETC_CONF_DIR);
    let mut items = vec![
        Item::File {
            dest: server_dest,
            src: Source::File(build.join(SERVER_NAME)),
            mode: 0o755,
        },
        Item::File {
            dest: pdir.join(SO_NAME),
            src: Source::File(build.join(SO_NAME)),
            mode: 0o644,
        },
        Item::File {
            dest: Path::new(BIN_DIR).join("rdmix"),
            src: Source::File(exe),
            mode: 0o755,
        },
        Item::File {
            dest: share.join(CONF_NAME),
            src: Source::Text(CONF),
            mode: 0o644,
        },
        Item::Link {
            dest: etc.join(CONF_NAME),
            target: share.join(CONF_NAME),
        },
        Item::File {
            dest: etc.join(format!("{DEFAULT_NAME}.example")),
            src: Source::Text(DEFAULT_CONF),
            mode: 0o644,
        },
    ];
    if default {
        items.push(Item::File {
            dest: share.join(DEFAULT_NAME),
            src: Source::Text(DEFAULT_CONF),
            mode: 0o644,
        });
        items.push(Item::Link {
            dest: etc.join(DEFAULT_NAME),
            target: share.join(DEFAULT_NAME),
        });
    }
    Ok((items, notes))
}

fn read_manifest(path: &Path) -> Result<Option<Vec<Entry>>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut v = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut f = line.splitn(3, '\t');
        let (kind, meta, p) = (f.next(), f.next(), f.next());
        let kind = match kind {
            Some("file") => "file",
            Some("link") => "link",
            Some("dir") => "dir",
            _ => {
                return Err(format!(
                    "{} line {}: not a manifest line: {line:?}",
                    path.display(),
                    n + 1
                ))
            }
        };
        match (meta, p) {
            (Some(m), Some(p)) if p.starts_with('/') => v.push(Entry {
                kind,
                meta: m.to_string(),
                path: PathBuf::from(p),
            }),
            _ => {
                return Err(format!(
                    "{} line {}: not a manifest line: {line:?}",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(Some(v))
}

/// Write `data` to `dest` atomically: a temporary file in the same directory, fsync, rename.
fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{} has no file name", dest.display()))?;
    let tmp = dest.with_file_name(format!(
        ".{}.rdmix-new.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let r = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}{}", dest.display(), hint(&e))
    })
}

fn link_atomic(dest: &Path, target: &Path) -> Result<(), String> {
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{} has no file name", dest.display()))?;
    let tmp = dest.with_file_name(format!(
        ".{}.rdmix-new.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let r = symlink(target, &tmp).and_then(|_| fs::rename(&tmp, dest));
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!(
            "cannot create the symlink {}: {e}{}",
            dest.display(),
            hint(&e)
        )
    })
}

fn hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (run as root, or install into a staging tree with --destdir)"
    } else {
        ""
    }
}

/// Create `dir` (a final path) and its missing parents under `destdir`, mode 0755; record each
/// directory created.
fn make_dirs(
    destdir: &Option<PathBuf>,
    dir: &Path,
    created: &mut Vec<Entry>,
) -> Result<(), String> {
    let mut cur = PathBuf::from("/");
    for c in dir.components().skip(1) {
        cur.push(c);
        let real = under(destdir, &cur);
        match fs::symlink_metadata(&real) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", real.display())),
        }
        fs::create_dir(&real)
            .and_then(|_| fs::set_permissions(&real, fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("cannot create {}: {e}{}", real.display(), hint(&e)))?;
        created.push(Entry {
            kind: "dir",
            meta: "-".into(),
            path: cur.clone(),
        });
    }
    Ok(())
}

fn write_manifest(path: &Path, entries: &[Entry]) -> Result<(), String> {
    let mut s = String::from(
        "# Written by `rdmix install`; `rdmix uninstall` removes exactly these, then this file.\n",
    );
    for e in entries {
        s.push_str(&format!("{}\t{}\t{}\n", e.kind, e.meta, e.path.display()));
    }
    write_atomic(path, s.as_bytes(), 0o644)
}

/// Replace or add `e` (by path), keeping the first-seen order.
fn upsert(entries: &mut Vec<Entry>, e: Entry) {
    match entries.iter_mut().find(|x| x.path == e.path) {
        Some(x) => *x = e,
        None => entries.push(e),
    }
}

fn do_install(o: &Opts) -> Result<(), String> {
    let (items, notes) = plan(o.default)?;
    let manifest = under(&o.destdir, Path::new(MANIFEST));
    let old = read_manifest(&manifest)?.unwrap_or_default();
    let owned: BTreeSet<&Path> = old.iter().map(|e| e.path.as_path()).collect();
    // Never take over a file someone else put there: uninstall would then remove it.
    let conflicts: Vec<String> = items
        .iter()
        .map(|i| under(&o.destdir, i.dest()))
        .zip(items.iter())
        .filter(|(real, i)| fs::symlink_metadata(real).is_ok() && !owned.contains(i.dest()))
        .map(|(real, _)| real.display().to_string())
        .collect();
    if !conflicts.is_empty() {
        return Err(format!(
            "these exist and were not installed by `rdmix install` (a package's files, or a \
             copy made by hand?); remove them first: {}",
            conflicts.join(", ")
        ));
    }
    if let Some(d) = &o.destdir {
        println!("destdir {}", d.display());
    }
    for n in &notes {
        println!("# {n}");
    }
    for i in &items {
        match i {
            Item::File { dest, src, mode } => {
                let from = match src {
                    Source::File(p) => p.display().to_string(),
                    Source::Text(_) => "(built in)".into(),
                };
                println!("file {mode:04o} {} <- {from}", dest.display());
            }
            Item::Link { dest, target } => {
                println!("link {} -> {}", dest.display(), target.display())
            }
        }
    }
    println!("manifest {MANIFEST}");
    if o.dry_run {
        println!("# dry run: nothing written");
        return Ok(());
    }
    let mut entries = old;
    let mut created = Vec::new();
    make_dirs(
        &o.destdir,
        Path::new(MANIFEST).parent().unwrap_or(Path::new("/")),
        &mut created,
    )?;
    // The manifest is rewritten after every step, so a failed install can still be undone.
    let record = |entries: &mut Vec<Entry>, created: &mut Vec<Entry>| {
        for c in created.drain(..) {
            upsert(entries, c);
        }
        write_manifest(&manifest, entries)
    };
    record(&mut entries, &mut created)?;
    for i in &items {
        let dest = i.dest();
        make_dirs(
            &o.destdir,
            dest.parent().unwrap_or(Path::new("/")),
            &mut created,
        )?;
        record(&mut entries, &mut created)?;
        let real = under(&o.destdir, dest);
        let e = match i {
            Item::File { src, mode, .. } => {
                let data = match src {
                    Source::File(p) => {
                        fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
                    }
                    Source::Text(t) => t.as_bytes().to_vec(),
                };
                write_atomic(&real, &data, *mode)?;
                Entry {
                    kind: "file",
                    meta: hash(&data),
                    path: dest.to_path_buf(),
                }
            }
            Item::Link { target, .. } => {
                link_atomic(&real, target)?;
                Entry {
                    kind: "link",
                    meta: target.display().to_string(),
                    path: dest.to_path_buf(),
                }
            }
        };
        upsert(&mut entries, e);
        record(&mut entries, &mut created)?;
    }
    println!(
        "installed: {} files and links, manifest {}",
        items.len(),
        manifest.display()
    );
    Ok(())
}

fn do_uninstall(o: &Opts) -> Result<(), String> {
    let manifest = under(&o.destdir, Path::new(MANIFEST));
    let Some(entries) = read_manifest(&manifest)? else {
        println!(
            "nothing to uninstall: no {} (rdmix install was not run here, or was undone)",
            manifest.display()
        );
        return Ok(());
    };
    let mut removed = 0;
    let mut left = Vec::new();
    for e in entries.iter().rev().filter(|e| e.kind != "dir") {
        let real = under(&o.destdir, &e.path);
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(_) => {
                println!("already gone {}", e.path.display());
                continue;
            }
        };
        let ours = match e.kind {
            "link" => {
                meta.file_type().is_symlink()
                    && fs::read_link(&real).is_ok_and(|t| t == Path::new(&e.meta))
            }
            _ => meta.is_file() && fs::read(&real).is_ok_and(|d| hash(&d) == e.meta),
        };
        if !ours {
            left.push(format!("{} (changed since rdmix install)", real.display()));
            continue;
        }
        fs::remove_file(&real)
            .map_err(|err| format!("cannot remove {}: {err}{}", real.display(), hint(&err)))?;
        println!("removed {} {}", e.kind, e.path.display());
        removed += 1;
    }
    fs::remove_file(&manifest)
        .map_err(|err| format!("cannot remove {}: {err}", manifest.display()))?;
    let mut dirs: Vec<&Entry> = entries.iter().filter(|e| e.kind == "dir").collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.components().count()));
    for d in dirs {
        let real = under(&o.destdir, &d.path);
        match fs::remove_dir(&real) {
            Ok(()) => println!("removed dir {}", d.path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => left.push(format!("{} (directory not empty)", real.display())),
        }
    }
    for l in &left {
        println!("left {l}");
    }
    println!(
        "uninstalled: {removed} files and links removed, {} left",
        left.len()
    );
    Ok(())
}

pub fn install(args: &[String]) -> i32 {
    let r = parse(args, &["--default", "--destdir", "--dry-run"]).and_then(|o| do_install(&o));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rdmix install: {e}");
            1
        }
    }
}

pub fn uninstall(args: &[String]) -> i32 {
    let r = parse(args, &["--destdir"]).and_then(|o| do_uninstall(&o));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rdmix uninstall: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_server_search() {
        assert_eq!(
            normalize(Path::new(
                "/usr/lib/x86_64-linux-gnu/alsa-lib/../../../libexec/rdmix/x"
            )),
            Path::new("/usr/libexec/rdmix/x")
        );
        let multiarch = Path::new("/usr/lib/x86_64-linux-gnu/alsa-lib");
        assert!(server_candidates(multiarch)
            .iter()
            .any(|c| normalize(c) == Path::new("/usr/libexec/rdmix/rdmix-server")));
    }
}
