#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks run, from Debian's
# packages, when it is missing: redis-server, redis-cli (redis-tools),
# prometheus and promtool (prometheus), and Valkey 8 for `make test-valkey`
# (valkey-server, valkey-cli from valkey-tools, valkey-sentinel), side by side
# with redis-server. Prints what it does; changes nothing when everything is
# there.
#
# Debian bookworm has Valkey only in bookworm-backports (8.0.x): on bookworm
# the suite is added to apt's sources (/etc/apt/sources.list.d/
# bookworm-backports.sources, the mirror of the bookworm suite) when apt has
# none. The valkey packages declare no conflict with redis-server or
# redis-tools and share no file with them (valkey-* binaries, /etc/valkey,
# user valkey), and apt-get runs with --no-remove, so nothing of Redis is ever
# removed or replaced. Valkey is optional: when it cannot be installed, deps
# says so and goes on (only `make test-valkey` needs it).
set -euo pipefail

declare -A pkg_of=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
  [prometheus]=prometheus
  [promtool]=prometheus
)
declare -A valkey_pkg_of=(
  [valkey-server]=valkey-server
  [valkey-cli]=valkey-tools
  [valkey-sentinel]=valkey-sentinel
)
missing_of() { # name of an associative array -> its missing packages, sorted
  local -n of=$1
  local bin
  for bin in "${!of[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || echo "${of[$bin]}"
  done | sort -u
}
mapfile -t pkgs < <(missing_of pkg_of)
mapfile -t valkey_pkgs < <(missing_of valkey_pkg_of)
if [ ${#pkgs[@]} -eq 0 ] && [ ${#valkey_pkgs[@]} -eq 0 ]; then
  echo "deps: redis-server, redis-tools, prometheus and valkey (server, tools, sentinel) are installed"
  exit 0
fi
[ ${#pkgs[@]} -gt 0 ] && echo "deps: missing ${pkgs[*]}"
[ ${#valkey_pkgs[@]} -gt 0 ] && echo "deps: missing ${valkey_pkgs[*]} (for make test-valkey)"

# valkey_skip gives up on Valkey with the reason, and keeps going.
valkey_skip() {
  echo "deps: not installing ${valkey_pkgs[*]}: $1; make test-valkey needs them" >&2
  valkey_pkgs=()
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "deps: not root and no sudo; install these Debian packages yourself: ${pkgs[*]} ${valkey_pkgs[*]}" >&2
    [ ${#pkgs[@]} -eq 0 ] && exit 0
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: no apt-get here; install these packages (Debian names): ${pkgs[*]} ${valkey_pkgs[*]}" >&2
  [ ${#pkgs[@]} -eq 0 ] && exit 0
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# Valkey on bookworm: from bookworm-backports, added to the sources once.
valkey_suite=""
if [ ${#valkey_pkgs[@]} -gt 0 ]; then
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}" || true)
  if [ "$codename" = bookworm ]; then
    valkey_suite=bookworm-backports
    # The suites apt is configured with, downloaded or not.
    suites=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | sort -u || true)
    if awk '$2 == "bookworm-backports" { found = 1 } END { exit !found }' <<<"$suites"; then
      echo "deps: bookworm-backports is already in apt's sources"
    else
      mirror=$(awk '$2 == "bookworm" { print $1; exit }' <<<"$suites")
      mirror=${mirror:-http://deb.debian.org/debian/}
      list=/etc/apt/sources.list.d/bookworm-backports.sources
      echo "deps: adding the bookworm-backports suite of $mirror to apt's sources ($list), for Valkey 8"
      {
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$mirror"
        if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
          printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
      } | $sudo tee "$list" >/dev/null
    fi
  fi
fi

echo "deps: apt-get update"
# A suite that cannot be fetched (say bookworm-backports) fails the update but
# not the others: go on, and let the installs below say what is missing.
$sudo apt-get update -qq || echo "deps: apt-get update reported errors (above); going on" >&2
if [ ${#valkey_pkgs[@]} -gt 0 ]; then
  for p in "${valkey_pkgs[@]}"; do
    # (grep reads all: with pipefail, grep -q could fail apt-cache with SIGPIPE)
    if ! apt-cache policy "$p" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null; then
      valkey_skip "apt knows no package $p${valkey_suite:+ (not even in $valkey_suite)}"
      break
    fi
  done
fi

# --no-install-recommends keeps the prometheus package from pulling in extras;
# policy-rc.d stops Debian from starting the packaged services: the tests start
# their own servers on free ports and must not find the default ports taken
# (valkey-server's and redis-server's default port is 6379).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && $sudo rm -f "$policy"' EXIT
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${pkgs[*]} with apt-get"
  $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  for bin in "${!pkg_of[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || { echo "deps: $bin still missing after installing ${pkgs[*]}" >&2; exit 1; }
  done
fi
if [ ${#valkey_pkgs[@]} -gt 0 ]; then
  # pkg/suite takes these packages (and what they need at their version) from
  # the suite and nothing else; --no-remove: apt stops rather than remove a
  # package, so redis-server and redis-tools stay as they are.
  targets=("${valkey_pkgs[@]}")
  [ -n "$valkey_suite" ] && targets=("${valkey_pkgs[@]/%//$valkey_suite}")
  echo "deps: installing ${targets[*]} with apt-get, beside redis-server"
  if $sudo apt-get install -y -qq --no-install-recommends --no-remove "${targets[@]}"; then
    for bin in "${!valkey_pkg_of[@]}"; do
      command -v "$bin" >/dev/null 2>&1 || { echo "deps: $bin still missing after installing ${targets[*]}" >&2; exit 1; }
    done
    echo "deps: $(valkey-server --version)"
  else
    valkey_skip "apt-get install failed"
  fi
fi
echo "deps: done"
