//! `rdmix install` on the host, no VM: the Debian package (`[package.metadata.deb]` in
//! Cargo.toml) and `rdmix install --dry-run` list the same paths and modes; an install into a
//! temporary `--destdir`, a second install, `--default`, then `rdmix uninstall` leave the tree
//! empty; a file the install did not write is never taken over or removed.

// No `mod common`: its own unit tests would run here too and take 20 s.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `rdmix` binary under test, with the plugin .so built next to it (cargo builds the
/// binaries for integration tests, not the cdylib), as `rdmix install` needs.
fn rdmix() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rdmix"));
    let so = bin.with_file_name("libasound_module_pcm_rdmix.so");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["build", "--lib", "--quiet"]);
    if bin
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "release")
    {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("cargo build --lib").success());
    assert!(so.is_file(), "{} was not built", so.display());
    bin
}

fn run(bin: &Path, args: &[&str], plugin_dir: Option<&str>) -> Output {
    let mut c = Command::new(bin);
    c.args(args);
    match plugin_dir {
        Some(d) => c.env("ALSA_PLUGIN_DIR", d),
        None => c.env_remove("ALSA_PLUGIN_DIR"),
    };
    c.output().expect("run rdmix")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (path, kind) where kind is "file MODE" or "link TARGET", from the dry run's lines
/// `file 0644 /dest <- src` and `link /dest -> target`.
fn dry_run_layout(out: &str) -> BTreeSet<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["file", mode, dest, "<-", ..] => Some((dest.to_string(), format!("file {mode}"))),
                ["link", dest, "->", target] => Some((dest.to_string(), format!("link {target}"))),
                _ => None,
            }
        })
        .collect()
}

/// The same from Cargo.toml's `[package.metadata.deb]` assets: `["src", "dest", "mode"]`, a
/// dest ending in `/` taking the source's file name; plus the links postinst makes.
fn deb_layout() -> BTreeSet<(String, String)> {
    let toml = std::fs::read_to_string(project_root().join("Cargo.toml")).expect("Cargo.toml");
    let section = toml
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("Cargo.toml has a [package.metadata.deb] section");
    let assets = section
        .split("assets = [")
        .nth(1)
        .expect("[package.metadata.deb] has assets")
        .split("\n]")
        .next()
        .unwrap_or_default();
    let mut v = BTreeSet::new();
    for line in assets.lines().map(str::trim).filter(|l| l.starts_with('[')) {
        let f: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(f.len(), 3, "asset line {line:?} is not [src, dest, mode]");
        let (src, dest, mode) = (f[0], f[1], f[2]);
        let name = Path::new(src).file_name().unwrap().to_string_lossy();
        let dest = if dest.ends_with('/') {
            format!("/{dest}{name}")
        } else {
            format!("/{dest}")
        };
        v.insert((dest, format!("file {mode:0>4}")));
    }
    // The /etc/alsa/conf.d symlink is made by the package's postinst (alsa-conf/debian/postinst
    // says why): its `ln -s TARGET LINK` line.
    let dir = section
        .lines()
        .find_map(|l| l.trim().strip_prefix("maintainer-scripts = "))
        .expect("[package.metadata.deb] has maintainer-scripts")
        .trim_matches('"');
    let postinst = std::fs::read_to_string(project_root().join(dir).join("postinst"))
        .expect("maintainer-scripts has a postinst");
    for l in postinst
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ln -s "))
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        let link = w[3].trim_matches('"').trim_start_matches("$DPKG_ROOT");
        v.insert((link.to_string(), format!("link {}", w[2])));
    }
    v
}

#[test]
fn deb_assets_and_dry_run_list_the_same_layout() {
    let bin = rdmix();
    let dest = tempdir("layout");
    let out = run(
        &bin,
        &["install", "--dry-run", "--destdir", dest.to_str().unwrap()],
        None,
    );
    let t = text(&out);
    assert!(out.status.success(), "dry run failed: {t}");
    println!("{t}");
    let dry = dry_run_layout(&t);
    let deb = deb_layout();
    assert_eq!(dry.len(), 6, "dry run listed {dry:?}");
    assert_eq!(
        dry, deb,
        "rdmix install --dry-run and the Debian package differ:\n  dry run only: {:?}\n  deb only: {:?}",
        dry.difference(&deb).collect::<Vec<_>>(),
        deb.difference(&dry).collect::<Vec<_>>()
    );
    // A dry run writes nothing.
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    println!("same layout: {} paths", dry.len());
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmix-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every path under `root` with its kind, mode, size and link target.
fn tree(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                v.push(format!(
                    "/{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                v.push(format!("/{rel}/ {:o}", m.permissions().mode() & 0o7777));
                stack.push(p);
            } else {
                v.push(format!(
                    "/{rel} {:o} {}",
                    m.permissions().mode() & 0o7777,
                    m.len()
                ));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn install_twice_default_then_uninstall_leaves_nothing() {
    let bin = rdmix();
    let dest = tempdir("cycle");
    let d = dest.to_str().unwrap();
    let plugin = "/usr/lib/x86_64-linux-gnu/alsa-lib";

    let o = run(&bin, &["install", "--destdir", d], Some(plugin));
    assert!(o.status.success(), "install: {}", text(&o));
    let first = tree(&dest);
    println!("installed:\n  {}", first.join("\n  "));
    let so = format!("{plugin}/libasound_module_pcm_rdmix.so");
    for want in [
        format!("{so} 644"),
        "/usr/libexec/rdmix/rdmix-server 755".into(),
        "/usr/bin/rdmix 755".into(),
        "/usr/share/alsa/alsa.conf.d/50-rdmix.conf 644".into(),
        "/etc/alsa/conf.d/50-rdmix.conf -> /usr/share/alsa/alsa.conf.d/50-rdmix.conf".into(),
        "/etc/alsa/conf.d/99-rdmix-default.conf.example 644".into(),
        "/usr/libexec/rdmix/ 755".into(),
        "/var/lib/rdmix/installed-files 644".into(),
    ] {
        assert!(
            first.iter().any(|l| l.starts_with(&want)),
            "{want} not installed: {first:?}"
        );
    }
    // The installed files are the built ones, byte for byte.
    let built = std::fs::read(bin.with_file_name("libasound_module_pcm_rdmix.so")).unwrap();
    assert!(std::fs::read(dest.join(&so[1..])).unwrap() == built);
    let conf = std::fs::read(project_root().join("alsa-conf/50-rdmix.conf")).unwrap();
    assert!(std::fs::read(dest.join("usr/share/alsa/alsa.conf.d/50-rdmix.conf")).unwrap() == conf);
    assert!(
        !first.iter().any(|l| l.contains(".rdmix-new.")),
        "temp file left"
    );

    // Idempotent: the same tree, the same manifest.
    let manifest = std::fs::read(dest.join("var/lib/rdmix/installed-files")).unwrap();
    let o = run(&bin, &["install", "--destdir", d], Some(plugin));
    assert!(o.status.success(), "second install: {}", text(&o));
    assert_eq!(tree(&dest), first, "a second install changed the tree");
    assert_eq!(
        std::fs::read(dest.join("var/lib/rdmix/installed-files")).unwrap(),
        manifest
    );

    // --default adds the default-PCM file and its link.
    let o = run(
        &bin,
        &["install", "--default", "--destdir", d],
        Some(plugin),
    );
    assert!(o.status.success(), "install --default: {}", text(&o));
    let t = tree(&dest);
    let link = "/etc/alsa/conf.d/99-rdmix-default.conf -> /usr/share/alsa/alsa.conf.d/99-rdmix-default.conf";
    assert!(t.iter().any(|l| l == link), "{link} missing: {t:?}");
    assert_eq!(t.len(), first.len() + 2);

    // A file someone else put where the install writes is refused, and named.
    let foreign = tempdir("foreign");
    std::fs::create_dir_all(foreign.join("usr/bin")).unwrap();
    std::fs::write(foreign.join("usr/bin/rdmix"), b"not ours").unwrap();
    let o = run(
        &bin,
        &["install", "--destdir", foreign.to_str().unwrap()],
        Some(plugin),
    );
    assert!(
        !o.status.success() && text(&o).contains("usr/bin/rdmix"),
        "a foreign /usr/bin/rdmix was not refused: {}",
        text(&o)
    );
    assert_eq!(
        tree(&foreign),
        ["/usr/ 755", "/usr/bin/ 755", "/usr/bin/rdmix 644 8"]
    );

    // Uninstall: nothing left, not even the directories it created.
    let o = run(&bin, &["uninstall", "--destdir", d], None);
    assert!(o.status.success(), "uninstall: {}", text(&o));
    println!("{}", text(&o));
    assert_eq!(tree(&dest), Vec::<String>::new(), "uninstall left files");
    let o = run(&bin, &["uninstall", "--destdir", d], None);
    assert!(
        o.status.success() && text(&o).contains("nothing to uninstall"),
        "second uninstall: {}",
        text(&o)
    );

    // Uninstall leaves a file changed since the install, and a directory holding others' files.
    let o = run(&bin, &["install", "--destdir", d], Some(plugin));
    assert!(o.status.success());
    std::fs::write(dest.join("usr/bin/rdmix"), b"edited").unwrap();
    std::fs::write(dest.join("etc/alsa/conf.d/10-other.conf"), b"# other").unwrap();
    let o = run(&bin, &["uninstall", "--destdir", d], None);
    assert!(o.status.success(), "uninstall: {}", text(&o));
    assert_eq!(
        tree(&dest),
        [
            "/etc/ 755",
            "/etc/alsa/ 755",
            "/etc/alsa/conf.d/ 755",
            "/etc/alsa/conf.d/10-other.conf 644 7",
            "/usr/ 755",
            "/usr/bin/ 755",
            "/usr/bin/rdmix 755 6",
        ]
    );
    let _ = std::fs::remove_dir_all(&dest);
    let _ = std::fs::remove_dir_all(&foreign);
}

#[test]
fn missing_build_files_are_named_and_plugin_dir_rules() {
    let bin = rdmix();
    // Alone in a directory: the .so is missing, and the message says which and why.
    let lone = tempdir("lone");
    std::fs::copy(&bin, lone.join("rdmix")).unwrap();
    let o = run(&lone.join("rdmix"), &["install", "--dry-run"], None);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("libasound_module_pcm_rdmix.so is missing"),
        "{t}"
    );
    std::fs::write(lone.join("libasound_module_pcm_rdmix.so"), b"").unwrap();
    let t = text(&run(&lone.join("rdmix"), &["install", "--dry-run"], None));
    assert!(t.contains("rdmix-server is missing"), "{t}");
    let _ = std::fs::remove_dir_all(&lone);

    // ALSA_PLUGIN_DIR wins; the server goes to /usr/libexec/rdmix only where the plugin's
    // search (client::server_candidates) reaches it, else next to the plugin.
    for (dir, server) in [
        ("/usr/lib/alsa-lib", "/usr/libexec/rdmix/rdmix-server"),
        ("/usr/lib64/alsa-lib", "/usr/libexec/rdmix/rdmix-server"),
        ("/opt/sound/plugins", "/opt/sound/plugins/rdmix-server"),
    ] {
        let t = text(&run(&bin, &["install", "--dry-run"], Some(dir)));
        let l = dry_run_layout(&t);
        assert!(
            l.contains(&(
                format!("{dir}/libasound_module_pcm_rdmix.so"),
                "file 0644".into()
            )) && l.contains(&(server.into(), "file 0755".into())),
            "ALSA_PLUGIN_DIR={dir}: {t}"
        );
    }
    // Without it: the multiarch directory alsa-lib uses on Debian (the compiled-in
    // ALSA_PLUGIN_DIR, or <libasound's directory>/alsa-lib when that exists).
    let t = text(&run(&bin, &["install", "--dry-run"], None));
    assert!(
        t.contains("# plugin directory /usr/lib/x86_64-linux-gnu/alsa-lib ("),
        "{t}"
    );
}
