#!/usr/bin/env bash
# Prints the path of an etcd server binary of the version asked for,
# making it first if it is not in the cache yet. No download site is used:
#
#   scripts/etcd-bin.sh 3.5.36     built from the Go module proxy
#   scripts/etcd-bin.sh 3.6.17     (any 3.5.x, 3.6.x or 3.7.x it serves)
#   scripts/etcd-bin.sh 3.4        Debian's etcd-server package (3.4.23 on
#                                  bookworm), unpacked, not installed
#
# 3.5 and later are built by a throwaway module whose main calls
# go.etcd.io/etcd/server/v3/etcdmain.Main(os.Args), after
# `go get go.etcd.io/etcd/server/v3@vVERSION` (`go install ...@vVERSION`
# refuses because of the module's replace directives). A cold build takes
# about 1.5 minutes on 2 cores.
#
# The cache is ${CONCORD_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/concord/etcd},
# one directory per version holding `etcd`; nothing is written to the repo.
# Progress goes to stderr; stdout gets only the path.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 VERSION   (e.g. 3.5.36, 3.6.17, 3.7.3, or 3.4 for Debian's)" >&2
  exit 2
fi
want=${1#v}
cache=${CONCORD_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/concord/etcd}

# version BIN prints the server version BIN reports, e.g. 3.5.36.
version() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: *//p' || true; }

case "$want" in
3.4 | 3.4.*)
  # Debian's package: fetched with apt-get download and unpacked into the
  # cache, so no service is installed or started.
  if [ "$want" = 3.4 ]; then
    cached=$(ls -d "$cache"/3.4.*/etcd 2>/dev/null | sort -V | tail -1 || true)
  else
    cached=$cache/$want/etcd
  fi
  if [ -n "$cached" ] && [ -x "$cached" ]; then
    echo "$cached"
    exit 0
  fi
  if ! command -v apt-get >/dev/null; then
    echo "etcd $want comes from Debian's etcd-server package: no apt-get here" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download needs the package lists; update them once if the
  # package is unknown.
  if ! apt-cache show etcd-server >/dev/null 2>&1; then
    echo "etcd-bin: apt-get update" >&2
    apt-get update -qq >&2
  fi
  (cd "$tmp" && apt-get download -qq etcd-server >&2)
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/root"
  bin=$tmp/root/usr/bin/etcd
  got=$(version "$bin")
  case "$got" in
  "$want" | "$want".*) ;;
  *)
    echo "Debian's etcd-server is $got, not $want" >&2
    exit 1
    ;;
  esac
  mkdir -p "$cache/$got"
  install -m 0755 "$bin" "$cache/$got/etcd"
  echo "etcd-bin: etcd $got from Debian's etcd-server in $cache/$got" >&2
  echo "$cache/$got/etcd"
  ;;
3.[5-9].* | [4-9].*.*)
  dir=$cache/$want
  if [ -x "$dir/etcd" ] && [ "$(version "$dir/etcd")" = "$want" ]; then
    echo "$dir/etcd"
    exit 0
  fi
  command -v go >/dev/null || { echo "etcd-bin: building etcd $want needs Go" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "etcd-bin: building etcd $want from the Go module proxy" >&2
  cat >"$tmp/main.go" <<'EOF'
// Command etcd is the etcd server, built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (
    cd "$tmp"
    # Outside any workspace or the concord module, with the environment's
    # own proxy and checksum settings.
    export GOWORK=off GOFLAGS=-mod=mod
    go mod init concord.local/etcd-bin >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$want" >&2
    go mod tidy >&2
    CGO_ENABLED=0 go build -trimpath -o etcd . >&2
  )
  got=$(version "$tmp/etcd")
  if [ "$got" != "$want" ]; then
    echo "etcd-bin: the build reports version '$got', not $want" >&2
    exit 1
  fi
  mkdir -p "$dir"
  install -m 0755 "$tmp/etcd" "$dir/etcd.tmp"
  mv -f "$dir/etcd.tmp" "$dir/etcd"
  echo "etcd-bin: etcd $want in $dir" >&2
  echo "$dir/etcd"
  ;;
*)
  echo "etcd-bin: unsupported version '$want' (3.4, or a full 3.5.x/3.6.x/3.7.x version)" >&2
  exit 2
  ;;
esac
