package processor

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// TestDecide is the engine's decision table: what each delivery's facts
// come to, with no I/O.
func TestDecide(t *testing.T) {
	t.Parallel()
	cfg := (&Config{MaxDeliver: 3, NakDelay: time.Second, MaxNakDelay: 30 * time.Second, LockedDelay: 250 * time.Millisecond}).WithDefaults()
	const fp = "fp-a"
	completed := &dedupe.Record{State: dedupe.StateCompleted, Fingerprint: fp, Result: &messages.Result{Status: messages.StatusSucceeded}}
	inProgress := func(tries int, unknown bool) *dedupe.Record {
		return &dedupe.Record{State: dedupe.StateInProgress, Fingerprint: fp, Tries: tries, Unknown: unknown}
	}
	ran := func(tries int, unknown bool) dedupe.Begun {
		return dedupe.Begun{Status: dedupe.BeginRun, Record: inProgress(tries, unknown)}
	}
	errTransient, errAmbiguous := TransientError(errors.New("503")), AmbiguousError(errors.New("timeout"))
	reused := keyReused()

	tests := map[string]struct {
		facts facts
		want  verdict
	}{
		"Abandoned": {facts{abandoned: true}, verdict{kind: vAbandon}},
		"Invalid": {facts{reject: &messages.RejectError{Code: messages.CodeInvalidPayload}},
			verdict{kind: vReject, reject: &messages.RejectError{Code: messages.CodeInvalidPayload}}},

		// A locked key is never given up on, however many deliveries.
		"LockedStoredOutcome": {facts{fp: fp, locked: true, peeked: completed}, verdict{kind: vAnswer, answer: completed, replayed: true}},
		"LockedOtherPayload":  {facts{fp: "fp-b", locked: true, peeked: completed}, verdict{kind: vReject, reject: reused}},
		"LockedInProgress": {facts{fp: fp, locked: true, peeked: inProgress(3, true), deliveries: 1},
			verdict{kind: vRetry, delay: 250 * time.Millisecond, reason: "key locked by another worker", busy: true, why: "lock_busy"}},
		"LockedForever": {facts{fp: fp, locked: true, deliveries: 500},
			verdict{kind: vRetry, delay: 30 * time.Second, reason: "key locked by another worker", busy: true, why: "lock_busy"}},
		"LockedPeekFailed": {facts{fp: fp, locked: true, peekErr: errors.New("redis down"), deliveries: 2},
			verdict{kind: vRetry, delay: 500 * time.Millisecond, reason: "key locked by another worker", busy: true, why: "lock_busy"}},
		"StoreDown": {facts{storeErr: errors.New("redis down"), deliveries: 50},
			verdict{kind: vRetry, delay: 30 * time.Second, reason: "redis down", why: "store"}},

		"Replay":    {facts{begun: dedupe.Begun{Status: dedupe.BeginCompleted, Record: completed}}, verdict{kind: vAnswer, answer: completed, replayed: true}},
		"Committed": {facts{begun: dedupe.Begun{Status: dedupe.BeginCommitted, Record: completed}, stored: completed}, verdict{kind: vAnswer, answer: completed}},
		"Conflict":  {facts{begun: dedupe.Begun{Status: dedupe.BeginConflict, Record: completed}}, verdict{kind: vReject, reject: reused}},
		"Condemned": {facts{begun: dedupe.Begun{Status: dedupe.BeginCondemned, Record: &dedupe.Record{DeadEffect: dedupe.EffectUnknown}}},
			verdict{kind: vCondemned, effect: dedupe.EffectUnknown}},

		"ExhaustedCertain": {facts{begun: dedupe.Begun{Status: dedupe.BeginExhausted, Record: inProgress(3, false)}},
			verdict{kind: vDeadLetter, effect: dedupe.EffectNone, reason: "the key has no tries left"}},
		"ExhaustedUnknownResolvedToAnOutcome": {facts{begun: dedupe.Begun{Status: dedupe.BeginExhausted, Record: inProgress(3, true)}, stored: completed},
			verdict{kind: vAnswer, answer: completed}},
		"ExhaustedUnknownConfirmedNone": {facts{begun: dedupe.Begun{Status: dedupe.BeginExhausted, Record: inProgress(3, true)}, confirmedNone: true},
			verdict{kind: vDeadLetter, effect: dedupe.EffectNone, reason: "the key has no tries left"}},
		"ExhaustedUnknownUnresolved": {facts{begun: dedupe.Begun{Status: dedupe.BeginExhausted, Record: inProgress(3, true)}, resolveErr: errors.New("lookup down")},
			verdict{kind: vDeadLetter, effect: dedupe.EffectUnknown, reason: "the key has no tries left"}},

		"Succeeded": {facts{begun: ran(1, false), ran: true, stored: completed}, verdict{kind: vAnswer, answer: completed}},
		// The effect happened and its record may or may not be stored: come
		// back, on the last try too; never a dead letter.
		"CommitFailedOnTheLastTry": {facts{begun: ran(3, false), ran: true, commitErr: errors.New("i/o timeout"), deliveries: 1},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: "commit: i/o timeout", why: "store"}},
		"TransientNotLast": {facts{begun: ran(2, false), ran: true, opErr: errTransient, certain: true},
			verdict{kind: vRetry, delay: 2 * time.Second, settle: settleCertain, reason: errTransient.Error(), why: "retry"}},
		"AmbiguousNotLast": {facts{begun: ran(1, false), ran: true, opErr: errAmbiguous},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: errAmbiguous.Error(), why: "retry"}},
		"RateLimitedWaitsWhatItAsked": {facts{begun: ran(1, false), ran: true, opErr: errTransient, certain: true, retryAfter: 45 * time.Second},
			verdict{kind: vRetry, delay: 45 * time.Second, settle: settleCertain, reason: errTransient.Error(), why: "retry"}},
		"TransientLastTry": {facts{begun: ran(3, false), ran: true, opErr: errTransient, certain: true},
			verdict{kind: vDeadLetter, effect: dedupe.EffectNone, reason: errTransient.Error()}},
		"TransientLastTryAfterAnUnknownOne": {facts{begun: ran(3, true), ran: true, opErr: errTransient, certain: true, resolveErr: errors.New("x")},
			verdict{kind: vDeadLetter, effect: dedupe.EffectUnknown, reason: errTransient.Error()}},
		"AmbiguousLastTryConfirmedNone": {facts{begun: ran(3, false), ran: true, opErr: errAmbiguous, confirmedNone: true},
			verdict{kind: vDeadLetter, effect: dedupe.EffectNone, reason: errAmbiguous.Error()}},
		"AmbiguousLastTryResolvedToAnOutcome": {facts{begun: ran(3, false), ran: true, opErr: errAmbiguous, stored: completed},
			verdict{kind: vAnswer, answer: completed}},
		"AmbiguousLastTryUnresolved": {facts{begun: ran(3, false), ran: true, opErr: errAmbiguous, resolveErr: errors.New("x")},
			verdict{kind: vDeadLetter, effect: dedupe.EffectUnknown, reason: errAmbiguous.Error()}},
		"StoppingOnTheLastTry": {facts{begun: ran(3, false), ran: true, opErr: errTransient, certain: true, stopping: true},
			verdict{kind: vRetry, settle: settleCertain, reason: "stopping: " + errTransient.Error(), why: "stopping"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, decide(&tt.facts, cfg))
		})
	}
}

func TestServerAtLeast(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"2.10.4": true, "2.15.2": true, "3.0.0": true, "2.10.3": false, "2.9.10": false,
		"2.10.4-beta.1": true, "": false, "x.y": false} {
		require.Equal(t, want, serverAtLeast(v, 2, 10, 4), v)
	}
}
