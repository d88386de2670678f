"""Shared by the benchmark scripts: prints each target's line, appends it to make bench's
summary file ("name|value|target|met|MISSED|info", see summary.sh) and exits 1 on a miss when
strict."""
import sys


def report(checks, summary, strict):
    """checks: (name, value, target, met) tuples, met None for an informational row."""
    rows = [(n, v, t, "info" if m is None else ("met" if m else "MISSED")) for n, v, t, m in checks]
    for name, value, target, state in rows:
        print(f"target {name}: {value} (target {target}): {state}")
    if summary:
        with open(summary, "a") as f:
            for row in rows:
                f.write("|".join(row) + "\n")
    missed = any(state == "MISSED" for *_, state in rows)
    sys.exit(1 if missed and strict == "1" else 0)
