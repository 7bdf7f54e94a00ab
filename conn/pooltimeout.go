package conn

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// PoolTimeoutError is the error of an operation that waited longer than
// REDIS_POOL_TIMEOUT for a pooled connection. go-redis's own error says only
// "redis: connection pool timeout"; this one says which manager it was and
// what its pool and limiter looked like at that moment. errors.Is(err,
// redis.ErrPoolTimeout) holds. Nothing was sent.
type PoolTimeoutError struct {
	Role Role
	// InUse of MaxConns pooled connections were in use; Waiting callers were
	// waiting for one.
	InUse, MaxConns, Waiting int
	// LimiterInFlight of LimiterLimit permits were held and LimiterWaiting
	// callers waited for one (Worker; all zero for the API).
	LimiterInFlight, LimiterLimit, LimiterWaiting int64
	// Err is go-redis's error, redis.ErrPoolTimeout.
	Err error
}

func (e *PoolTimeoutError) Error() string {
	msg := fmt.Sprintf("redisconn: %s: %s: %d of %d connections in use, %d callers waiting for one",
		e.Role, e.Err, e.InUse, e.MaxConns, e.Waiting)
	if e.LimiterLimit > 0 {
		msg += fmt.Sprintf("; limiter: %d of %d permits held, %d callers waiting", e.LimiterInFlight, e.LimiterLimit, e.LimiterWaiting)
	}
	return msg
}

// Unwrap returns go-redis's error.
func (e *PoolTimeoutError) Unwrap() error { return e.Err }

// poolTimeoutHook turns go-redis's pool timeout into a PoolTimeoutError.
type poolTimeoutHook struct{ m *manager }

func (h poolTimeoutHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h poolTimeoutHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && errors.Is(err, redis.ErrPoolTimeout) {
			err = h.m.poolTimeout(err)
			cmd.SetErr(err)
		}
		return err
	}
}

func (h poolTimeoutHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && errors.Is(err, redis.ErrPoolTimeout) {
			err = h.m.poolTimeout(err)
			for _, c := range cmds {
				if errors.Is(c.Err(), redis.ErrPoolTimeout) {
					c.SetErr(err)
				}
			}
		}
		return err
	}
}

// poolTimeout is err with the manager's snapshot.
func (m *manager) poolTimeout(err error) error {
	var already *PoolTimeoutError
	if errors.As(err, &already) {
		return err
	}
	s := m.poolStats()
	e := &PoolTimeoutError{
		Role: m.cfg.Role, InUse: int(max(s.Total-s.Idle, 0)), MaxConns: int(s.Max),
		Waiting: int(s.Pending), Err: err,
	}
	if m.limiter != nil {
		li := m.limiterInfo()
		e.LimiterInFlight, e.LimiterLimit, e.LimiterWaiting = li.InFlight, li.Limit, li.Waiting
	}
	return e
}
