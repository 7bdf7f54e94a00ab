#!/bin/sh
# binsize.sh: the size of a minimal program using conn (LoadConfig + NewWorker)
# next to the same program on plain go-redis, both built with a default
# `go build` (no -ldflags, symbols kept), in a temporary module that points at
# this checkout. Usage: scripts/binsize.sh [path-to-redisconn-checkout]
set -eu
repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
goredis=$(cd "$repo" && go list -m -f '{{.Version}}' github.com/redis/go-redis/v9)

mkdir -p "$tmp/conn" "$tmp/plain"
cat >"$tmp/go.mod" <<MOD
module binsize

go 1.26.0

require (
	github.com/redis/go-redis/v9 $goredis
	github.com/redisconn/redisconn v0.0.0
)

replace github.com/redisconn/redisconn => $repo
MOD
cp "$repo/go.sum" "$tmp/go.sum"
cat >"$tmp/conn/main.go" <<'GO'
package main

import (
	"context"
	"log"

	"github.com/redisconn/redisconn/conn"
)

func main() {
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
}
GO
cat >"$tmp/plain/main.go" <<'GO'
package main

import (
	"context"
	"log"

	"github.com/redis/go-redis/v9"
)

func main() {
	c := redis.NewClient(&redis.Options{Addr: "localhost:6379", PoolSize: 200})
	if err := c.Ping(context.Background()).Err(); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
GO
cd "$tmp"
go mod tidy >/dev/null 2>&1 || true
go build -o conn.bin ./conn
go build -o plain.bin ./plain
c=$(wc -c <conn.bin)
p=$(wc -c <plain.bin)
deps=$(cd "$repo" && go list -deps ./conn | wc -l)
awk -v c="$c" -v p="$p" -v v="$goredis" -v d="$deps" 'BEGIN {
	printf "conn (LoadConfig + NewWorker)   %6.1f MB\n", c/1e6
	printf "plain go-redis %-8s          %6.1f MB\n", v, p/1e6
	printf "ratio                           %6.2fx\n", c/p
	printf "go list -deps ./conn            %6d packages\n", d
}'
