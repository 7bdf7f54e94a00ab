#!/usr/bin/env bash
# Builds Jaeger v2 (the trace backend of `make demo` and `make e2e`) from the
# Go module proxy, from the tools module (tools/go.mod), into a stable place
# outside the repository:
#
#   $(go env GOPATH)/bin/redisconn-jaeger-<version>   (JAEGER_BIN overrides)
#
# The first build downloads ~320 modules and compiles ~2300 packages: about
# 9 minutes on 2 cores, ~3 GB of module and build cache. It prints its progress
# as it goes. Later runs find the binary and return at once.
#
#   scripts/jaeger.sh           build when missing, then print the binary's path
#   scripts/jaeger.sh --path    only print where the binary is (or would be)
#   scripts/jaeger.sh --check   exit 0 when it is built, 1 when not
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools"
pkg=github.com/jaegertracing/jaeger/cmd/jaeger
version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2; exit }' "$tools/go.mod")"
if [ -z "$version" ]; then
  echo "jaeger: no github.com/jaegertracing/jaeger requirement in tools/go.mod" >&2
  exit 1
fi
bin="${JAEGER_BIN:-$(go env GOPATH)/bin/redisconn-jaeger-$version}"

case "${1:-}" in
  --path) echo "$bin"; exit 0 ;;
  --check) [ -x "$bin" ]; exit $? ;;
  "") ;;
  *) echo "usage: scripts/jaeger.sh [--path|--check]" >&2; exit 2 ;;
esac

if [ -x "$bin" ]; then
  echo "jaeger: $version is built: $bin"
  exit 0
fi

start=$SECONDS
elapsed() { printf '%dm%02ds' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
echo "jaeger: building Jaeger $version ($pkg, from tools/go.mod) into $bin"
echo "jaeger: the first build takes about 9 minutes on 2 cores (~320 modules, ~2300 packages, ~3 GB of Go caches); later runs reuse it"
cd "$tools"

# 1. Modules. `go list` downloads what the build needs and names each module.
echo "jaeger: [1/2] downloading modules"
n=0
list="$(mktemp)"
trap 'rm -f "$list"' EXIT
if ! go list -deps "$pkg" 2> >(
  while IFS= read -r line; do
    case "$line" in
      "go: downloading "*)
        n=$((n + 1))
        if [ $((n % 25)) -eq 1 ]; then echo "jaeger:   $n modules downloaded ($(elapsed)): ${line#go: downloading }"; fi ;;
      *) echo "jaeger:   $line" ;;
    esac
  done
) >"$list"; then
  echo "jaeger: downloading the modules failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))" >&2
  exit 1
fi
total=$(grep -c . "$list" || true)
echo "jaeger:   modules ready ($(elapsed)); $total packages to build"

# 2. Compile, into a temporary file first: an interrupted build leaves nothing
# half-written where the demo and the tests look.
echo "jaeger: [2/2] compiling (progress every 5%)"
mkdir -p "$(dirname "$bin")"
tmp="$bin.tmp.$$"
trap 'rm -f "$list" "$tmp"' EXIT
step=$(( total / 20 )); [ "$step" -gt 0 ] || step=1
built=0
set +e
go build -v -o "$tmp" "$pkg" 2>&1 | while IFS= read -r line; do
  case "$line" in
    *" "*|"#"*) echo "jaeger:   $line" ;;  # messages and errors, not package names
    *)
      built=$((built + 1))
      if [ $((built % step)) -eq 0 ]; then
        echo "jaeger:   $((built * 100 / (total > 0 ? total : 1)))% ($built/$total packages, $(elapsed))"
      fi ;;
  esac
done
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ] || [ ! -x "$tmp" ]; then
  echo "jaeger: the build failed (status $status); see the lines above" >&2
  exit 1
fi
mv -f "$tmp" "$bin"
echo "jaeger: built $bin in $(elapsed)"
