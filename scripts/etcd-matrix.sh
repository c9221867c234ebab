#!/usr/bin/env bash
# Runs concord's tests against a 3-process cluster of each supported etcd
# server version (scripts/external-etcd.sh) and prints a table: version,
# packages passed, tests passed, tests skipped as embedded-only (they stop,
# crash or reconfigure members, which a separate cluster does not let them
# do), other skips, failures and the time the run took.
#
#   scripts/etcd-matrix.sh [VERSION...]
#
# Without arguments: Debian's 3.4, the newest 3.5.x and 3.6.x the Go module
# proxy serves, and the 3.7.x concord's go.mod requires. Binaries come from
# scripts/etcd-bin.sh (cached; a cold build takes about 1.5 minutes each).
# The same binary also runs the process-level fault tests
# (CONCORD_ETCD_BIN: faults' TestProcessFaults, short runs) in each pass.
# Each version's full `go test -v` output is kept in
# ${CONCORD_MATRIX_LOGS:-${TMPDIR:-/tmp}/concord-matrix}/VERSION.log.
# Extra `go test` flags go in CONCORD_MATRIX_FLAGS (e.g. -race). Exits 1
# if any version has a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

newest() { # newest v$1.x the module proxy serves, without the v
  go list -m -versions go.etcd.io/etcd/server/v3 | tr ' ' '\n' |
    grep -E "^v$1\.[0-9]+$" | sort -V | tail -1 | sed 's/^v//'
}
if [ $# -eq 0 ]; then
  own=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  set -- 3.4 "$(newest 3.5)" "$(newest 3.6)" "${own#v}"
fi
logs=${CONCORD_MATRIX_LOGS:-${TMPDIR:-/tmp}/concord-matrix}
mkdir -p "$logs"

rows=() status=0
for want in "$@"; do
  bin=$(scripts/etcd-bin.sh "$want")
  version=$("$bin" --version | sed -n 's/^etcd Version: *//p')
  log=$logs/$version.log
  echo "== etcd $version ($bin), log in $log" >&2
  start=$(date +%s)
  # shellcheck disable=SC2086 # CONCORD_MATRIX_FLAGS is split on purpose
  if ETCD_BIN=$bin CONCORD_ETCD_BIN=$bin scripts/external-etcd.sh \
    -v -timeout 30m ${CONCORD_MATRIX_FLAGS:-} ./... >"$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  secs=$(($(date +%s) - start))
  pkgs=$(grep -cE '^ok[[:space:]]' "$log" || true)
  pkgfail=$(grep -cE '^FAIL[[:space:]]+[^[:space:]]' "$log" || true)
  passed=$(grep -cE '^[[:space:]]*--- PASS:' "$log" || true)
  failed=$(grep -cE '^[[:space:]]*--- FAIL:' "$log" || true)
  skipped=$(grep -cE '^[[:space:]]*--- SKIP:' "$log" || true)
  embedded=$(grep -c 'needs an embedded etcd' "$log" || true)
  fails="$failed tests"
  if [ "$pkgfail" -gt 0 ] || [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
    status=1
    names=$(grep -E '^[[:space:]]*--- FAIL:' "$log" | awk '{print $3}' | sort -u | sed -n 1,8p | paste -sd' ' - || true)
    fails="$failed tests, $pkgfail packages (exit $rc)${names:+: $names}"
  fi
  rows+=("| $version | $pkgs/$((pkgs + pkgfail)) | $passed | $embedded | $((skipped - embedded)) | $fails | $((secs / 60))m$((secs % 60))s |")
  echo "${rows[-1]}" >&2
done

echo
echo "| etcd | packages passed | tests passed | skipped: embedded-only | other skips | failures | time |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
