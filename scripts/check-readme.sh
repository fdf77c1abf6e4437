#!/usr/bin/env bash
# Builds every Rust example of README.md as an outside crate would: a new
# package whose [dependencies] are exactly the README's "Using it" block
# (with the path pointed at this checkout), one example per code block that
# has a `main`. Fails if a newcomer copying the README would fail to build.
# Also builds the local-actors example with `default-features = false`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${CARGO_TARGET_DIR:-$root/target}/readme-crate"
rm -rf "$work"
mkdir -p "$work/src" "$work/examples"

# The dependencies block: the first ```toml block after "## Using it".
deps="$(awk '/^## Using it/{f=1} f&&/^```toml/{g=1;next} g&&/^```/{exit} g{print}' "$root/README.md")"
if ! grep -q '^\[dependencies\]' <<<"$deps"; then
    echo "README.md: no [dependencies] block under '## Using it'" >&2
    exit 1
fi
deps="${deps//path\/to\/footlight/$root}"
cat >"$work/Cargo.toml" <<EOF
[package]
name = "readme-crate"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

$deps
EOF
echo "fn main() {}" >"$work/src/main.rs"

# Each ```rust block with a main becomes examples/readme_N.rs.
awk -v dir="$work/examples" '
    /^```rust/ { inblock=1; n++; buf=""; next }
    inblock && /^```/ { inblock=0; if (buf ~ /fn main/) { f=dir "/readme_" n ".rs"; printf "%s", buf > f; close(f) } next }
    inblock { buf = buf $0 "\n" }
' "$root/README.md"
count=$(find "$work/examples" -name '*.rs' | wc -l)
if [ "$count" -eq 0 ]; then
    echo "README.md: no Rust example with a main" >&2
    exit 1
fi
echo "== README examples as an outside crate ($count examples)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo build --quiet --manifest-path "$work/Cargo.toml" --examples

# Local actors only: the first example must build without the network.
echo "== the first README example with default-features = false"
sed -i 's|^footlight = { path = "\([^"]*\)" }|footlight = { path = "\1", default-features = false }|' "$work/Cargo.toml"
first="$(find "$work/examples" -name '*.rs' | sort -V | head -n1)"
find "$work/examples" -name '*.rs' ! -path "$first" -delete
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo build --quiet --manifest-path "$work/Cargo.toml" --examples
if CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo tree --manifest-path "$work/Cargo.toml" -e normal | grep -Eq '^.*(quinn|rustls|rcgen|foca) v'; then
    echo "default-features = false still pulls in a network or cluster crate" >&2
    exit 1
fi
echo "README examples build"
