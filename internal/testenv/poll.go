package testenv

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Poll is the one wait of every harness: it calls check every interval
// until check returns nil, ctx ends, or check returns an error made by
// StopPolling (a condition waiting cannot fix, such as a server that
// exited). Each call of check gets at most 2s of ctx. On timeout Poll
// returns ctx's error with check's last error (the last one ctx's end did
// not cause), so the caller learns what was still missing.
func Poll(ctx context.Context, interval time.Duration, check func(ctx context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error // the last failure not caused by ctx ending mid-check
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if stop, ok := errors.AsType[*stopPollingError](err); ok {
			return stop.err
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// PollUntil is Poll for a condition: it waits until cond reports done,
// and stops at once, returning it, on cond's first error.
func PollUntil(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	return Poll(ctx, interval, func(context.Context) error {
		done, err := cond()
		switch {
		case err != nil:
			return StopPolling(err)
		case !done:
			return errNotYet
		}
		return nil
	})
}

// errNotYet is PollUntil's "not done".
var errNotYet = errors.New("testenv: condition not met yet")

// StopPolling wraps err so that Poll returns it at once.
func StopPolling(err error) error { return &stopPollingError{err: err} }

// stopPollingError wraps an error that ends a poll at once.
type stopPollingError struct{ err error }

func (s *stopPollingError) Error() string { return s.err.Error() }
func (s *stopPollingError) Unwrap() error { return s.err }
