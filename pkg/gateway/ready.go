package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// readyFor is how long a readiness probe's verdict is reused by the
// requests that follow it: one JetStream round trip a second at most,
// whatever the request rate.
const readyFor = time.Second

// readiness caches the verdict of Gateway.probe for the request path:
// every /v1/ request is refused with 503 while the gateway is not ready,
// as /readyz says, instead of being published into whatever stream takes
// the command subjects.
type readiness struct {
	probe func(context.Context) error
	log   func(err error)

	mu  sync.Mutex
	at  time.Time
	err error
}

// check returns the last verdict if it is fresh, else probes again. One
// caller probes; the others wait for its verdict.
func (r *readiness) check(ctx context.Context, connected func() error) error {
	if err := connected(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < readyFor {
		return r.err
	}
	r.setLocked(r.probe(ctx))
	return r.err
}

// set records a verdict made elsewhere (by /readyz).
func (r *readiness) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setLocked(err)
}

func (r *readiness) setLocked(err error) {
	if (err == nil) != (r.err == nil) || r.at.IsZero() {
		r.log(err) // a change of state, once
	}
	r.at, r.err = time.Now(), err
}

// errNotConnected is the verdict while NATS is not connected.
var errNotConnected = errors.New("NATS not connected")

func notConnected(status fmt.Stringer) error {
	return fmt.Errorf("%w (%s)", errNotConnected, status)
}
