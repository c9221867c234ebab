#!/usr/bin/env bash
# Runs the recipes' benchmarks against a separate etcd server process
# (embedtest.OwnProcess, fsync on) and prints, per benchmark, the server's
# CPU per operation beside its floor's (the least etcd work that operation
# could need, measured on the same server in the same run), their ratio,
# and the server's unary requests, watch requests and watch events per
# operation (issue #18):
#
#   scripts/server-cost.sh            etcd 3.7.3
#   scripts/server-cost.sh 3.5.36     any version scripts/etcd-bin.sh makes
#
# The binary comes from scripts/etcd-bin.sh (built once, then cached). The
# figures are read from the server's own /metrics (process_cpu_seconds_total,
# in 10 ms steps: a benchmark spending under about 0.3 s of server CPU is
# coarse; raise BENCHTIME for finer ones). CPU per operation holds up fairly
# well on a loaded machine; the throughput and latency figures in the raw
# output do not.
#
# Environment: BENCHTIME (e.g. 500x) replaces every package's default;
# BENCHSCALE (e.g. 5) multiplies each package's default instead, for finer
# CPU figures on a quiet machine (the run takes as many times longer);
# ONLY (e.g. semaphore) runs only the packages whose path contains it;
# SERVER_COST_RAW names a file for the raw `go test -bench` output
# (default: a temp file, named on stderr). Takes about 10 minutes on
# 2 cores at the defaults.
#
# A benchmark's floor is the sub-benchmark named like it with one part of
# its name replaced by "floor" (BenchmarkDrain/server=process/floor/consumers=4
# for .../concord/consumers=4), else "floor" beside one of its parents
# (BenchmarkHandoff/server=process/floor for .../concord/limit=4). Ratios
# are given only where both report per the same unit.
set -euo pipefail

cd "$(dirname "$0")/.."
version=${1:-3.7.3}
bin=$(scripts/etcd-bin.sh "$version")
export CONCORD_ETCD_BIN=$bin
raw=${SERVER_COST_RAW:-$(mktemp -t server-cost.XXXXXX)}
: >"$raw"
echo "server-cost: etcd $version ($bin); raw output in $raw" >&2

# package; benchmarks (the part of -bench before the server level); default
# benchtime.
runs=(
  "./lock;^BenchmarkLockContended\$/^fsync=on\$;300x"
  "./semaphore;^(BenchmarkAcquireRelease|BenchmarkHandoff)\$;300x"
  "./election;^BenchmarkFailover\$;100x"
  "./queue;^(BenchmarkEnqueue|BenchmarkDrain|BenchmarkWakeup)\$;300x"
  "./discovery;^(BenchmarkRegister|BenchmarkPropagate)\$;300x"
  "./pubsub;^(BenchmarkLatency|BenchmarkThroughput)\$;1000x"
  "./barrier;^BenchmarkBarrierWake\$;20x"
)
for r in "${runs[@]}"; do
  IFS=';' read -r pkg bench bt <<<"$r"
  [[ -z ${ONLY:-} || $pkg == *"$ONLY"* ]] || continue
  bt=${BENCHTIME:-$((${bt%x} * ${BENCHSCALE:-1}))x}
  echo "server-cost: $pkg -bench '$bench/^server=process\$' -benchtime $bt" >&2
  go test -run '^$' -bench "$bench/^server=process\$" -benchtime "$bt" -timeout 30m "$pkg" >>"$raw" 2>&1 || {
    echo "server-cost: $pkg failed; see $raw" >&2
    tail -20 "$raw" >&2
    exit 1
  }
done

awk '
# name (GOMAXPROCS suffix dropped) -> metrics, from lines "BenchmarkX/... N v unit v unit ..."
/^Benchmark/ {
  name = $1
  sub(/-[0-9]+$/, "", name)
  order[++n] = name
  for (i = 3; i < NF; i += 2) {
    unit = $(i + 1)
    split(unit, u, "/")
    if (u[1] == "server-cpu-ms") { cpu[name] = $i; per[name] = u[2] }
    else if (u[1] == "srv-unary") unary[name] = $i
    else if (u[1] == "srv-watch-reqs") wreqs[name] = $i
    else if (u[1] == "srv-events") events[name] = $i
  }
}
function floorof(name,    k, m, p, cand, j, pre) {
  m = split(name, p, "/")
  for (k = m; k >= 2; k--) {            # one part replaced by floor
    if (p[k] == "floor" || p[k] ~ /^server=/) continue
    cand = ""
    for (j = 1; j <= m; j++) cand = cand (j > 1 ? "/" : "") (j == k ? "floor" : p[j])
    if (cand in cpu) return cand
  }
  for (k = m - 1; k >= 1; k--) {        # floor beside a parent
    pre = p[1]
    for (j = 2; j <= k; j++) pre = pre "/" p[j]
    cand = pre "/floor"
    if (cand != name && (cand in cpu)) return cand
  }
  return ""
}
END {
  printf "%-56s %-17s %9s %9s %7s %9s %9s %9s\n", "benchmark (server=process)", "per", "srv-cpu", "floor", "ratio", "unary", "watch-req", "events"
  for (i = 1; i <= n; i++) {
    name = order[i]
    if (!(name in cpu) || seen[name]++) continue
    f = floorof(name)
    fc = "-"; ratio = "-"
    if (f != "" && name !~ /\/floor(\/|$)/ && per[f] == per[name]) {
      fc = sprintf("%.3f", cpu[f])
      if (cpu[f] > 0) ratio = sprintf("%.2fx", cpu[name] / cpu[f])
    }
    short = name
    sub(/^Benchmark/, "", short)
    sub(/\/server=process/, "", short)
    printf "%-56s %-17s %9.3f %9s %7s %9.2f %9.2f %9.2f\n", short, "ms/" per[name], cpu[name], fc, ratio, unary[name], wreqs[name], events[name]
  }
}' "$raw"
