// Package conn gives each role of a platform that shares one Redis a
// right-sized connection manager.
//
// An API process (caching, some pub/sub) uses NewAPI: a pool of 128
// connections. A worker process (thousands of writes per agent run) uses
// NewWorker: a pool of 200, every operation through a FIFO, context-aware
// limiter of 100 permits so that bursts queue in the limiter instead of timing
// out in the pool, and batch operations (BatchRPush, BatchPublish) that carry
// bulk writes in round trips of 50 items. Both embed redis.UniversalClient, so
// the whole go-redis command surface works on them, against a standalone server
// or a Redis Cluster, with TLS and ACL users.
//
// LoadConfig reads the settings from the environment (REDIS_HOST, REDIS_PORT,
// REDIS_PASSWORD, REDIS_MAX_CONNECTIONS, REDIS_WORKER_MAX_CONCURRENT_OPS, ...).
// ConnectionInfo reports the pool, the limiter and the server at any time.
package conn
