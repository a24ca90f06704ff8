//! `rdmix`: inspect and control running mixers, and install the plugin.
//!
//! - `status [--json]`, `top [--interval MS] [--count N] [--json]` (module `status`);
//! - `volume PID|PROGRAM LEVEL`, `mute PID|PROGRAM`, `unmute PID|PROGRAM` (module `volume`);
//! - `install [--default] [--destdir DIR] [--dry-run]`, `uninstall [--destdir DIR]` (module
//!   `install`).

mod install;
mod status;
mod volume;

const USAGE: &str = "usage: rdmix status [--json]
       rdmix top [--interval MS] [--count N] [--json]
       rdmix volume PID|PROGRAM LEVEL      (LEVEL: 0.5, 50%, -6dB; at most 4.0)
       rdmix mute PID|PROGRAM
       rdmix unmute PID|PROGRAM";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let code = match args.first().map(String::as_str) {
        Some("status") => status::status(rest.iter().any(|a| a == "--json")),
        Some("top") => status::top(rest),
        Some("volume") => volume::volume(rest),
        Some("mute") => volume::mute(rest, true),
        Some("unmute") => volume::mute(rest, false),
        Some("install") => install::install(rest),
        Some("uninstall") => install::uninstall(rest),
        _ => {
            eprintln!("{USAGE}\n{}", install::INSTALL_USAGE);
            2
        }
    };
    std::process::exit(code);
}
