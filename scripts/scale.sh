#!/usr/bin/env bash
# Runs the scale benchmarks (issue #16) the README's Scale table comes from,
# each against a separate etcd server process (embedtest.OwnProcess) where
# it takes one, and prints their result lines:
#
#   scripts/scale.sh                every run below (about an hour on 2 cores)
#   scripts/scale.sh Waiters        only the runs whose name matches
#
# Runs: ScaleSessions (100 and 10,000 sessions on one client, concord's and
# etcd's), ScaleDiscovery (1,000 and 100,000 instances, 1,000 watchers),
# LockWaiters (10 and 10,000 waiters over 100 sessions, concord's Mutex and
# etcd's), SemaphoreWaiters (limit 10; 10, 1,000 and 10,000 waiters),
# QueueDepth (claim+ack with 100, 10,000 and 100,000 items waiting: ready,
# drained, tombstones, compacted, delayed), Resume (a pub/sub
# subscription's start on topics retaining 100 and 10,000 messages),
# PublishTrimmed (Publish after 100,000 messages trimmed, not compacted),
# Inspect (pubsub.Inspect of a topic retaining 100 and 10,000 messages),
# and the Cluster3 benchmarks (a
# 3-member embedded cluster, fsync on: lock handoffs, queue drain, election
# failover, each beside etcd's recipe and the floor). Each benchmark's doc
# comment says what it measures. Environment: SCALE_RAW names the file for
# the raw output (default: a temp file, named on stderr); ETCD_VERSION
# (default 3.7.3) the server.
set -euo pipefail

cd "$(dirname "$0")/.."
bin=$(scripts/etcd-bin.sh "${ETCD_VERSION:-3.7.3}")
export CONCORD_ETCD_BIN=$bin
raw=${SCALE_RAW:-$(mktemp -t scale.XXXXXX)}
: >"$raw"
echo "scale: etcd $bin; raw output in $raw" >&2
filter=${1:-.}

# name; package; -bench; -benchtime
runs=(
  "ScaleSessions;./concurrency;^BenchmarkScaleSessions\$/^server=process\$;1x"
  "ScaleDiscovery;./discovery;^BenchmarkScaleDiscovery\$/^server=process\$;1x"
  "LockWaiters;./lock;^BenchmarkLockWaiters\$/^server=process\$;2000x"
  "SemaphoreWaiters;./semaphore;^BenchmarkSemaphoreWaiters\$/^server=process\$;1000x"
  "QueueDepth;./queue;^BenchmarkQueueDepth\$/^server=process\$;300x"
  "Resume;./pubsub;^BenchmarkResume\$/^server=process\$;1000x"
  "PublishTrimmed;./pubsub;^BenchmarkPublishTrimmed\$/^server=process\$;2000x"
  "Inspect;./pubsub;^BenchmarkInspect\$/^server=process\$;1000x"
  "Cluster3Lock;./lock;^BenchmarkCluster3Lock\$;300x"
  "Cluster3Drain;./queue;^BenchmarkCluster3Drain\$;400x"
  "Cluster3Failover;./election;^BenchmarkCluster3Failover\$;100x"
)
for r in "${runs[@]}"; do
  IFS=';' read -r name pkg bench bt <<<"$r"
  [[ $name =~ $filter ]] || continue
  echo "scale: $pkg -bench '$bench' -benchtime $bt" >&2
  go test -run '^$' -bench "$bench" -benchtime "$bt" -timeout 90m "$pkg" >>"$raw" 2>&1 || {
    echo "scale: $pkg failed; see $raw" >&2
    tail -20 "$raw" >&2
    exit 1
  }
done
grep '^Benchmark' "$raw"
