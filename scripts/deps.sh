#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks run, from Debian's
# packages, when it is missing: redis-server, redis-cli (redis-tools),
# prometheus and promtool (prometheus). Prints what it does; changes nothing
# when everything is there.
set -euo pipefail

declare -A pkg_of=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
  [prometheus]=prometheus
  [promtool]=prometheus
)
missing=()
for bin in "${!pkg_of[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${pkg_of[$bin]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: redis-server, redis-tools and prometheus are installed"
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "deps: installing ${pkgs[*]} with apt-get"

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "deps: not root and no sudo; install these Debian packages yourself: ${pkgs[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: no apt-get here; install these packages (Debian names): ${pkgs[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps the prometheus package from pulling in extras;
# policy-rc.d stops Debian from starting the packaged services: the tests start
# their own servers on free ports and must not find the default ports taken.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
for bin in "${!pkg_of[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || { echo "deps: $bin still missing after installing ${pkgs[*]}" >&2; exit 1; }
done
echo "deps: done"
