#!/usr/bin/env bash
# Compares the sync step with what a user would run instead, on the same snapshot file, into the
# same SeaweedFS bucket and directory: wall time and peak RSS side by side, runs alternating.
#
#   old:     sha256sum -c  +  aws s3 cp  +  cp      (the old job; no checksum sent, no fsync)
#   rclone:  rclone copy to the bucket  +  cp       (the peer a user would pick)
#   floor:   one bare curl --aws-sigv4 -T PUT to S3 (no directory copy, no check at all)
#   new:     snapshot-sync (verify, S3 multipart with per-part SHA-256, directory with fsync,
#            read-back of both), the static musl release build that ships
#
# Usage, from the repository root:  tests/bench/sync_bench.sh [SIZE_MB] [RUNS]
# Every timed run does the whole work: each one writes to keys (and a directory) no run wrote
# before, so nothing can be skipped as already there, and after each run the script checks that
# it did (the new object has the file's size and did not exist before; the step logged an upload
# of every byte to both stores, and no "already in the store"); a run that skipped fails the
# bench. The table also shows each command's CPU time (user + sys, /usr/bin/time), which other
# load on the machine changes far less than wall time.
#
# SIZE_MB defaults to 512, RUNS to 3 (the table shows medians and min-max). Needs `make testbed`
# (.venv with weed and aws), rclone, curl and /usr/bin/time (`make bench` installs them).
# Targets: new wall <= 0.65x old and <= 0.75x rclone + cp, new peak RSS < 64 MiB. If
# BENCH_SUMMARY names a file, appends one line per target there ("name|value|target|met") for
# make bench's table; with BENCH_STRICT=1 a missed target exits 1.
set -euo pipefail

SIZE_MB=${1:-512}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VAULT_BACKUP_VENV:-$ROOT/.venv}
WEED=$VENV/bin/weed
AWS=$VENV/bin/aws
for tool in "$WEED" "$AWS" /usr/bin/time rclone curl; do
  [[ -x $(command -v "$tool") ]] || { echo "missing $tool (run make testbed, or make bench)" >&2; exit 2; }
done

source "$ROOT/tests/bench/lib.sh"
# SYNC_BENCH_BINARY: a step binary already built, to check the script itself quickly; the timed
# numbers are only comparable with the static build the images ship (the default).
if [[ -n ${SYNC_BENCH_BINARY:-} ]]; then
  SYNC=$SYNC_BENCH_BINARY
else
  SYNC=$(static_binary "$ROOT" snapshot-sync)
fi

need_free_space "${TMPDIR:-/tmp}" $((SIZE_MB * 16 / 1000 + 2))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sync-bench.XXXXXX")
WEED_PID=
cleanup() {
  [[ -n $WEED_PID ]] && stop_server "$WEED_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export AWS_ACCESS_KEY_ID=bench-access-key
export AWS_SECRET_ACCESS_KEY=bench-secret-key
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-credentials
BUCKET=bench
S3_PORT=$(free_port)
mkdir -p "$WORK/weed" "$WORK/ws" "$WORK/pvc-old" "$WORK/pvc-new" "$WORK/pvc-rclone"
"$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=$BUCKET \
  -s3.port="$S3_PORT" -s3.port.grpc="$(free_port)" -master.port="$(free_port)" \
  -master.port.grpc="$(free_port)" -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" \
  -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" -admin.port="$(free_port)" \
  -admin.port.grpc="$(free_port)" -debug.port="$(free_port)" >"$WORK/weed.log" 2>&1 &
WEED_PID=$!
ENDPOINT=http://127.0.0.1:$S3_PORT
for _ in $(seq 1 120); do
  "$AWS" --endpoint-url "$ENDPOINT" s3api head-bucket --bucket $BUCKET >/dev/null 2>&1 && break
  sleep 0.5
done
"$AWS" --endpoint-url "$ENDPOINT" s3api head-bucket --bucket $BUCKET >/dev/null

NAME=vault-20261124T063700Z
echo "making a ${SIZE_MB} MB snapshot with sidecars ..." >&2
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/ws/$NAME.snap"
(cd "$WORK/ws" && sha256sum "$NAME.snap" >"$NAME.snap.sha256" &&
  printf '{"name":"%s"}\n' "$NAME" >"$NAME.snap.json")
BYTES=$(stat -c %s "$WORK/ws/$NAME.snap")

# Each pipeline writes under the key prefix "$label/run$RUN/" of the bucket: a fresh key every run.
old_pipeline() {
  cd "$WORK/ws"
  sha256sum -c --quiet "$NAME.snap.sha256"
  "$AWS" --endpoint-url "$ENDPOINT" s3 cp --only-show-errors "$NAME.snap" "s3://$BUCKET/old/run$RUN/$NAME.snap"
  cp "$NAME.snap" "$WORK/pvc-old/"
}
# rclone 1.60 (Debian): S3 "Other" with path-style requests. This machine sets AWS_CA_BUNDLE,
# which rclone's own HTTP transport refuses ("LoadCustomCABundleError"), so it is unset here;
# --ignore-times as well, although every run copies to a fresh prefix anyway.
rclone_pipeline() {
  cd "$WORK/ws"
  env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
    RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
    rclone copy --ignore-times --config /dev/null "$NAME.snap" "bench:$BUCKET/rclone/run$RUN/"
  cp "$NAME.snap" "$WORK/pvc-rclone/"
}
# The floor: one signed PUT of the whole file, nothing else.
curl_put() {
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -T "$WORK/ws/$NAME.snap" "$ENDPOINT/$BUCKET/floor/run$RUN/$NAME.snap"
}
export -f old_pipeline rclone_pipeline curl_put
export WORK NAME AWS ENDPOINT BUCKET

# object_size KEY: the object's size, or "none" if it does not exist.
object_size() {
  "$AWS" --endpoint-url "$ENDPOINT" s3api head-object --bucket $BUCKET --key "$1" \
    --query ContentLength --output text 2>/dev/null || echo none
}

# measure LABEL CMD... : runs CMD with RUN set, checks that it wrote a fresh S3 key
# ($LABEL/run$RUN/$NAME.snap, absent before) of the file's size, and appends
# "LABEL wall_s rss_kb user_s sys_s" to $WORK/results.
measure() {
  local label=$1 key
  shift
  key="$label/run$RUN/$NAME.snap"
  [[ $(object_size "$key") == none ]] || { echo "$key exists before the run: it would not be timed whole" >&2; exit 1; }
  rm -f "$WORK"/pvc-*/* 2>/dev/null || true
  sync
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.out" "$@" >"$WORK/$label.log" 2>&1 ||
    { cat "$WORK/$label.log" >&2; echo "$label failed" >&2; exit 1; }
  local size
  size=$(object_size "$key")
  [[ $size == "$BYTES" ]] || { echo "$label run $RUN: $key is $size bytes, not $BYTES: the run did not upload the file" >&2; exit 1; }
  echo "$label $(cat "$WORK/time.out")" >>"$WORK/results"
}

# new_did_everything: the step's log shows an upload of every byte to both stores in this run.
new_did_everything() {
  local log=$WORK/new.log store
  if grep -q "already in the store" "$log"; then
    echo "new run $RUN skipped a store (already in the store):" >&2; cat "$log" >&2; exit 1
  fi
  for store in s3 dir; do
    grep "upload started" "$log" | grep -q "store=\"$store\".*bytes=$BYTES" &&
      grep -E "stored and verified|checked by its size only" "$log" | grep -q "store=\"$store\".*bytes=$BYTES" ||
      { echo "new run $RUN: no upload of $BYTES bytes to $store logged:" >&2; cat "$log" >&2; exit 1; }
  done
  cmp -s "$WORK/pvc-new/$NAME.snap" "$WORK/ws/$NAME.snap" ||
    { echo "new run $RUN: the directory copy differs" >&2; exit 1; }
}

for RUN in $(seq 1 "$RUNS"); do
  export RUN
  echo "run $RUN of $RUNS ..." >&2
  measure old bash -c old_pipeline
  measure rclone bash -c rclone_pipeline
  measure floor bash -c curl_put
  measure new env SNAPSHOT_DIR="$WORK/ws" SNAPSHOT_NAME=$NAME BACKUP_DIR="$WORK/pvc-new" \
    S3_ENDPOINT="$ENDPOINT" S3_BUCKET=$BUCKET S3_PREFIX="new/run$RUN" "$SYNC"
  new_did_everything
done

# The new run's copies must be whole (the last run's are still there).
(cd "$WORK/pvc-new" && sha256sum -c --quiet "$NAME.snap.sha256")
"$AWS" --endpoint-url "$ENDPOINT" s3 cp --only-show-errors "s3://$BUCKET/new/run$RUNS/$NAME.snap.sha256" "$WORK/check.sha256"
cmp -s "$WORK/check.sha256" "$WORK/ws/$NAME.snap.sha256"

python3 - "$WORK/results" "$BYTES" "$RUNS" "${BENCH_STRICT:-0}" "${BENCH_SUMMARY:-}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size, runs, strict, summary = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def col(label, i):
    return [float(r[i]) for r in rows if r[0] == label]
names = {
    "old": "old: sha256sum + aws s3 cp + cp",
    "rclone": "rclone copy + cp",
    "floor": "floor: one curl -T PUT (S3 only)",
    "new": "new: snapshot-sync (S3 + dir)",
}
wall = {l: statistics.median(col(l, 1)) for l in names}
print(f"sync: {size / 1e6:.0f} MB ({size / 2**20:.0f} MiB), median of {runs} alternating runs (min-max), 2 shared cores")
print(f"{'':34} {'wall s':>18} {'MB/s':>7} {'peak RSS MiB':>13} {'new / it':>9} {'CPU s (user+sys)':>17}")
for l, name in names.items():
    w, m = col(l, 1), [k / 1024 for k in col(l, 2)]
    cpu = [u + s for u, s in zip(col(l, 3), col(l, 4))]
    print(f"{name:34} {wall[l]:6.2f} ({min(w):.2f}-{max(w):.2f}) {size / 1e6 / wall[l]:7.1f} "
          f"{statistics.median(m):6.1f} ({max(m):.1f}) {wall['new'] / wall[l]:9.2f} "
          f"{statistics.median(cpu):6.2f} ({min(cpu):.2f}-{max(cpu):.2f})")
print("every run uploaded the whole file to a fresh key (checked after each run)")
print("every run (label wall_s rss_kb user_s sys_s):", "; ".join(" ".join(r) for r in rows))
mb = round(size / 1e6)
rss = max(col("new", 2)) / 1024
r_old, r_rclone, r_floor = (wall["new"] / wall[l] for l in ("old", "rclone", "floor"))
checks = [
    (f"sync {mb} MB: step / old pipeline wall", f"{r_old:.2f}x", "<= 0.65x", r_old <= 0.65),
    (f"sync {mb} MB: step / rclone copy + cp wall", f"{r_rclone:.2f}x", "<= 0.75x", r_rclone <= 0.75),
    (f"sync {mb} MB: step / bare curl -T PUT wall", f"{r_floor:.2f}x", "-", None),
    (f"sync {mb} MB: step peak RSS (max)", f"{rss:.1f} MiB", "< 64 MiB", rss < 64),
]
from targets import report
report(checks, summary, strict)
EOF
