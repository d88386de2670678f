# Shared by the benchmark scripts (sourced, not run).

# static_binary ROOT PACKAGE: builds the step as it ships in its image (release, static for
# x86_64-unknown-linux-musl, as `make static` does) and prints the binary's path.
static_binary() {
  local root=$1 package=$2 musl=x86_64-unknown-linux-musl target_dir
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl" >&2
  echo "building $package (release, static $musl, as shipped) ..." >&2
  cargo build --quiet --release --locked --target "$musl" -p "$package" --manifest-path "$root/Cargo.toml"
  target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  echo "$target_dir/$musl/release/$package"
}

# The Python helper the scripts' summaries import (targets.report).
export PYTHONPATH=${BASH_SOURCE[0]%/*}${PYTHONPATH:+:$PYTHONPATH}
