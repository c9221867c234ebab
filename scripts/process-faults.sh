#!/usr/bin/env bash
# Soaks the process-level fault suite (faults' TestProcessFaults) against a
# 3-process cluster of one etcd server version: seed after seed of 60 s
# runs, members SIGKILLed and restarted, SIGSTOPped and continued, the whole
# cluster killed and restarted, client processes stalled and cut off,
# leases revoked; every recipe's invariants checked after each run.
#
#   scripts/process-faults.sh VERSION [DURATION]     (default 10m)
#
# e.g. scripts/process-faults.sh 3.5.36 10m. The binary comes from
# scripts/etcd-bin.sh. Totals are printed as "soak: ..." lines; a failing
# run prints its seed and the command that replays it. Other knobs
# (CONCORD_FAULT_RUN, CONCORD_TIME_SCALE) as in RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 VERSION [DURATION]" >&2
  exit 2
fi
bin=$(scripts/etcd-bin.sh "$1")
CONCORD_ETCD_BIN=$bin CONCORD_SOAK=${2:-10m} \
  go test -race -count=1 -run 'TestProcessFaults$' -timeout "${CONCORD_SOAK_TIMEOUT:-3h}" -v ./faults/
