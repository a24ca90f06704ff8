//! Wrong and contradictory configurations, on the host (they fail before any device is opened):
//! each must make `aplay` fail cleanly (exit status 1, never an abort of the application) with
//! one message that names the PCM and the offending key.

mod common;

use std::process::Command;

use common::*;

const CASES: &[(&str, &str, &[&str])] = &[
    (
        "unknown_key",
        r#"slave "hw:0,0" bogus_key 1"#,
        &["bogus_key"],
    ),
    (
        "rate_type",
        r#"slave { pcm "hw:0,0" rate "fast" }"#,
        &["slave.rate"],
    ),
    (
        "rate_range",
        r#"slave { pcm "hw:0,0" rate 9999999 }"#,
        &["slave.rate", "out of range"],
    ),
    (
        "channels_zero",
        r#"slave { pcm "hw:0,0" channels 0 }"#,
        &["slave.channels"],
    ),
    (
        "format_name",
        r#"slave { pcm "hw:0,0" format S17_LE }"#,
        &["slave.format", "S17_LE"],
    ),
    (
        "period_both",
        r#"slave { pcm "hw:0,0" period_size 1024 period_time 20000 }"#,
        &["period_size", "period_time"],
    ),
    (
        "buffer_both",
        r#"slave { pcm "hw:0,0" buffer_size 4096 buffer_time 90000 }"#,
        &["buffer_size", "buffer_time"],
    ),
    (
        "periods_and_buffer",
        r#"slave { pcm "hw:0,0" periods 4 buffer_size 4096 }"#,
        &["periods", "buffer_size"],
    ),
    (
        "slave_key",
        r#"slave { pcm "hw:0,0" volume 3 }"#,
        &["slave.volume"],
    ),
    ("no_slave", r#"ipc_key 5"#, &["no slave"]),
    ("slave_not_hw", r#"slave "null""#, &["null", "hw"]),
    (
        "slave_undefined",
        r#"slave "nosuchpcm""#,
        &["nosuchpcm", "not defined"],
    ),
    (
        "slave_inline_not_hw",
        r#"slave { pcm { type null } }"#,
        &["null", "hw"],
    ),
    (
        "ipc_key_type",
        r#"slave "hw:0,0" ipc_key "one""#,
        &["ipc_key"],
    ),
    (
        "perm_octal",
        r#"slave "hw:0,0" ipc_perm "rwx""#,
        &["ipc_perm"],
    ),
    (
        "perm_range",
        r#"slave "hw:0,0" ipc_perm 01777"#,
        &["ipc_perm", "out of range"],
    ),
    (
        "perm_owner",
        r#"slave "hw:0,0" ipc_perm 0066"#,
        &["ipc_perm", "owner"],
    ),
    (
        "add_uid_shared",
        r#"slave "hw:0,0" ipc_perm 0660 ipc_key_add_uid yes"#,
        &["ipc_key_add_uid", "ipc_perm"],
    ),
    (
        "gid_no_group_bits",
        r#"slave "hw:0,0" ipc_gid 0"#,
        &["ipc_gid", "ipc_perm"],
    ),
    (
        "gid_unknown",
        r#"slave "hw:0,0" ipc_perm 0660 ipc_gid nosuchgroup"#,
        &["ipc_gid", "nosuchgroup"],
    ),
    (
        "alignment",
        r#"slave "hw:0,0" hw_ptr_alignment sideways"#,
        &["hw_ptr_alignment"],
    ),
    (
        "tstamp",
        r#"slave "hw:0,0" tstamp_type sundial"#,
        &["tstamp_type"],
    ),
    ("slowptr", r#"slave "hw:0,0" slowptr maybe"#, &["slowptr"]),
    (
        "bindings_type",
        r#"slave "hw:0,0" bindings 3"#,
        &["bindings"],
    ),
    (
        "bindings_channel",
        r#"slave "hw:0,0" bindings { x 1 }"#,
        &["bindings", "'x'"],
    ),
    ("server_empty", r#"slave "hw:0,0" server """#, &["server"]),
    (
        "bindings_negative",
        r#"slave "hw:0,0" bindings { 0 -1 }"#,
        &["bindings"],
    ),
    (
        "period_zero",
        r#"slave { pcm "hw:0,0" period_size 0 }"#,
        &["slave.period_size"],
    ),
    (
        "buffer_zero",
        r#"slave { pcm "hw:0,0" buffer_size 0 }"#,
        &["slave.buffer_size"],
    ),
    (
        "periods_one",
        r#"slave { pcm "hw:0,0" periods 1 }"#,
        &["slave.periods"],
    ),
    (
        "virtual_and_pcm",
        r#"virtual { sink null } slave { pcm "hw:0,0" }"#,
        &["virtual", "slave.pcm"],
    ),
    (
        "virtual_slave_name",
        r#"virtual { sink null } slave "hw:0,0""#,
        &["virtual", "slave PCM name"],
    ),
    (
        "virtual_sink",
        r#"virtual { sink mp3 }"#,
        &["virtual.sink", "mp3"],
    ),
    (
        "virtual_nofile",
        r#"virtual { sink wav }"#,
        &["virtual.file"],
    ),
    (
        "virtual_key",
        r#"virtual { sink null speed 2 }"#,
        &["virtual.speed"],
    ),
    (
        "virtual_type",
        r#"virtual "null""#,
        &["virtual", "compound"],
    ),
    (
        "virtual_extra",
        r#"virtual { sink null file "/tmp/x.wav" }"#,
        &["virtual.sink null"],
    ),
    (
        "perm_type",
        r#"slave "hw:0,0" ipc_perm "rw-rw----""#,
        &["ipc_perm"],
    ),
];

#[test]
fn bad_configurations_are_refused_with_a_message() {
    let (so, _server) = artifacts();
    let dir = out_dir("config_errors");
    let mut conf = format!("pcm_type.rdmix {{ lib \"{}\" }}\n", so.display());
    for (name, body, _) in CASES {
        conf.push_str(&format!("pcm.{name} {{ type rdmix {body} }}\n"));
    }
    let conf_path = dir.join("asound.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let mut failures = Vec::new();
    for (name, _, words) in CASES {
        let out = Command::new("aplay")
            .args(["-q", "-D", name, "-d", "1", "-t", "raw", "/dev/zero"])
            .env(
                "ALSA_CONFIG_PATH",
                format!("/usr/share/alsa/alsa.conf:{}", conf_path.display()),
            )
            .output()
            .expect("run aplay (alsa-utils)");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.starts_with("rdmix:")).unwrap_or("");
        let ok = out.status.code() == Some(1)
            && line.contains(&format!("PCM '{name}'"))
            && words.iter().all(|w| line.contains(w))
            && err.lines().filter(|l| l.starts_with("rdmix:")).count() == 1;
        println!(
            "{name:<20} {}",
            if line.is_empty() { err.trim() } else { line }
        );
        if !ok {
            failures.push(format!("{name}: status {:?}, stderr: {err}", out.status));
        }
    }
    assert!(
        failures.is_empty(),
        "failures:\n  {}",
        failures.join("\n  ")
    );
}
