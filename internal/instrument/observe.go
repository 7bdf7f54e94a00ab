package instrument

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// PoolStats are the pool numbers the observable instruments read.
type PoolStats struct {
	Max, Total, Idle, Pending     int64
	Hits, Misses, Waits, Timeouts int64
	// PubSub counts the pub/sub connections open now (outside the pool).
	PubSub int64
}

// LimiterStats are the limiter numbers the observable instruments read.
type LimiterStats struct {
	Limit, InFlight, Waiting        int64
	RejectedContext, RejectedClosed int64
}

// ServerStats are the server numbers the observable instruments read.
type ServerStats struct {
	ConnectedClients, MaxClients, RejectedConnections int64
}

// SentinelStats are the Sentinel numbers the observable instruments read.
type SentinelStats struct {
	Switches, Answering, Quorum int64
}

// Source is where a manager's observable instruments read their numbers, at
// collection time. Limiter, Server and Sentinel may be nil. Server returns false when it
// has nothing to report (the server never answered); it must be cheap, which
// is the caller's job (a cache of INFO, see ServerInfoMaxAge).
type Source struct {
	Pool    func() PoolStats
	Limiter func() LimiterStats
	Server  func(ctx context.Context) (ServerStats, bool)
	// Sentinel returns false when it has nothing to report; like Server, it
	// must be cheap.
	Sentinel func(ctx context.Context) (SentinelStats, bool)
}

// Observe registers the callbacks that read src at every collection, until Close.
func (in *Instruments) Observe(src Source) error {
	var regs []metric.Registration
	reg, err := in.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		p := src.Pool()
		o.ObserveInt64(in.connCount, p.Idle, in.idleOpt)
		o.ObserveInt64(in.connCount, max(p.Total-p.Idle, 0), in.usedOpt)
		o.ObserveInt64(in.connMax, p.Max, in.baseObs())
		o.ObserveInt64(in.connPending, p.Pending, in.baseObs())
		o.ObserveInt64(in.connTimeouts, p.Timeouts, in.baseObs())
		o.ObserveInt64(in.poolHits, p.Hits, in.baseObs())
		o.ObserveInt64(in.poolMisses, p.Misses, in.baseObs())
		o.ObserveInt64(in.poolWaits, p.Waits, in.baseObs())
		o.ObserveInt64(in.pubsub, p.PubSub, in.baseObs())
		return nil
	}, in.connCount, in.connMax, in.connPending, in.connTimeouts, in.poolHits, in.poolMisses, in.poolWaits, in.pubsub)
	if err != nil {
		return err
	}
	regs = append(regs, reg)
	if src.Limiter != nil {
		reg, err := in.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			l := src.Limiter()
			o.ObserveInt64(in.inFlight, l.InFlight, in.baseObs())
			o.ObserveInt64(in.waiting, l.Waiting, in.baseObs())
			o.ObserveInt64(in.limit, l.Limit, in.baseObs())
			o.ObserveInt64(in.rejected, l.RejectedContext, in.rejectedContextOpt)
			o.ObserveInt64(in.rejected, l.RejectedClosed, in.rejectedClosedOpt)
			return nil
		}, in.inFlight, in.waiting, in.limit, in.rejected)
		if err != nil {
			unregister(regs)
			return err
		}
		regs = append(regs, reg)
	}
	if src.Server != nil {
		reg, err := in.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			s, ok := src.Server(ctx)
			if !ok {
				return nil
			}
			o.ObserveInt64(in.serverConnected, s.ConnectedClients, in.baseObs())
			o.ObserveInt64(in.serverMax, s.MaxClients, in.baseObs())
			o.ObserveInt64(in.serverRejected, s.RejectedConnections, in.baseObs())
			return nil
		}, in.serverConnected, in.serverMax, in.serverRejected)
		if err != nil {
			unregister(regs)
			return err
		}
		regs = append(regs, reg)
	}
	if src.Sentinel != nil {
		reg, err := in.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			s, ok := src.Sentinel(ctx)
			if !ok {
				return nil
			}
			o.ObserveInt64(in.sentinelSwitches, s.Switches, in.baseObs())
			o.ObserveInt64(in.sentinelAnswering, s.Answering, in.baseObs())
			o.ObserveInt64(in.sentinelQuorum, s.Quorum, in.baseObs())
			return nil
		}, in.sentinelSwitches, in.sentinelAnswering, in.sentinelQuorum)
		if err != nil {
			unregister(regs)
			return err
		}
		regs = append(regs, reg)
	}
	in.registrationMu.Lock()
	in.registrations = append(in.registrations, regs...)
	in.registrationMu.Unlock()
	return nil
}

func (in *Instruments) baseObs() metric.ObserveOption { return metric.WithAttributeSet(in.base) }

func unregister(regs []metric.Registration) {
	for _, r := range regs {
		_ = r.Unregister()
	}
}
