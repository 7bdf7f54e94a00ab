// Package redisotel compares the span hook of package telemetry with
// redisotel's tracing hook (github.com/redis/go-redis/extra/redisotel/v9) on
// the same go-redis client. It is a module of its own so that redisotel never
// enters the library's go.mod; `make bench-go` runs it:
//
//	cd bench/redisotel && go test -run '^$' -bench . -benchmem -count 5
package redisotel
