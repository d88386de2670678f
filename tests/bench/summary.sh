#!/usr/bin/env bash
# Prints the one table `make bench` ends with: every ratio the benchmarks measured, its target
# and whether it is met. Input: the BENCH_SUMMARY file the benchmarks appended to, one line per
# target, "name|value|target|met|MISSED|info". With BENCH_STRICT=1, a missed target exits 1.
#
# Usage: tests/bench/summary.sh SUMMARY_FILE
set -euo pipefail
SUMMARY=${1:?usage: $0 SUMMARY_FILE}
[[ -s $SUMMARY ]] || { echo "no benchmark results in $SUMMARY" >&2; exit 1; }
python3 - "$SUMMARY" "${BENCH_STRICT:-0}" <<'EOF'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
w = [max(len(r[i]) for r in rows + [["what", "measured", "target", "result"]]) for i in range(4)]
line = "-+-".join("-" * n for n in w)
print()
print("== make bench: every ratio against its target (medians of alternating runs, this machine) ==")
print(line)
for r in [["what", "measured", "target", "result"]] + rows:
    print(" | ".join(c.ljust(n) for c, n in zip(r, w)))
    if r[0] == "what":
        print(line)
print(line)
missed = [r[0] for r in rows if r[3] == "MISSED"]
print(f"{len(rows) - len(missed)} of {len(rows)} rows met or informational; missed: {', '.join(missed) or 'none'}")
sys.exit(1 if missed and sys.argv[2] == "1" else 0)
EOF
