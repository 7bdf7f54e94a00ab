#!/usr/bin/env bash
# Builds Toxiproxy's server (the TCP fault proxy of internal/redistest:
# StartToxiproxy) from the Go module proxy into a stable place outside the
# repository:
#
#   $(go env GOPATH)/bin/redisconn-toxiproxy-<version>   (TOXIPROXY_BIN overrides)
#
# It runs `go install github.com/Shopify/toxiproxy/v2/cmd/server@<version>`:
# the build uses Toxiproxy's own go.mod (checked against sum.golang.org), so
# neither the library's go.mod nor tools/go.mod (Jaeger's) changes, and the
# version below is the only pin. The version is stamped into the binary as
# the release builds do, so `GET /version` answers it. The first build on 2
# cores takes 20-30 s with Go's build cache warm, about 2 minutes from empty
# caches (17 modules to download, the standard library to compile); later runs
# find the binary and return at once.
#
#   scripts/toxiproxy.sh           build when missing, then print the binary's path
#   scripts/toxiproxy.sh --path    only print where the binary is (or would be)
#   scripts/toxiproxy.sh --check   exit 0 when it is built, 1 when not
set -euo pipefail
version=v2.5.0
pkg=github.com/Shopify/toxiproxy/v2/cmd/server
gopath="$(go env GOPATH)"
bin="${TOXIPROXY_BIN:-${gopath%%:*}/bin/redisconn-toxiproxy-$version}"

case "${1:-}" in
  --path) echo "$bin"; exit 0 ;;
  --check) [ -x "$bin" ]; exit $? ;;
  "") ;;
  *) echo "usage: scripts/toxiproxy.sh [--path|--check]" >&2; exit 2 ;;
esac

if [ -x "$bin" ]; then
  echo "toxiproxy: $version is built: $bin"
  exit 0
fi

start=$SECONDS
echo "toxiproxy: building Toxiproxy $version ($pkg@$version) into $bin (20 s to 2 min, once)"
# go install names the binary after its package (server): install into a
# temporary GOBIN, then move it under the stable name, so an interrupted build
# leaves nothing half-written where the tests look.
mkdir -p "$(dirname "$bin")"
tmpbin="$(mktemp -d "$(dirname "$bin")/.redisconn-toxiproxy.XXXXXX")"
trap 'rm -rf "$tmpbin"' EXIT
if ! GOBIN="$tmpbin" go install \
  -ldflags="-s -w -X github.com/Shopify/toxiproxy/v2.Version=${version#v}" \
  "$pkg@$version" 2>&1 | sed 's/^/toxiproxy:   /'; then
  echo "toxiproxy: the build failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))" >&2
  exit 1
fi
if [ ! -x "$tmpbin/server" ]; then
  echo "toxiproxy: go install finished but $tmpbin/server is not there" >&2
  exit 1
fi
mv -f "$tmpbin/server" "$bin"
echo "toxiproxy: built $bin in $((SECONDS - start))s"
