#!/usr/bin/env bash
# Capture and drain on several PostgreSQL majors in one run, one major after
# the other on the same machine, then side by side:
#
#   bash scripts/bench-majors.sh                 # 15 and 18, median of 3 runs each
#   BENCH_MAJORS="15 17 18" bash scripts/bench-majors.sh --runs 5
#
# Each major is a whole `scripts/bench.sh --only capture,drain` (PG_MAJOR=N:
# its own cluster, the extension built for it); the figures are written to
# results/majors-<time>/pg<N>/ and the comparison to
# results/majors-<time>/summary.md, and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
majors=${BENCH_MAJORS:-15 18}
out="results/majors-$(date -u +%Y%m%dT%H%M%SZ)"
for major in $majors; do
    echo "== PostgreSQL $major"
    PG_MAJOR=$major bash scripts/bench.sh --only capture,drain --out "$out/pg$major" "$@"
done
# shellcheck disable=SC2086
python3 - "$out" $majors <<'PY'
import json, sys
out, majors = sys.argv[1], sys.argv[2:]
runs = {m: json.load(open(f"{out}/pg{m}/latest.json")) for m in majors}
def capture(r, clients):
    c = next((c for c in r["capture"] if c["clients"] == clients), None)
    if c is None:
        return "–"
    one = dict(c["watched_tps"]).get(1)
    return f"{one / c['plain_tps']:.2f} of plain INSERT ({one:,.0f} / {c['plain_tps']:,.0f} TPS)"
rows = [
    ("server", lambda r: r["machine"]["postgres"]),
    ("commit", lambda r: r["commit"]),
    ("capture, 2 clients, 1 endpoint", lambda r: capture(r, 2)),
    ("capture, 16 clients, 1 endpoint", lambda r: capture(r, 16)),
    ("drain, 100,000 events × 1 endpoint", lambda r: f"{r['drain']['per_sec']:,.0f}/s (runs {', '.join(f'{x:,.0f}' for x in r['drain']['runs'])})"),
    ("drain: CPU per delivery (of which the worker)", lambda r: f"{r['drain']['cpu_us_per_delivery']:.0f} µs ({r['drain']['worker_cpu_us_per_delivery']:.0f})"),
]
lines = ["| figure | " + " | ".join(f"PostgreSQL {m}" for m in majors) + " |",
         "|---|" + "---|" * len(majors)]
for name, f in rows:
    lines.append(f"| {name} | " + " | ".join(str(f(runs[m])) for m in majors) + " |")
text = "\n".join(lines) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
print(f"written: {out}/summary.md")
PY
