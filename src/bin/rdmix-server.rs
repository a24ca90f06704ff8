//! `rdmix-server`: started by the rdmix plugin on first open; see `asound_module_pcm_rdmix::server`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(asound_module_pcm_rdmix::server::main(&args));
}
