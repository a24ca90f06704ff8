//! `include/rdmix.h` against the Rust definitions it is generated from (host tests):
//!
//! - the header is what `include/generate.sh` (cbindgen) makes of the current sources, else CI
//!   fails with "include/rdmix.h is out of date: run include/generate.sh";
//! - a C program generated from the header's own struct and constant lists, compiled with
//!   `gcc -std=c11 -Wall -Werror -pedantic`, fills every struct with a byte pattern that differs
//!   at every offset and prints, for every field (every array element), its offset, size and the
//!   value it reads; the Rust side fills its struct with the same pattern and prints it with
//!   `Debug`. Same field names in the same order, same sizes and the same value in every field
//!   means the same offsets and widths in both languages. Every `#define` must equal the Rust
//!   constant it comes from (cbindgen translates expressions such as `1 << 16`).
//!
//! A struct or constant in the header that this file does not map to its Rust definition fails
//! the test: add it to `rust_structs` or `rust_constants`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::mem::{size_of, MaybeUninit};
use std::path::{Path, PathBuf};
use std::process::Command;

use asound_module_pcm_rdmix::{protocol, shm};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let d = base
        .join("c-header")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

#[test]
fn header_is_up_to_date() {
    let dir = scratch("fresh");
    let fresh = dir.join("rdmix.h");
    let out = Command::new(root().join("include/generate.sh"))
        .arg(&fresh)
        .output()
        .expect("run include/generate.sh");
    assert!(
        out.status.success(),
        "include/generate.sh failed (cbindgen is Debian's `cbindgen` package, installed by \
         tests/vm/setup-host.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = root().join("include/rdmix.h");
    let a = std::fs::read_to_string(&committed).unwrap_or_default();
    let b = std::fs::read_to_string(&fresh).expect("read the regenerated header");
    if a != b {
        let diff = Command::new("diff")
            .arg("-u")
            .arg(&committed)
            .arg(&fresh)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("include/rdmix.h is out of date: run include/generate.sh\n{diff}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Byte `i` of the pattern (the C program computes the same): distinct enough that a field read
/// at a wrong offset or with a wrong width gets a different value.
fn pat(i: usize) -> u8 {
    let mut x = (i as u32).wrapping_mul(0x9E37_79B1);
    x ^= x >> 15;
    x = x.wrapping_mul(0x85EB_CA77);
    x ^= x >> 13;
    (x >> 3) as u8
}

/// # Safety
/// `T` must consist of integers, atomic integers and arrays of them only (every bit pattern is a
/// valid value).
unsafe fn patterned<T>() -> T {
    let mut v = MaybeUninit::<T>::uninit();
    let p = v.as_mut_ptr() as *mut u8;
    for i in 0..size_of::<T>() {
        // SAFETY: i < size_of::<T>(), within the allocation.
        unsafe { p.add(i).write(pat(i)) };
    }
    // SAFETY: every byte is initialised, and any pattern is a valid T (the caller's promise).
    unsafe { v.assume_init() }
}

/// A struct's fields as `Debug` prints them, arrays expanded to `name[i]`.
fn debug_fields<T: Debug>(v: &T) -> Vec<(String, String)> {
    let s = format!("{v:?}");
    let body = s
        .split_once(" { ")
        .and_then(|(_, b)| b.strip_suffix(" }"))
        .unwrap_or_else(|| panic!("unexpected Debug form: {s}"));
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let bytes = body.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'[' => depth += 1,
            b']' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(body[start..].trim());
    let mut out = Vec::new();
    for p in parts {
        let (name, value) = p.split_once(": ").unwrap_or_else(|| panic!("field {p}"));
        if let Some(items) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            for (i, x) in items.split(", ").enumerate() {
                out.push((format!("{name}[{i}]"), x.to_string()));
            }
        } else {
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}

struct RustStruct {
    size: usize,
    fields: Vec<(String, String)>,
}

fn rust_struct<T: Debug>(v: T) -> RustStruct {
    RustStruct {
        size: size_of::<T>(),
        fields: debug_fields(&v),
    }
}

/// The C name of every exported struct and its patterned Rust twin.
fn rust_structs() -> BTreeMap<&'static str, RustStruct> {
    // SAFETY (every call): these structs hold only integers, atomic integers and arrays of them.
    unsafe {
        BTreeMap::from([
            (
                "rdmix_shm_header",
                rust_struct(patterned::<shm::ShmHeader>()),
            ),
            (
                "rdmix_client_slot",
                rust_struct(patterned::<shm::ClientSlot>()),
            ),
            (
                "rdmix_msg_header",
                rust_struct(patterned::<protocol::MsgHeader>()),
            ),
            (
                "rdmix_hello_body",
                rust_struct(patterned::<protocol::HelloBody>()),
            ),
            (
                "rdmix_welcome_body",
                rust_struct(patterned::<protocol::WelcomeBody>()),
            ),
            (
                "rdmix_refuse_body",
                rust_struct(patterned::<protocol::RefuseBody>()),
            ),
            (
                "rdmix_query_body",
                rust_struct(patterned::<protocol::QueryBody>()),
            ),
            (
                "rdmix_status_body",
                rust_struct(patterned::<protocol::StatusBody>()),
            ),
        ])
    }
}

/// Every `#define` of the header and the Rust value it must have.
fn rust_constants() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "RDMIX_SOCKET_PREFIX",
            format!("{:?}", protocol::SOCKET_PREFIX),
        ),
        ("RDMIX_SHM_MAGIC", shm::SHM_MAGIC.to_string()),
        ("RDMIX_SHM_VERSION", shm::VERSION.to_string()),
        ("RDMIX_SLAVE_HW", shm::SLAVE_HW.to_string()),
        ("RDMIX_SLAVE_VIRTUAL", shm::SLAVE_VIRTUAL.to_string()),
        ("RDMIX_VOLUME_UNITY", shm::VOLUME_UNITY.to_string()),
        ("RDMIX_VOLUME_MAX", shm::VOLUME_MAX.to_string()),
        ("RDMIX_PEAK_FULL_SCALE", shm::PEAK_FULL_SCALE.to_string()),
        ("RDMIX_MAX_CLIENTS", shm::MAX_CLIENTS.to_string()),
        ("RDMIX_PROTO_MAGIC", protocol::MAGIC.to_string()),
        ("RDMIX_PROTO_VERSION", protocol::PROTO_VERSION.to_string()),
        ("RDMIX_MAX_PACKET", protocol::MAX_PACKET.to_string()),
        ("RDMIX_MAX_HW_PATH", protocol::MAX_HW_PATH.to_string()),
        (
            "RDMIX_MAX_REFUSE_MESSAGE",
            protocol::MAX_REFUSE_MESSAGE.to_string(),
        ),
        ("RDMIX_KIND_HELLO", protocol::KIND_HELLO.to_string()),
        ("RDMIX_KIND_WELCOME", protocol::KIND_WELCOME.to_string()),
        ("RDMIX_KIND_REFUSE", protocol::KIND_REFUSE.to_string()),
        ("RDMIX_KIND_QUERY", protocol::KIND_QUERY.to_string()),
        ("RDMIX_KIND_STATUS", protocol::KIND_STATUS.to_string()),
    ])
}

struct CField {
    ty: String,
    name: String,
    len: Option<usize>,
}

/// A struct of the header: its name and fields in order.
type CStruct = (String, Vec<CField>);

/// The header's structs and `#define` names (with whether the value is a string), read from
/// cbindgen's output.
fn parse_header(text: &str) -> (Vec<CStruct>, Vec<(String, bool)>) {
    let mut structs = Vec::new();
    let mut defines = Vec::new();
    let mut cur: Option<CStruct> = None;
    let mut in_comment = false;
    for line in text.lines() {
        let t = line.trim();
        if in_comment {
            in_comment = !t.contains("*/");
            continue;
        }
        if t.starts_with("/*") {
            in_comment = !t.contains("*/");
            continue;
        }
        if let Some(rest) = t.strip_prefix("#define ") {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            if name != "RDMIX_H" {
                defines.push((name.to_string(), value.trim_start().starts_with('"')));
            }
        } else if let Some(rest) = t.strip_prefix("typedef struct ") {
            let name = rest.trim_end_matches(" {").to_string();
            cur = Some((name, Vec::new()));
        } else if t.starts_with("} ") {
            structs.push(cur.take().expect("} outside a struct"));
        } else if let Some((_, fields)) = cur.as_mut() {
            let decl = t
                .strip_suffix(';')
                .unwrap_or_else(|| panic!("unexpected line in a struct: {t}"));
            let (ty, name) = decl.rsplit_once(' ').expect("type and name");
            let (name, len) = match name.split_once('[') {
                Some((n, l)) => (
                    n,
                    Some(l.trim_end_matches(']').parse().expect("array length")),
                ),
                None => (name, None),
            };
            fields.push(CField {
                ty: ty.to_string(),
                name: name.to_string(),
                len,
            });
        }
    }
    (structs, defines)
}

fn c_program(structs: &[CStruct], defines: &[(String, bool)]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include \"rdmix.h\"\n\n\
         static unsigned char pat(size_t i)\n{\n\tuint32_t x = (uint32_t)i * 0x9E3779B1u;\n\n\
         \tx ^= x >> 15;\n\tx *= 0x85EBCA77u;\n\tx ^= x >> 13;\n\treturn (unsigned char)(x >> 3);\n}\n\n\
         static void fill(void *p, size_t n)\n{\n\tunsigned char *b = p;\n\tsize_t i;\n\n\
         \tfor (i = 0; i < n; i++)\n\t\tb[i] = pat(i);\n}\n\nint main(void)\n{\n",
    );
    for (s, fields) in structs {
        c.push_str(&format!(
            "\t{{\n\t\t{s} v;\n\n\t\tfill(&v, sizeof v);\n\
             \t\tprintf(\"sizeof {s} %zu\\n\", sizeof v);\n"
        ));
        for f in fields {
            let signed = f.ty.starts_with("int");
            let (fmt, cast) = if signed {
                ("%lld", "long long")
            } else {
                ("%llu", "unsigned long long")
            };
            let elems: Vec<(String, String)> = match f.len {
                None => vec![(f.name.clone(), f.name.clone())],
                Some(n) => (0..n)
                    .map(|i| (format!("{}[{i}]", f.name), format!("{}[{i}]", f.name)))
                    .collect(),
            };
            for (label, expr) in elems {
                c.push_str(&format!(
                    "\t\tprintf(\"field {s} {label} %zu %zu {fmt}\\n\", \
                     (size_t)((const char *)&v.{expr} - (const char *)&v), sizeof v.{expr}, \
                     ({cast})v.{expr});\n"
                ));
            }
            if f.len.is_none() {
                // offsetof as well, the standard way (for scalar fields).
                c.push_str(&format!(
                    "\t\tif (offsetof({s}, {n}) != (size_t)((const char *)&v.{n} - (const char *)&v))\n\
                     \t\t\treturn 1;\n",
                    n = f.name
                ));
            }
        }
        c.push_str("\t}\n");
    }
    for (d, is_str) in defines {
        if *is_str {
            c.push_str(&format!("\tprintf(\"const {d} \\\"%s\\\"\\n\", {d});\n"));
        } else {
            c.push_str(&format!(
                "\tprintf(\"const {d} %llu\\n\", (unsigned long long)({d}));\n"
            ));
        }
    }
    c.push_str("\treturn 0;\n}\n");
    c
}

fn compile_and_run(dir: &Path, src: &str) -> String {
    let c = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c, src).expect("write layout.c");
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror", "-pedantic", "-I"])
        .arg(root().join("include"))
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc -std=c11 -Wall -Werror -pedantic failed on a program including include/rdmix.h \
         ({}):\n{}",
        c.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the layout program");
    assert!(
        run.status.success(),
        "the layout program failed (offsetof disagrees)"
    );
    String::from_utf8(run.stdout).expect("utf-8")
}

#[test]
fn c_layout_matches_rust() {
    let text = std::fs::read_to_string(root().join("include/rdmix.h")).expect("include/rdmix.h");
    let (structs, defines) = parse_header(&text);
    let dir = scratch("layout");
    let out = compile_and_run(&dir, &c_program(&structs, &defines));

    let rust = rust_structs();
    let consts = rust_constants();
    let mut failures = Vec::new();
    let c_names: Vec<&str> = structs.iter().map(|(n, _)| n.as_str()).collect();
    for n in rust.keys() {
        if !c_names.contains(n) {
            failures.push(format!("struct {n} is not in include/rdmix.h"));
        }
    }
    let mut c_fields: BTreeMap<String, Vec<(String, usize, usize, String)>> = BTreeMap::new();
    let mut c_sizes = BTreeMap::new();
    let mut c_consts = BTreeMap::new();
    for l in out.lines() {
        let w: Vec<&str> = l.splitn(6, ' ').collect();
        match w[0] {
            "sizeof" => {
                c_sizes.insert(w[1].to_string(), w[2].parse::<usize>().expect("size"));
            }
            "field" => c_fields.entry(w[1].to_string()).or_default().push((
                w[2].to_string(),
                w[3].parse().expect("offset"),
                w[4].parse().expect("size"),
                w[5].to_string(),
            )),
            "const" => {
                let (name, value) = l[6..].split_once(' ').expect("const line");
                c_consts.insert(name.to_string(), value.to_string());
            }
            _ => panic!("unexpected output line {l}"),
        }
    }
    let mut checked_fields = 0;
    for s in &c_names {
        let Some(r) = rust.get(s) else {
            failures.push(format!(
                "struct {s} of include/rdmix.h has no Rust twin in tests/c_header.rs rust_structs"
            ));
            continue;
        };
        if c_sizes[*s] != r.size {
            failures.push(format!(
                "sizeof({s}) is {} in C, {} in Rust",
                c_sizes[*s], r.size
            ));
        }
        let cf = &c_fields[*s];
        let cn: Vec<&str> = cf.iter().map(|f| f.0.as_str()).collect();
        let rn: Vec<&str> = r.fields.iter().map(|f| f.0.as_str()).collect();
        if cn != rn {
            failures.push(format!(
                "{s}: fields differ\n  C:    {cn:?}\n  Rust: {rn:?}"
            ));
            continue;
        }
        for ((name, off, size, cval), (_, rval)) in cf.iter().zip(&r.fields) {
            // The C value must be the pattern at the C offset (native byte order)...
            let mut x: u128 = 0;
            for k in 0..*size {
                let b = pat(off + k) as u128;
                x |= if cfg!(target_endian = "little") {
                    b << (8 * k)
                } else {
                    b << (8 * (size - 1 - k))
                };
            }
            let signed = cval.starts_with('-') || rval.starts_with('-');
            let expect = if signed {
                // Sign-extend from `size` bytes.
                let shift = 128 - 8 * size;
                (((x << shift) as i128) >> shift).to_string()
            } else {
                x.to_string()
            };
            if *cval != expect {
                failures.push(format!(
                    "{s}.{name}: C reads {cval} at offset {off} ({size} bytes), the pattern \
                     there is {expect}"
                ));
            }
            // ... and the Rust field must read the same value.
            if cval != rval {
                failures.push(format!(
                    "{s}.{name}: C (offset {off}, {size} bytes) reads {cval}, Rust reads {rval}: \
                     the layouts differ"
                ));
            }
            checked_fields += 1;
        }
    }
    for (d, _) in &defines {
        match consts.get(d.as_str()) {
            None => failures.push(format!(
                "#define {d} of include/rdmix.h is not mapped to its Rust constant in \
                 tests/c_header.rs rust_constants"
            )),
            Some(v) if c_consts.get(d) != Some(v) => {
                failures.push(format!("{d} is {:?} in C, {v} in Rust", c_consts.get(d)))
            }
            Some(_) => {}
        }
    }
    for d in consts.keys() {
        if !defines.iter().any(|(n, _)| n == d) {
            failures.push(format!("{d} is not in include/rdmix.h"));
        }
    }
    println!(
        "include/rdmix.h: {} structs, {checked_fields} fields (array elements counted), {} \
         constants checked against Rust: {}",
        c_names.len(),
        defines.len(),
        if failures.is_empty() {
            "all equal"
        } else {
            "MISMATCH"
        }
    );
    for (s, size) in &c_sizes {
        println!("  sizeof({s}) = {size}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Build examples/rdmix_read.c against the header (as tests/c_reader.rs does for the VM).
fn build_reader(dir: &Path) -> PathBuf {
    let exe = dir.join("rdmix_read");
    let out = Command::new("gcc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O2",
            "-I",
        ])
        .arg(root().join("include"))
        .arg(root().join("examples/rdmix_read.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc failed on examples/rdmix_read.c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Serve one connection on a fresh abstract socket the way rdmix-server answers a Query (with
/// protocol::send), run the reader on it, and return (its exit status, stdout, stderr, the
/// Query it sent).
fn serve_reader(
    exe: &Path,
    tag: &str,
    answer: &protocol::Message,
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> (i32, String, String, protocol::Message) {
    use nix::sys::socket::{
        accept, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType,
    };
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let name = format!("rdmix/test-c-header-{}/{tag}", std::process::id());
    let l = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(l.as_raw_fd(), &protocol::socket_addr(&name).expect("addr")).expect("bind");
    listen(&l, Backlog::new(4).expect("backlog")).expect("listen");
    let child = Command::new(exe)
        .arg(format!("@{name}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rdmix_read");
    // SAFETY: accept returned a new connected fd that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(accept(l.as_raw_fd()).expect("accept")) };
    let (query, fds) = protocol::recv(conn.as_fd()).expect("receive the reader's Query");
    assert!(fds.is_empty(), "the Query carried fds");
    let fds: Vec<_> = fd.into_iter().collect();
    protocol::send(conn.as_fd(), answer, &fds).expect("send the answer");
    drop(conn);
    let out = child.wait_with_output().expect("wait for rdmix_read");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        query,
    )
}

/// The C reader against shared state made by `SharedState::create` and served over the real
/// protocol code: every value it prints is the one Rust wrote; it refuses a Refuse, a layout of
/// another version and a memfd that is not rdmix's, with a message each.
#[test]
fn c_reader_reads_rust_shared_state_and_refuses_other_layouts() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = scratch("reader");
    let exe = build_reader(&dir);
    let g = shm::Geometry {
        format: 10, // S32_LE
        channels: 6,
        rate: 44_100,
        sample_bits: 32,
        period_size: 333,
        buffer_size: 1332,
        boundary: 1 << 42,
        interleaved: true,
        card: 3,
        device: 7,
        subdevice: 2,
        slave_kind: shm::SLAVE_HW,
    };
    let st = shm::SharedState::create(&g, 4242, "/dev/snd/pcmC0D0p").expect("create shared state");
    let mut want = BTreeMap::new();
    for (k, pid) in [(1u64, 1111u32), (2, 2222), (3, 3333)] {
        let i = st.claim_slot(pid).expect("claim a slot");
        let s = st.slot(i).expect("slot");
        s.state.store(k as u32, Relaxed);
        s.frames_mixed.store(1_000_000_007 * k, Relaxed);
        s.mixed_to.store(5_000_000_011 * k, Relaxed);
        s.start_pos.store(77 * k, Relaxed);
        s.xruns.store(10 + k as u32, Relaxed);
        s.late.store(20 + k as u32, Relaxed);
        s.wakeups.store(30 + k, Relaxed);
        s.early_wakeups.store(40 + k, Relaxed);
        s.volume.store(shm::VOLUME_UNITY / 2 * k as u32, Relaxed);
        s.muted.store(k as u32 % 2, Relaxed);
        s.peak.store(50 + k as u32, Relaxed);
        s.clips.store(60 + k as u32, Relaxed);
        s.format.store(-(k as i32), Relaxed);
        s.channels.store(k as u32, Relaxed);
        s.rate.store(8000 * k as u32, Relaxed);
        s.period_size.store(100 * k, Relaxed);
        s.buffer_size.store(400 * k, Relaxed);
        s.played.store(6_000_000_013 * k, Relaxed);
        s.delay.store(90 + k, Relaxed);
        want.insert(
            pid,
            format!(
                "slot {i} pid {pid} state {k} frames_mixed {} mixed_to {} start_pos {} xruns {} \
                 late {} wakeups {} early_wakeups {} volume {} muted {} peak {} clips {} format \
                 {} channels {k} rate {} period_size {} buffer_size {} played {} delay {}",
                1_000_000_007 * k,
                5_000_000_011 * k,
                77 * k,
                10 + k,
                20 + k,
                30 + k,
                40 + k,
                shm::VOLUME_UNITY / 2 * k as u32,
                k % 2,
                50 + k,
                60 + k,
                -(k as i64),
                8000 * k,
                100 * k,
                400 * k,
                6_000_000_013 * k,
                90 + k
            ),
        );
    }
    // A freed slot is not listed.
    let gone = st.claim_slot(9999).expect("claim");
    st.slot(gone).expect("slot").pid.store(0, Relaxed);
    st.header().clients.store(3, Relaxed);
    st.header().attaches.store(4, Relaxed);

    let status = protocol::Message::Status {
        server_pid: 4242,
        clients: 3,
    };
    let (code, out, err, query) = serve_reader(&exe, "good", &status, Some(st.fd()));
    assert_eq!(code, 0, "rdmix_read failed: {err}");
    assert!(
        matches!(query, protocol::Message::Query { pid } if pid > 0),
        "the reader sent {query:?}"
    );
    let h = st.header();
    let expect_lines = [
        format!(
            "mixer rdmix/test-c-header-{}/good server_pid 4242 live_clients 3",
            std::process::id()
        ),
        format!(
            "layout version {} header_size 256 slot_size {} max_clients {} total_size {} \
             slots_offset {} sum_offset {} sum_len {} clients 3 attaches 4",
            shm::VERSION,
            size_of::<shm::ClientSlot>(),
            shm::MAX_CLIENTS,
            h.total_size,
            h.slots_offset,
            h.sum_offset,
            h.sum_len
        ),
        format!(
            "geometry card 3 device 7 subdevice 2 slave_kind 0 format 10 rate 44100 channels 6 \
             sample_bits 32 period_size 333 buffer_size 1332 boundary {} interleaved 1 \
             server_pid 4242",
            1u64 << 42
        ),
        "device /dev/snd/pcmC0D0p".to_string(),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "rdmix_read printed:\n{out}");
    for (got, exp) in lines.iter().zip(&expect_lines) {
        assert_eq!(*got, exp, "rdmix_read printed:\n{out}");
    }
    let mut slots: Vec<String> = lines[4..].iter().map(|l| l.to_string()).collect();
    slots.sort();
    let mut exp: Vec<String> = want.into_values().collect();
    exp.sort();
    assert_eq!(slots, exp, "the slots rdmix_read printed");
    println!("rdmix_read against Rust-made state:\n{out}");

    // A Refuse is reported with its message.
    let refuse = protocol::Message::Refuse {
        errno: libc::EACCES,
        message: "uid 5 may not join: ipc_perm 0600".into(),
    };
    let (code, _, err, _) = serve_reader(&exe, "refuse", &refuse, None);
    assert!(
        code == 2 && err.contains("refused") && err.contains("uid 5 may not join"),
        "Refuse: status {code}, {err}"
    );

    // Another layout version, and a memfd that is not rdmix's at all.
    for (tag, version, magic, words) in [
        ("v99", 99u32, shm::SHM_MAGIC, "layout v99"),
        ("magic", shm::VERSION, 0x1234_5678u64, "magic"),
    ] {
        let fd = nix::sys::memfd::memfd_create(c"fake", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
        let mut b = vec![0u8; 4096];
        b[0..8].copy_from_slice(&magic.to_ne_bytes());
        b[8..12].copy_from_slice(&version.to_ne_bytes());
        b[12..16].copy_from_slice(&256u32.to_ne_bytes());
        nix::unistd::write(&fd, &b).expect("write fake state");
        use std::os::fd::AsFd;
        let (code, out, err, _) = serve_reader(&exe, tag, &status, Some(fd.as_fd()));
        assert!(
            code == 3 && err.contains(words) && out.is_empty(),
            "{tag}: status {code}, stdout {out:?}, stderr {err}"
        );
        println!("{tag}: refused: {}", err.trim());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
