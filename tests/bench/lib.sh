# Shared by the benchmark scripts (sourced, not run).

# static_binary ROOT PACKAGE: builds the step binaries as they ship in their images, with
# `make static` (release, static for x86_64-unknown-linux-musl, built together as the image has
# them), and prints the path of PACKAGE's.
static_binary() {
  local root=$1 package=$2
  echo "building the static binaries (make static) ..." >&2
  make --no-print-directory -C "$root" static >&2
  echo "$root/target/x86_64-unknown-linux-musl/release/$package"
}

# The Python helper the scripts' summaries import (targets.report).
export PYTHONPATH=${BASH_SOURCE[0]%/*}${PYTHONPATH:+:$PYTHONPATH}

# stop_server PID: SIGTERM, then SIGKILL if it has not exited within 10 s (a SeaweedFS stuck
# retrying a full disk ignored SIGTERM and hung the bench's cleanup).
stop_server() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# need_free_space DIR GB: exits 2 naming DIR unless its filesystem has GB GiB free. A nearly
# full disk both fails the S3 server's writes and slows every writer's block allocation, which
# skews the timings.
need_free_space() {
  local dir=$1 gb=$2 free_kb
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  if ((free_kb < gb * 1024 * 1024)); then
    echo "$dir: $((free_kb / 1024 / 1024)) GiB free, the bench needs at least $gb GiB (set TMPDIR elsewhere or free space)" >&2
    exit 2
  fi
}
