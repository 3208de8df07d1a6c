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
	cfg := (&Config{MaxTries: 3, NakDelay: time.Second, MaxNakDelay: 30 * time.Second, LockedDelay: 250 * time.Millisecond}).WithDefaults()
	const fp = "fp-a"
	completed := &dedupe.Record{State: dedupe.StateCompleted, Fingerprint: fp, Result: &messages.Result{Status: messages.StatusSucceeded}}
	record := func(state dedupe.State, tries int, effect string) *dedupe.Record {
		return &dedupe.Record{State: state, Fingerprint: fp, Tries: tries, MaxTries: 3, Effect: effect}
	}
	ran := func(tries int, effect string) dedupe.Begun {
		return dedupe.Begun{Status: dedupe.BeginRun, Record: record(dedupe.StateRunning, tries, effect)}
	}
	exhausted := func(effect string) dedupe.Begun {
		return dedupe.Begun{Status: dedupe.BeginExhausted, Record: record(dedupe.StateIdle, 3, effect)}
	}
	none, unknown := dedupe.EffectNone, dedupe.EffectUnknown
	errTransient, errAmbiguous := TransientError(errors.New("503")), AmbiguousError(errors.New("timeout"))
	errDeferred := DeferredError(errors.New("charge in progress"), 0)
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
		"LockedInProgress": {facts{fp: fp, locked: true, peeked: record(dedupe.StateRunning, 3, unknown), deliveries: 1},
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
		"DeadLetteredEarlier": {facts{begun: dedupe.Begun{Status: dedupe.BeginDeadLettered, Record: &dedupe.Record{DeadEffect: unknown}}},
			verdict{kind: vDeadLettered, effect: unknown}},
		"ReDriveOfAVoidedKey": {facts{begun: dedupe.Begun{Status: dedupe.BeginVoided, Record: &dedupe.Record{State: dedupe.StateDead, Voided: true}}},
			verdict{kind: vDeadLettered, effect: none, voided: true}},

		// A key out of tries: certain only from its whole history, or from
		// the provider's void.
		"ExhaustedCertain": {facts{begun: exhausted(none)}, verdict{kind: vDeadLetter, effect: none, reason: "the key has no tries left"}},
		"ExhaustedUnknownFoundTheEffect": {facts{begun: exhausted(unknown), asked: true, stored: completed},
			verdict{kind: vAnswer, answer: completed}},
		"ExhaustedUnknownVoided": {facts{begun: exhausted(unknown), asked: true, voided: true},
			verdict{kind: vDeadLetter, effect: none, voided: true, reason: "the key has no tries left"}},
		"ExhaustedUnknownProviderCannotTell": {facts{begun: exhausted(unknown), asked: true, askedErr: errors.New("lookup down")},
			verdict{kind: vDeadLetter, effect: unknown, reason: "the key has no tries left"}},
		"ExhaustedUnknownFoundButCommitFailed": {facts{begun: exhausted(unknown), asked: true, commitErr: errors.New("i/o timeout"), deliveries: 1},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: "commit: i/o timeout", why: "store"}},

		"Succeeded": {facts{begun: ran(1, none), ran: true, stored: completed}, verdict{kind: vAnswer, answer: completed}},
		// The effect happened and its record may or may not be stored: come
		// back, on the last try too; never a dead letter.
		"CommitFailedOnTheLastTry": {facts{begun: ran(3, none), ran: true, commitErr: errors.New("i/o timeout"), deliveries: 1},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: "commit: i/o timeout", why: "store"}},
		"TransientNotLast": {facts{begun: ran(2, none), ran: true, opErr: errTransient},
			verdict{kind: vRetry, delay: 2 * time.Second, settle: settleCertain, reason: errTransient.Error(), why: "retry"}},
		"AmbiguousNotLast": {facts{begun: ran(1, none), ran: true, opErr: errAmbiguous, maybe: true},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: errAmbiguous.Error(), why: "retry"}},
		// Item 1 of the truth issue: the last error transient, an earlier
		// call of the same try ambiguous: the try is unknown.
		"TransientAfterAnAmbiguousCallNotLast": {facts{begun: ran(1, none), ran: true, opErr: errTransient, maybe: true},
			verdict{kind: vRetry, delay: time.Second, settle: settleUnknown, reason: errTransient.Error(), why: "retry"}},
		"RateLimitedWaitsWhatItAsked": {facts{begun: ran(1, none), ran: true, opErr: errTransient, retryAfter: 45 * time.Second},
			verdict{kind: vRetry, delay: 45 * time.Second, settle: settleCertain, reason: errTransient.Error(), why: "retry"}},
		"DeferredGivesTheTryBack": {facts{begun: ran(3, none), ran: true, opErr: errDeferred, deferred: true, deliveries: 2},
			verdict{kind: vRetry, delay: 2 * time.Second, settle: settleDeferred, reason: errDeferred.Error(), why: "deferred"}},
		"TransientLastTry": {facts{begun: ran(3, none), ran: true, opErr: errTransient},
			verdict{kind: vDeadLetter, effect: none, reason: errTransient.Error()}},
		"TransientLastTryAfterAnAmbiguousCall": {facts{begun: ran(3, none), ran: true, opErr: errTransient, maybe: true, asked: true, askedErr: errors.New("x")},
			verdict{kind: vDeadLetter, effect: unknown, reason: errTransient.Error()}},
		"TransientLastTryAfterAnUnknownTry": {facts{begun: ran(3, unknown), ran: true, opErr: errTransient, asked: true, askedErr: errors.New("x")},
			verdict{kind: vDeadLetter, effect: unknown, reason: errTransient.Error()}},
		"AmbiguousLastTryVoided": {facts{begun: ran(3, none), ran: true, opErr: errAmbiguous, maybe: true, asked: true, voided: true},
			verdict{kind: vDeadLetter, effect: none, voided: true, reason: errAmbiguous.Error()}},
		"AmbiguousLastTryFoundTheEffect": {facts{begun: ran(3, none), ran: true, opErr: errAmbiguous, maybe: true, asked: true, stored: completed},
			verdict{kind: vAnswer, answer: completed}},
		"AmbiguousLastTryProviderCannotTell": {facts{begun: ran(3, none), ran: true, opErr: errAmbiguous, maybe: true, asked: true, askedErr: errors.New("x")},
			verdict{kind: vDeadLetter, effect: unknown, reason: errAmbiguous.Error()}},
		"StoppingOnTheLastTry": {facts{begun: ran(3, none), ran: true, opErr: errTransient, stopping: true},
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
