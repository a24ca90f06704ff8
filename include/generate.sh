#!/bin/sh
# Regenerate include/rdmix.h with cbindgen (Debian's package: apt-get install cbindgen), or
# write it to $1 instead (tests/c_header.rs compares the two).
#
# cbindgen runs on src/shm.rs and src/protocol.rs only, through a two-line crate root: the
# whole crate needs `cargo metadata` and exports nothing more. Debian's cbindgen 0.24 parses
# with an older syn that does not know C-string literals (c"...", Rust 1.77), which appear in
# function bodies there; the copies it reads have them as plain strings (nothing exported is
# affected: exported items are types and constants).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/include/rdmix.h}
command -v cbindgen >/dev/null || {
    echo "include/generate.sh: cbindgen not found (apt-get install cbindgen)" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in shm protocol; do
    sed 's/\([^A-Za-z0-9_"]\)c"/\1"/g' "$root/src/$f.rs" > "$tmp/$f.rs"
done
printf 'pub mod shm;\npub mod protocol;\n' > "$tmp/lib.rs"
cbindgen --quiet --config "$root/include/cbindgen.toml" --output "$tmp/rdmix.h" "$tmp/lib.rs"
mv "$tmp/rdmix.h" "$out"
