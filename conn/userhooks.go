package conn

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// userHooks is the place of the hooks added with Worker.AddHook in the
// Worker's chains (see chain.go): outermost, where they see each caller's
// command, of its own type, in its caller's context, as on a plain go-redis
// client. go-redis puts a hook added to a client innermost, below the
// coalescing; userHooks is one hook that runs the user's hooks in the
// order they were added, and picks up hooks added later.
type userHooks struct {
	mu    sync.Mutex // serializes add
	hooks atomic.Pointer[[]redis.Hook]
}

func (u *userHooks) add(h redis.Hook) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var hs []redis.Hook
	if old := u.hooks.Load(); old != nil {
		hs = append(hs, *old...)
	}
	hs = append(hs, h)
	u.hooks.Store(&hs)
}

// chained is the user's hooks wrapped around one next, built once per set
// of hooks.
type chained[F any] struct {
	hooks *[]redis.Hook
	fn    F
}

// compose returns next wrapped in the current hooks, reusing cache while the
// hooks stay the same.
func compose[F any](u *userHooks, cache *atomic.Pointer[chained[F]], next F, wrap func(redis.Hook, F) F) F {
	hs := u.hooks.Load()
	if hs == nil {
		return next
	}
	if c := cache.Load(); c != nil && c.hooks == hs {
		return c.fn
	}
	fn := next
	for i := len(*hs) - 1; i >= 0; i-- {
		fn = wrap((*hs)[i], fn)
	}
	cache.Store(&chained[F]{hooks: hs, fn: fn})
	return fn
}

func (u *userHooks) DialHook(next redis.DialHook) redis.DialHook {
	var cache atomic.Pointer[chained[redis.DialHook]]
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return compose(u, &cache, next, func(h redis.Hook, f redis.DialHook) redis.DialHook {
			if w := h.DialHook(f); w != nil {
				return w
			}
			return f // go-redis keeps next when a hook returns nil
		})(ctx, network, addr)
	}
}

func (u *userHooks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	var cache atomic.Pointer[chained[redis.ProcessHook]]
	return func(ctx context.Context, cmd redis.Cmder) error {
		return compose(u, &cache, next, func(h redis.Hook, f redis.ProcessHook) redis.ProcessHook {
			if w := h.ProcessHook(f); w != nil {
				return w
			}
			return f
		})(ctx, cmd)
	}
}

func (u *userHooks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	var cache atomic.Pointer[chained[redis.ProcessPipelineHook]]
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return compose(u, &cache, next, func(h redis.Hook, f redis.ProcessPipelineHook) redis.ProcessPipelineHook {
			if w := h.ProcessPipelineHook(f); w != nil {
				return w
			}
			return f
		})(ctx, cmds)
	}
}
