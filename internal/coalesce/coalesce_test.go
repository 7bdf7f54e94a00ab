package coalesce

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/redistest"
)

// permits is a plain counting semaphore for the tests.
type permits chan struct{}

func (p permits) Acquire(ctx context.Context) (time.Duration, error) {
	select {
	case p <- struct{}{}:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p permits) Release() { <-p }

var errClosed = errors.New("closed")

// pipelines sends round trips as pipelines of client, as the Worker's wire
// client does.
func pipelines(client *redis.Client) func(ctx context.Context, cmds []redis.Cmder) error {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		pipe := client.Pipeline()
		for _, cmd := range cmds {
			_ = pipe.Process(ctx, cmd)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
}

func newCoalescer(t *testing.T, client *redis.Client) *Coalescer {
	c := New(Config{
		Send:    pipelines(client),
		Limiter: make(permits, 10), Flushers: 2, MaxBatch: 100, MaxRetries: 3, Closed: errClosed,
	})
	t.Cleanup(func() { c.Close(); c.Wait() })
	return c
}

// The server answers the commands before a QUIT and then closes the
// connection: a command whose reply was read keeps it, one after the cut
// gets the failure and is never sent again. A plain go-redis pipeline, the
// baseline, sets the failure on the answered command too.
func TestAReplyThatWasReadIsKeptWhenTheConnectionFailsLater(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	check := srv.Client(t)
	ctx := context.Background()

	c := newCoalescer(t, client)
	before, after := redis.NewIntCmd(ctx, "incr", "before"), redis.NewIntCmd(ctx, "incr", "after")
	quit := redis.NewStatusCmd(ctx, "quit")
	outcomes := make([]Outcome, 3)
	err := c.DoAll(ctx, []redis.Cmder{before, quit, after}, outcomes)
	if err == nil {
		t.Fatal("the round trip with a QUIT in the middle succeeded")
	}
	if before.Err() != nil || before.Val() != 1 || outcomes[0] != Answered {
		t.Errorf("the command answered before the cut: %v, %v (%v); want its reply 1", before.Val(), before.Err(), outcomes[0])
	}
	if after.Err() == nil || outcomes[2] != Uncertain {
		t.Errorf("the command after the cut: %v (%v); want the failure, uncertain", after.Err(), outcomes[2])
	}
	if n, _ := check.Get(ctx, "after").Int(); n != 0 {
		t.Errorf("the command after the cut ran %d times; the server never read it", n)
	}
	if n, _ := check.Get(ctx, "before").Int(); n != 1 {
		t.Errorf("the answered command ran %d times, want once", n)
	}

	// The baseline: go-redis's own pipeline.
	pipe := client.Pipeline()
	base := pipe.Incr(ctx, "baseline")
	pipe.Process(ctx, redis.NewStatusCmd(ctx, "quit"))
	pipe.Incr(ctx, "baseline:after")
	_, _ = pipe.Exec(ctx)
	n, _ := check.Get(ctx, "baseline").Int()
	t.Logf("plain go-redis pipeline: the answered INCR returned %v (applied %d times)", base.Err(), n)
}

// Callers with deadlines of 0 to 6 ms, one permit, and Close at a random
// moment: every caller returns, nothing stays counted as queued or in
// flight, and the callers refused before their command was written (their
// context ended, or the coalescer closed) are exactly the rejected ones.
func TestCountersAddUpUnderCloseAndCancellation(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()
	for round := 0; round < 20; round++ {
		c := New(Config{
			Send:    pipelines(client),
			Limiter: make(permits, 1), Flushers: 2, MaxBatch: 8, MaxRetries: 3, Closed: errClosed,
		})
		const callers = 200
		var wg sync.WaitGroup
		var mu sync.Mutex
		refused := map[Outcome]int{}
		unsentErrs := 0
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%7)*time.Millisecond)
				defer cancel()
				// Every third caller hands over three commands: it is still
				// one caller.
				cmds := []redis.Cmder{redis.NewIntCmd(ctx, "incr", "counters")}
				if i%3 == 0 {
					cmds = append(cmds, redis.NewIntCmd(ctx, "incr", "counters"), redis.NewIntCmd(ctx, "incr", "counters"))
				}
				outcomes := make([]Outcome, len(cmds))
				err := c.DoAll(ctx, cmds, outcomes)
				mu.Lock()
				defer mu.Unlock()
				refused[outcomes[0]]++
				unsent := false
				for _, o := range outcomes {
					unsent = unsent || o == Unsent
				}
				if unsent && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
					errors.Is(err, errClosed) || errors.Is(err, redis.ErrClosed)) {
					unsentErrs++
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		c.Close()
		wg.Wait()
		c.Wait()
		n := c.Counts()
		if c.queuedArgs != 0 {
			t.Fatalf("round %d: %d arguments still counted as queued", round, c.queuedArgs)
		}
		if n.Queued != 0 || n.Unsent != 0 || n.Sent != 0 {
			t.Fatalf("round %d: after every caller returned: queued %d, unsent %d, sent %d", round, n.Queued, n.Unsent, n.Sent)
		}
		if got := n.RejectedContext + n.RejectedClosed; got != int64(unsentErrs) {
			t.Fatalf("round %d: rejected %d (context %d, closed %d), but %d callers got an error before their command was sent",
				round, got, n.RejectedContext, n.RejectedClosed, unsentErrs)
		}
	}
}

// The counts are of callers, not commands: a caller that hands over 50
// commands (a batch chunk) is one caller queued, waiting for its round
// trip's permit, or refused; the round trips still count their commands.
func TestACallerIsCountedOnceHoweverManyCommandsItHandsOver(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	lim := make(permits, 1)
	c := New(Config{Send: pipelines(client), Limiter: lim, Flushers: 1, MaxBatch: 100, MaxRetries: 3, Closed: errClosed})
	defer func() { c.Close(); c.Wait() }()
	_, _ = lim.Acquire(context.Background()) // the only permit is held: round trips wait for it

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	call := func(n int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmds := make([]redis.Cmder, n)
			for i := range cmds {
				cmds[i] = redis.NewIntCmd(ctx, "rpush", "chunk", i)
			}
			_ = c.DoAll(ctx, cmds, make([]Outcome, n))
		}()
	}
	// The flusher takes the first caller's round trip and waits for the
	// permit; the callers that come after wait in the queue.
	call(50)
	if !redistest.WaitFor(context.Background(), 5*time.Second, func() bool { return c.Counts().Unsent == 1 }) {
		t.Fatalf("counts %+v, want 1 caller (of 50 commands) waiting for its round trip's permit", c.Counts())
	}
	call(50)
	call(1)
	call(1)
	if !redistest.WaitFor(context.Background(), 5*time.Second, func() bool { return c.Counts().Queued == 3 }) {
		t.Fatalf("counts %+v, want 3 callers (of 52 commands) queued", c.Counts())
	}
	if got := c.Counts(); got.Unsent != 1 {
		t.Fatalf("counts %+v, want still 1 caller waiting for a permit", got)
	}
	cancel()
	wg.Wait()
	if got := c.Counts(); got.RejectedContext != 4 || got.Queued != 0 || got.Unsent != 0 || got.RoundTrips != 0 {
		t.Errorf("after the callers left: counts %+v, want 4 rejected for their context, nothing waiting, no round trip", got)
	}

	lim.Release()
	cmds := make([]redis.Cmder, 10)
	for i := range cmds {
		cmds[i] = redis.NewIntCmd(context.Background(), "rpush", "chunk", i)
	}
	if err := c.DoAll(context.Background(), cmds, make([]Outcome, len(cmds))); err != nil {
		t.Fatal(err)
	}
	if got := c.Counts(); got.RoundTrips != 1 || got.Commands != 10 || got.Sent != 0 {
		t.Errorf("after a round trip of one caller's 10 commands: counts %+v, want 1 round trip of 10 commands", got)
	}
	if n, err := srv.Client(t).LLen(context.Background(), "chunk").Result(); err != nil || n != 10 {
		t.Errorf("LLEN chunk = %d, %v; want the 10 items of the one round trip", n, err)
	}
}

// A command that could not be written (nothing listens on the port: the
// dial is refused) goes again after a backoff; meanwhile its round trip
// holds no permit, and a caller whose context ends leaves at once, while
// the only permit is held elsewhere. Its command is not sent again.
func TestACallerLeavesWhileItsCommandWaitsToGoAgain(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1, DialerRetries: 1})
	defer client.Close()
	var sends atomic.Int64
	c := New(Config{
		Send: func(ctx context.Context, cmds []redis.Cmder) error {
			sends.Add(1)
			return pipelines(client)(ctx, cmds)
		},
		Limiter: &firstPermitOnly{}, Flushers: 1, MaxBatch: 10, MaxRetries: 3, Closed: errClosed,
	})
	defer func() { c.Close(); c.Wait() }()

	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		o, err := c.Do(ctx, redis.NewIntCmd(ctx, "incr", "k"))
		if o != Unsent {
			err = fmt.Errorf("outcome %v: %w", o, err)
		}
		result <- err
	}()
	if !redistest.WaitFor(context.Background(), 5*time.Second, func() bool { return sends.Load() == 1 }) {
		t.Fatal("the round trip was never sent")
	}
	time.Sleep(30 * time.Millisecond) // past the backoff: the retry waits for the permit
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the caller got %v, want context.Canceled", err)
		}
	case <-time.After(500 * time.Millisecond):
		t.Fatal("the caller was still waiting 500 ms after its context ended")
	}
	if n := sends.Load(); n != 1 {
		t.Errorf("the command was sent %d times after its caller left", n-1)
	}
	if got := c.Counts(); got.RejectedContext != 1 || got.Unsent != 0 || got.Sent != 0 {
		t.Errorf("counts %+v, want 1 rejected for its context and nothing waiting", got)
	}
}

// firstPermitOnly grants one permit; after it, the only permit is held
// elsewhere and Acquire waits until its context ends.
type firstPermitOnly struct{ used atomic.Bool }

func (p *firstPermitOnly) Acquire(ctx context.Context) (time.Duration, error) {
	if p.used.CompareAndSwap(false, true) {
		return 0, nil
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

func (p *firstPermitOnly) Release() {}

// Round trips in flight follow the backlog, up to Flushers: with every round
// trip held on the wire, 3000 callers' INCRs (6000 arguments queued, a
// backlog for more than four flushers) bring four round trips in flight and
// never a fifth; once they are let go, every INCR is answered and applied
// once, and the idle coalescer runs no flusher.
func TestRoundTripsInFlightFollowTheBacklogUpToFlushers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 8})
	defer client.Close()
	check := srv.Client(t)
	ctx := context.Background()

	send := pipelines(client)
	var inFlight, most atomic.Int64
	gate := make(chan struct{})
	c := New(Config{
		Send: func(ctx context.Context, cmds []redis.Cmder) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-gate
			return send(ctx, cmds)
		},
		Limiter: make(permits, 10), Flushers: 4, MaxBatch: 100, MaxRetries: 3, Closed: errClosed,
	})
	t.Cleanup(func() { c.Close(); c.Wait() })

	const callers = 3000
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := redis.NewIntCmd(ctx, "incr", "k:"+strconv.Itoa(i))
			if _, err := c.Do(ctx, cmd); err != nil || cmd.Val() != 1 {
				failed.Add(1)
			}
		}()
	}
	for end := time.Now().Add(10 * time.Second); most.Load() < 4 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if n := most.Load(); n != 4 {
		t.Errorf("round trips in flight under a backlog of %d callers: %d, want Flushers (4)", callers, n)
	}
	close(gate)
	wg.Wait()
	if n := most.Load(); n > 4 {
		t.Errorf("round trips in flight: %d at most, want at most Flushers (4)", n)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d INCRs failed or did not return 1", n, callers)
	}
	keys := make([]string, callers)
	for i := range keys {
		keys[i] = "k:" + strconv.Itoa(i)
	}
	vals, err := check.MGet(ctx, keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if v != "1" {
			t.Errorf("%s = %v, want 1: every INCR applied once", keys[i], v)
			break
		}
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		running := c.running
		c.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d flushers still run with nothing queued", running)
		}
	}
}

type markKey struct{}

// A round trip tells the hooks that send it, from any of its commands, how
// many of its callers Mark marked and when the oldest of them handed its
// command over; a caller that left before the round trip went out counts
// for neither. A command outside a round trip has none.
func TestARoundTripSaysWhatItsHooksNeedOfIt(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	ctx := context.Background()

	hold := make(chan struct{})
	var (
		mu     sync.Mutex
		rounds []RoundTrip
	)
	c := New(Config{
		Send: func(ctx context.Context, cmds []redis.Cmder) error {
			first, ok := RoundTripOf(cmds[0])
			for _, cmd := range cmds {
				if rt, ok2 := RoundTripOf(cmd); !ok || !ok2 || rt != first {
					t.Errorf("the commands of one round trip say %+v (%v) and %+v (%v)", first, ok, rt, ok2)
				}
			}
			mu.Lock()
			rounds = append(rounds, first)
			mu.Unlock()
			<-hold // the first round trip holds the only flusher: the rest queue
			return pipelines(client)(ctx, cmds)
		},
		Limiter: make(permits, 10), Flushers: 1, MaxBatch: 100, MaxRetries: 3, Closed: errClosed,
		Mark: func(ctx context.Context) bool { return ctx.Value(markKey{}) != nil },
	})
	defer func() { c.Close(); c.Wait() }()
	if _, ok := RoundTripOf(redis.NewIntCmd(ctx, "incr", "k")); ok {
		t.Error("a command of no round trip has a round trip")
	}

	var wg sync.WaitGroup
	do := func(ctx context.Context, key string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Do(ctx, redis.NewIntCmd(ctx, "incr", key)); err != nil && ctx.Err() == nil {
				t.Error(err)
			}
		}()
	}
	queued := func(n int64) {
		t.Helper()
		if !redistest.WaitFor(ctx, 5*time.Second, func() bool { return c.Counts().Queued == n }) {
			t.Fatalf("%d callers queued, want %d", c.Counts().Queued, n)
		}
	}
	do(ctx, "first") // its round trip goes out and is held
	if !redistest.WaitFor(ctx, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(rounds) == 1 }) {
		t.Fatal("the first round trip was never sent")
	}
	marked := context.WithValue(ctx, markKey{}, true)
	leaving, leave := context.WithCancel(marked)
	do(leaving, "left") // the oldest of the second round trip, until it leaves
	queued(1)
	notBefore := time.Now()
	do(ctx, "a")
	queued(2)
	do(marked, "b")
	queued(3)
	do(marked, "c")
	queued(4)
	leave()
	queued(3)
	close(hold)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(rounds) != 2 {
		t.Fatalf("%d round trips, want 2", len(rounds))
	}
	if rounds[0].Marked != 0 {
		t.Errorf("the first round trip has %d marked callers, want 0", rounds[0].Marked)
	}
	if got := rounds[1]; got.Marked != 2 || got.Oldest.Before(notBefore) || got.Oldest.After(time.Now()) {
		t.Errorf("the second round trip says %d marked, oldest at %v; want 2 marked, oldest not before %v (the caller that left was older)",
			got.Marked, got.Oldest, notBefore)
	}
}
