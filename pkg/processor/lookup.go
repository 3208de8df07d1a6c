package processor

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// lookupService answers requests on <lookup root>.<key> with the key's
// state, read from its record without the lock (messages.KeyState). Every
// worker serves it, in one queue group, so one worker answers each
// request. It is how a client learns an answer that is never stored in
// RESULTS (a rejection, a dead letter) after it missed it, and how the
// gateway tells "still in progress" from "never sent".
type lookupService struct {
	p   *Processor
	sub *nats.Subscription
}

func (p *Processor) serveLookups() (*lookupService, error) {
	l := &lookupService{p: p}
	sub, err := p.nc.QueueSubscribe(p.cfg.Topology.Subjects.LookupWildcard(), p.cfg.Topology.Consumer, l.handle)
	if err != nil {
		return nil, fmt.Errorf("processor: serve lookups on %s: %w", p.cfg.Topology.Subjects.LookupWildcard(), err)
	}
	l.sub = sub
	return l, nil
}

// Stop stops answering.
func (l *lookupService) Stop() {
	if l != nil && l.sub != nil {
		_ = l.sub.Drain()
	}
}

func (l *lookupService) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	key, _ := strings.CutPrefix(m.Subject, l.p.cfg.Topology.Subjects.Lookup+".")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_ = m.Respond(l.p.KeyState(ctx, key).Marshal())
}

// KeyState returns what key's record says, as the lookup service answers
// it.
func (p *Processor) KeyState(ctx context.Context, key string) messages.KeyState {
	s := messages.KeyState{Key: key}
	if !messages.ValidKey(key) {
		s.Error = "not a key: " + messages.HeaderMsgID + " values are UUIDs in canonical form"
		return s
	}
	rec, err := p.store.Get(ctx, key)
	if err != nil {
		s.Error = "the record could not be read; ask again"
		p.log.warn(ctx, "lookup: read the record", attrKey, key, attrError, err)
		return s
	}
	st := keyStateOf(key, rec)
	if st.State != messages.KeyStateAbsent && st.State != messages.KeyStateInProgress {
		// What a lookup tells is an answer: like one from a delivery, it goes
		// out only once the replicas have the record (REDIS_WAIT_REPLICAS).
		// Until then the key reads as in progress.
		if err := p.keyReplicated(ctx, key); err != nil {
			return messages.KeyState{Key: key, State: messages.KeyStateInProgress, Kind: st.Kind, Fingerprint: st.Fingerprint}
		}
	}
	return st
}

func keyStateOf(key string, rec *dedupe.Record) messages.KeyState {
	s := messages.KeyState{Key: key, State: messages.KeyStateAbsent}
	if rec == nil {
		return s
	}
	s.Kind, s.Fingerprint, s.Voided = rec.Kind, rec.Fingerprint, rec.Voided
	switch {
	case rec.State == dedupe.StateCompleted:
		s.State = messages.KeyStateCompleted
		res := rec.Answer(false)
		s.Outcome = &res
	case rec.State == dedupe.StateDead && rec.Unknown():
		s.State, s.DeadBefore = messages.KeyStateOutcomeUnknown, rec.DeadBefore
	case rec.State == dedupe.StateDead:
		s.State, s.DeadBefore = messages.KeyStateDeadLettered, rec.DeadBefore
	default:
		s.State = messages.KeyStateInProgress
	}
	return s
}
