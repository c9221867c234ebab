#!/usr/bin/env bash
# Lock handoffs on ZooKeeper beside concord's on etcd, on this machine in one
# run (issue #18): starts a ZooKeeper server in its own process on loopback
# (forceSync=yes, a temporary data directory), runs the go-zookeeper lock
# recipe at 2, 8 and 32 contenders (bench/zookeeper, its own module), then
# BenchmarkLockContended against an etcd server process (fsync on), and
# prints both. Needs ZooKeeper installed (Debian: apt-get install -y
# zookeeper) and takes a few minutes.
#
#   scripts/zookeeper-lock.sh [HANDOFFS]    default 3000 per run
set -euo pipefail

cd "$(dirname "$0")/.."
n=${1:-3000}
zkbin=/usr/share/zookeeper/bin/zkServer.sh
[[ -x $zkbin ]] || { echo "zookeeper-lock: $zkbin missing: apt-get install -y zookeeper" >&2; exit 1; }
bin=$(scripts/etcd-bin.sh "${ETCD_VERSION:-3.7.3}")

dir=$(mktemp -d -t zk.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
forceSync=yes
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok
CFG
mkdir -p "$dir/data" "$dir/log"
ZOO_LOG_DIR=$dir/log ZOO_LOG4J_PROP=WARN,CONSOLE "$zkbin" start-foreground "$dir/zoo.cfg" >"$dir/log/out" 2>&1 &
zkpid=$!
trap 'kill $zkpid 2>/dev/null; wait $zkpid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  if [[ $(echo ruok | (exec 3<>"/dev/tcp/127.0.0.1/$port"; cat >&3; timeout 1 cat <&3) 2>/dev/null) == imok ]]; then
    break
  fi
  sleep 0.2
done

(cd bench/zookeeper && go run . -addr "127.0.0.1:$port" -pid "$zkpid" -n "$n")
CONCORD_ETCD_BIN=$bin go test -run '^$' -bench 'BenchmarkLockContended/fsync=on/server=process/(concord|floor)' \
  -benchtime "${n}x" ./lock | grep '^Benchmark'
