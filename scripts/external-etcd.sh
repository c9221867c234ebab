#!/usr/bin/env bash
# Runs concord's tests against a separate 3-process etcd cluster on
# loopback, the way production runs etcd, instead of embedded members.
#
#   scripts/external-etcd.sh [go test args...]     (default: ./...)
#
# Needs an etcd binary: ETCD_BIN (scripts/etcd-bin.sh VERSION prints one
# of any version), or etcd on PATH (Debian/Ubuntu: apt-get install
# etcd-server, which is 3.4). scripts/etcd-matrix.sh runs this for every
# supported version. Ports 23790-23792 (clients)
# and 23800-23802 (peers) on 127.0.0.1; CONCORD_ETCD_PORT moves them.
# Tests that must stop, crash or reconfigure members are skipped there
# (embedtest.RequireEmbedded); packages run one at a time (-p 1), since
# some tests compact the shared cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
if [ -z "$etcd_bin" ]; then
  echo "no etcd binary: set ETCD_BIN=\$(scripts/etcd-bin.sh 3.5.36), or apt-get install etcd-server" >&2
  exit 2
fi
"$etcd_bin" --version | sed -n 1p # sed, not head: etcd must not get SIGPIPE

base=${CONCORD_ETCD_PORT:-23790}
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cluster="" eps=""
for i in 0 1 2; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 + i))"
  eps+="${eps:+,}http://127.0.0.1:$((base + i))"
done
for i in 0 1 2; do
  "$etcd_bin" --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" \
    --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token "concord-$$" \
    --logger zap --log-level error >"$dir/m$i.log" 2>&1 &
  pids+=($!)
done

health() {
  if command -v curl >/dev/null; then
    curl -fsS "http://127.0.0.1:$1/health" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null
  fi
}
# Wait (at most 30 s) until every member reports healthy.
for i in 0 1 2; do
  for n in $(seq 300); do
    case "$(health $((base + i)) || true)" in *'"health":"true"'*) break ;; esac
    if [ "$n" -eq 300 ]; then
      echo "member m$i not healthy after 30s:" >&2
      cat "$dir/m$i.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done
echo "3-member etcd cluster at $eps"

[ $# -gt 0 ] || set -- ./...
CONCORD_TEST_ENDPOINTS=$eps go test -p 1 -count=1 "$@"
