package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/messages"
)

// Log attribute keys.
const (
	attrKey     = "key"
	attrCommand = "command"
	attrSubject = "subject"
	attrAttempt = "attempt"
	attrWait    = "wait"
	attrError   = "error"
)

// While the client waits for the answer to a duplicate publish, it reads the
// result stream again after streamRecheckInterval, doubling up to
// streamRecheckMax.
const (
	streamRecheckInterval = 100 * time.Millisecond
	streamRecheckMax      = 2 * time.Second
	// streamReadTimeout bounds one such read.
	streamReadTimeout = 2 * time.Second
	// lookupTimeout bounds the last lookup of a wait that is over.
	lookupTimeout = 500 * time.Millisecond
)

// Client sends commands to idempay workers and waits for their answers. It
// is safe for concurrent use; share one per NATS connection.
type Client struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg *Config
	log *slog.Logger

	tracer trace.Tracer

	mu      sync.Mutex
	results jetstream.Stream // handle of cfg.ResultStream, once it exists
}

// New returns a Client that publishes on nc. It does no I/O: the streams are
// the workers' to create, so a client may start before them.
func New(nc *nats.Conn, cfg *Config) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: nil *nats.Conn; connect with nats.Connect first")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	return &Client{nc: nc, js: js, cfg: cfg,
		log:    slog.New(tracing.LogHandler(cfg.Logger.Handler())),
		tracer: cfg.TracerProvider.Tracer(tracing.Scope),
	}, nil
}

// Charge sends a payment.charge with key and waits for its answer. It
// returns like Send, with Data decoded from a succeeded answer.
func (c *Client) Charge(ctx context.Context, key string, req messages.ChargeRequest) (*ChargeResult, error) {
	return sendTyped[messages.ChargeData](ctx, c, key, req)
}

// AddToCart sends a cart.add with key and waits for its answer. It returns
// like Send, with Data decoded from a succeeded answer.
func (c *Client) AddToCart(ctx context.Context, key string, req messages.CartAddRequest) (*CartAddResult, error) {
	return sendTyped[messages.CartAddData](ctx, c, key, req)
}

// Refund sends a payment.refund with key (the refund's own key, not the
// charge's) and waits for its answer. It returns like Send, with Data
// decoded from a succeeded answer; a refused refund is a *FailedError with
// Code charge_not_found, charge_not_refundable or refund_exceeds_charge.
func (c *Client) Refund(ctx context.Context, key string, req messages.RefundRequest) (*RefundResult, error) {
	return sendTyped[messages.RefundData](ctx, c, key, req)
}

// sendTyped is Send with the Data of a succeeded answer decoded into D.
func sendTyped[D any](ctx context.Context, c *Client, key string, cmd messages.Command) (*Result[D], error) {
	reply, err := c.Send(ctx, key, cmd)
	if reply == nil {
		return nil, err
	}
	out := &Result[D]{Reply: *reply}
	if reply.Result.Status == messages.StatusSucceeded && hasData(reply.Result.Data) {
		if derr := json.Unmarshal(reply.Result.Data, &out.Data); derr != nil && err == nil {
			err = fmt.Errorf("client: decode %s data: %w", cmd.Kind(), derr)
		}
	}
	return out, err
}

// Send publishes cmd on <Subjects.Command>.<cmd.Kind()> with key in the
// Nats-Msg-Id header and waits for the answer.
//
// Before publishing, Send checks key (ErrInvalidKey), cmd.Validate
// (ErrInvalidPayload) and the body size (ErrPayloadTooLarge); these return a
// nil *Reply and publish nothing.
//
// A publish attempt whose PubAck does not come within PublishTimeout, or
// that finds no stream, is repeated with the same key after a backoff
// (Config.Retry). If no attempt is acknowledged Send returns a nil *Reply
// and ErrPublishUnconfirmed (the command may be stored: send it again with
// the same key) or ErrNoStream (it is not).
//
// Once JetStream has acknowledged the publish, Send returns a non-nil
// *Reply, and the error says what the answer means:
//
//   - nil: succeeded; the operation took effect, once.
//   - a *FailedError (errors.Is(err, ErrFailed)): the operation ran and
//     definitively did not take effect, e.g. Code "card_declined". The
//     outcome is stored; sending the key again returns it again.
//   - a *messages.RejectError (errors.Is(err, ErrKeyReused) and the other
//     rejection sentinels): the message was refused and nothing changed.
//     Reply.Result is the worker's rejection, or zero when the client itself
//     found the key's stored outcome at odds with cmd (ErrKeyReused).
//   - ErrResultTimeout, or the context's error: no answer yet, and
//     Reply.Result is zero. The command is stored and will be processed.
//
// No answer is lost to a race: Send subscribes to result.<key>,
// rejected.<key> and its own Reply-To inbox before it publishes, and after a
// duplicate PubAck it also reads the key's stored outcome from the result
// stream, which holds an outcome published before the subscription.
//
// With Config.Tenant set, key is the tenant's own key and Send is SendFor
// that tenant.
func (c *Client) Send(ctx context.Context, key string, cmd messages.Command) (*Reply, error) {
	if c.cfg.Tenant != "" {
		return c.SendFor(ctx, c.cfg.Tenant, key, cmd)
	}
	return c.sendKey(ctx, key, nil, cmd)
}

// sendKey is Send with key the operation's key and sc, when not nil, the
// tenant it is sent for.
func (c *Client) sendKey(ctx context.Context, key string, sc *scope, cmd messages.Command) (*Reply, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if cmd == nil {
		return nil, &messages.RejectError{Code: messages.CodeInvalidPayload, Message: "nil command"}
	}
	if kind := cmd.Kind(); kind == "" || strings.ContainsAny(kind, " \t\r\n*>") ||
		strings.HasPrefix(kind, ".") || strings.HasSuffix(kind, ".") || strings.Contains(kind, "..") {
		return nil, &messages.RejectError{Code: messages.CodeUnknownCommand,
			Message: fmt.Sprintf("command type %q cannot be a subject", kind)}
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, &messages.RejectError{Code: messages.CodeInvalidPayload, Message: "encode body: " + err.Error()}
	}
	if len(body) > messages.MaxBodySize {
		return nil, &messages.RejectError{Code: messages.CodePayloadTooLarge,
			Message: fmt.Sprintf("body is %d bytes; at most %d are accepted", len(body), messages.MaxBodySize)}
	}

	subject := c.cfg.Topology.Subjects.CommandFor(cmd.Kind())
	ctx, span := c.tracer.Start(ctx, "send "+subject, trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	reply, err := c.send(ctx, key, sc, cmd, subject, body)
	if span.IsRecording() {
		traceReply(span, subject, key, reply, err)
	}
	return reply, err
}

// send publishes and waits; ctx carries the send span.
func (c *Client) send(ctx context.Context, key string, sc *scope, cmd messages.Command, subject string, body []byte) (*Reply, error) {
	// Listen first: an answer published before the subscription exists is
	// gone for core NATS.
	w, err := c.listen(key)
	if err != nil {
		return nil, err
	}
	defer w.close()

	msg := &nats.Msg{
		Subject: subject,
		Data:    body,
		Header:  nats.Header{messages.HeaderReplyTo: []string{w.inbox}},
	}
	sc.setHeaders(msg.Header)
	tracing.Inject(ctx, msg.Header)
	start := time.Now()
	ack, attempts, err := c.publish(ctx, key, msg)
	if err != nil {
		return nil, err
	}
	reply := &Reply{Duplicate: ack.Duplicate, Stream: ack.Stream, Sequence: ack.Sequence, PublishAttempts: attempts}
	if !ack.Duplicate {
		w.acked = time.Now()
	}

	if err := c.await(ctx, w, key, cmd, reply); err != nil {
		return reply, err
	}
	reply.Latency = time.Since(start)
	return reply, ResultError(&reply.Result)
}

// traceReply records on the send span what came of it: the answer, or an
// error when there is none (a failed or rejected answer is an answer).
func traceReply(span trace.Span, subject, key string, reply *Reply, err error) {
	span.SetAttributes(tracing.Attributes(tracing.Send, subject, key, "")...)
	if reply == nil || reply.Result.Status == "" {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return
	}
	span.SetAttributes(tracing.AttrStatus.String(string(reply.Result.Status)),
		tracing.AttrReplayed.Bool(reply.Result.Replayed), attrDuplicate.Bool(reply.Duplicate))
	if reply.Result.Code != "" {
		span.SetAttributes(tracing.AttrCode.String(reply.Result.Code))
	}
}

const attrDuplicate = attribute.Key("idempay.duplicate")

// Status returns the outcome stored for key: succeeded or failed, possibly
// a replay. It reads the result stream and, when the stream has no outcome
// for key (the workers' RESULTS_MAX_AGE may be shorter than RESULT_TTL), the
// key's record through the workers' lookup service. It returns ErrNotFound
// when there is none (never sent, still in flight, rejected, dead-lettered,
// or expired), and ErrInvalidKey for a malformed key.
//
// With Config.Tenant set, key is the tenant's own key: Status is StatusFor
// that tenant.
func (c *Client) Status(ctx context.Context, key string) (*messages.Result, error) {
	if c.cfg.Tenant != "" {
		return c.StatusFor(ctx, c.cfg.Tenant, key)
	}
	return c.status(ctx, key)
}

func (c *Client) status(ctx context.Context, key string) (*messages.Result, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	res, found, err := c.storedOutcome(ctx, key)
	if err != nil {
		return nil, err
	}
	if found {
		return &res, nil
	}
	// The results stream may keep outcomes for less than RESULT_TTL
	// (RESULTS_MAX_AGE): the key's record, read by key, still has it.
	st, err := c.Lookup(ctx, key)
	switch {
	case errors.Is(err, ErrNoLookup):
		return nil, ErrNotFound
	case err != nil:
		return nil, err
	case st.State == messages.KeyStateCompleted && st.Outcome != nil:
		return st.Outcome, nil
	}
	return nil, ErrNotFound
}

// waiter holds the subscriptions of one Send.
type waiter struct {
	inbox    string
	result   string
	rejected string
	ch       chan *nats.Msg
	subs     []*nats.Subscription
	// acked is when the PubAck of a publish that stored a new message came
	// (zero for a duplicate): that message was stored at or before it.
	acked time.Time
}

func (c *Client) listen(key string) (*waiter, error) {
	w := &waiter{
		inbox:    c.nc.NewInbox(),
		result:   c.cfg.Topology.Subjects.ResultFor(key),
		rejected: c.cfg.Topology.Subjects.RejectedFor(key),
		// A handful of answers at most reach one Send: the worker's, a
		// replay, a second worker's after a redelivery.
		ch: make(chan *nats.Msg, 16),
	}
	for _, subj := range []string{w.inbox, w.result, w.rejected} {
		sub, err := c.nc.ChanSubscribe(subj, w.ch)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("client: subscribe %s: %w", subj, err)
		}
		w.subs = append(w.subs, sub)
	}
	return w, nil
}

func (w *waiter) close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe() // fails only on a closed connection, which frees it anyway
	}
}

// await fills reply with the answer for key, or returns why there is none.
//
// What counts as the answer:
//   - on the inbox: the worker's answer to this very message - an outcome
//     that does not contradict cmd, or a rejection of this message (one
//     carrying another message's fingerprint is not ours: ignored);
//   - on result.<key> or in the result stream: the key's outcome, if it does
//     not contradict cmd (see sameCommand);
//   - on rejected.<key>: a rejection carrying cmd's own fingerprint
//     (contract v1.2: refusals name their message) - never another
//     message's refusal of the same key. A rejection without a fingerprint
//     (a worker before v1.2) counts only after a duplicate PubAck, when
//     this message never reaches a worker and the rejection is that of the
//     earlier message holding the key.
//   - from the workers' lookup service, after a reconnect and before giving
//     up: the key's record (a rejection is never stored in RESULTS, so a
//     refusal published while the connection was down is learnt there).
func (c *Client) await(ctx context.Context, w *waiter, key string, cmd messages.Command, reply *Reply) error {
	// A duplicate of a later publish attempt may be of this Send's own
	// earlier attempt, whose PubAck was lost: that message carries our
	// inbox and is waited for like any answer. Only a first attempt's
	// duplicate is surely another message's.
	othersMessage := reply.Duplicate && reply.PublishAttempts == 1
	wait := c.cfg.ResultTimeout
	if othersMessage && c.cfg.DuplicateWait > 0 {
		wait = c.cfg.DuplicateWait
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()

	// After a duplicate PubAck the earlier message may have been answered
	// before we subscribed: its outcome is then in the result stream. The
	// stream stores a message a moment after the server routes it to core
	// subscribers, and in a cluster our interest takes a moment to spread,
	// so the read is repeated, less and less often, while we wait; an
	// outcome published after the subscription arrives on w.ch anyway.
	var recheck <-chan time.Time
	interval := streamRecheckInterval
	deadline := time.Now().Add(wait)
	checkStream := func() (bool, error) {
		recheck = time.After(interval)
		interval = min(2*interval, streamRecheckMax)
		// Each read is bounded on its own: a request lost while the stream
		// elects a leader, the connection moves or the server stops would
		// otherwise hold the wait (and its timer) until ctx ends, which may
		// lie far past this wait. A read gets streamReadTimeout, and never
		// more than the wait has left.
		rctx, cancel := context.WithDeadline(ctx, minTime(deadline, time.Now().Add(streamReadTimeout)))
		res, found, err := c.storedOutcome(rctx, key)
		cancel()
		if err != nil {
			c.log.WarnContext(ctx, "client: read stored outcome; trying again", attrKey, key, attrError, err)
			return false, nil
		}
		if !found {
			return false, nil
		}
		return true, c.accept(reply, res, SourceResultStream, cmd)
	}
	fp := fingerprintOf(cmd)
	// lookup asks the workers what the key's record says, for an answer
	// that RESULTS never holds (a refusal, a dead letter) and this Send
	// may have missed.
	lookup := func() (bool, error) {
		// Bounded like a stream read, and by lookupTimeout once the wait
		// is over: a worker answers a lookup in milliseconds.
		lctx, cancel := context.WithDeadline(ctx, minTime(maxTime(deadline, time.Now().Add(lookupTimeout)), time.Now().Add(streamReadTimeout)))
		defer cancel()
		st, err := c.Lookup(lctx, key)
		if err != nil {
			return false, nil
		}
		res, ok := answerOf(st, cmd, fp, w.acked)
		if !ok {
			return false, nil
		}
		reply.Result, reply.Source = res, SourceLookup
		return true, ResultError(&res)
	}
	// covers reports whether a dead_lettered notice heard on rejected.<key>
	// is this Send's answer. A Send that stored a new message must not
	// take a dead letter decided before that message for its own: a message
	// stored past the dead letter's fence runs again (a re-drive), and may
	// take effect. A notice decided after the message was stored covers it;
	// an earlier one does if the key's dead letter still covers messages
	// stored when this one was (the lookup's dead_before). The fault
	// explorer (seed 718) found the gateway's publish, repeated on a hung
	// link until it landed past the fence, told the dead letter of the
	// key's previous message while its own charged.
	covers := func(n messages.Result) bool {
		if w.acked.IsZero() || n.Code != messages.CodeDeadLettered || !n.ProcessedAt.Before(w.acked) {
			return true
		}
		lctx, cancel := context.WithTimeout(ctx, streamReadTimeout)
		defer cancel()
		st, err := c.Lookup(lctx, key)
		return err == nil && st.State == messages.KeyStateDeadLettered && coveredBy(st, w.acked)
	}

	if reply.Duplicate {
		if done, err := checkStream(); done {
			return err
		}
		// The earlier message with the key may have been refused or
		// dead-lettered: that is never in RESULTS, and we may not have been
		// listening (our own first attempt's answer, lost with its PubAck).
		if done, err := lookup(); done {
			return err
		}
		if othersMessage && c.cfg.DuplicateWait < 0 {
			return fmt.Errorf("%w (key %s: a duplicate of message %d, which has no stored outcome yet)", ErrResultTimeout, key, reply.Sequence)
		}
	}
	// An answer published while the connection was down (its server died,
	// the client moved to another) never reaches the subscriptions, which
	// are made again only on reconnect. After a reconnect the outcome is
	// read from the result stream, which keeps it.
	reconnected := c.nc.StatusChanged(nats.CONNECTED)
	defer c.nc.RemoveStatusListener(reconnected)
	for {
		select {
		case <-reconnected:
			interval = streamRecheckInterval
			if done, err := checkStream(); done {
				return err
			}
			if done, err := lookup(); done {
				return err
			}
		case m := <-w.ch:
			res, err := messages.DecodeResult(m.Data)
			if err != nil || res.Key != key {
				c.log.WarnContext(ctx, "client: ignoring an undecodable or foreign answer",
					attrKey, key, attrSubject, m.Subject, attrError, err)
				continue
			}
			switch m.Subject {
			case w.inbox:
				if res.Status.IsOutcome() {
					if sameCommand(cmd, res) != nil {
						c.log.WarnContext(ctx, "client: ignoring an outcome of another command on this Send's inbox", attrKey, key)
						continue
					}
				} else if !ownRejection(res, fp, true) {
					c.log.WarnContext(ctx, "client: ignoring another message's refusal on this Send's inbox", attrKey, key, "code", res.Code)
					continue
				}
				return c.settle(w, reply, res, SourceReplyTo, cmd, fp)
			case w.result:
				if res.Status.IsOutcome() {
					return c.accept(reply, res, SourceResultSubject, cmd)
				}
			case w.rejected:
				if res.Status == messages.StatusRejected && ownRejection(res, fp, reply.Duplicate) {
					if !covers(res) {
						c.log.InfoContext(ctx, "client: ignoring a dead letter decided before this Send's message was stored; waiting for its own answer", attrKey, key)
						continue
					}
					return c.settle(w, reply, res, SourceRejectedSubject, cmd, fp)
				}
			}
		case <-recheck:
			if done, err := checkStream(); done {
				return err
			}
		case <-timer.C:
			if done, err := lookup(); done {
				return err
			}
			return fmt.Errorf("%w (key %s, after %s)", ErrResultTimeout, key, wait)
		case <-ctx.Done():
			return fmt.Errorf("client: wait for the answer to %s: %w", key, context.Cause(ctx))
		}
	}
}

// settle makes res, from src, this Send's answer - unless res is
// outcome_unknown and an answer that settles the key is already queued
// behind it: the key's outcome, or this message's dead_lettered (contract
// v1.2: the resolver publishes it once the provider has voided the key).
// A Send reads its queue late when it waited on something else first (a
// lookup of a duplicate, from workers cut off from NATS), and the explorer
// found one answering the outcome_unknown of its queue's head while the
// resolver's dead_lettered, published after it, sat behind it: a client
// told "not known yet" of a key already settled, waiting for a resolution
// it had been sent.
func (c *Client) settle(w *waiter, reply *Reply, res messages.Result, src Source, cmd messages.Command, fp string) error {
	for res.Code == messages.CodeOutcomeUnknown {
		var m *nats.Msg
		select {
		case m = <-w.ch:
		default:
			reply.Result, reply.Source = res, src
			return nil
		}
		later, err := messages.DecodeResult(m.Data)
		if err != nil || later.Key != res.Key {
			continue
		}
		switch {
		case later.Status.IsOutcome() && (m.Subject == w.result || m.Subject == w.inbox) && sameCommand(cmd, later) == nil:
			if m.Subject == w.inbox {
				return c.accept(reply, later, SourceReplyTo, cmd)
			}
			return c.accept(reply, later, SourceResultSubject, cmd)
		case later.Code == messages.CodeDeadLettered && (m.Subject == w.rejected || m.Subject == w.inbox) && ownRejection(later, fp, reply.Duplicate) &&
			!later.ProcessedAt.Before(res.ProcessedAt):
			// Only a dead letter decided after the unknown settles it: an
			// older message's dead_lettered of the same body, arriving
			// late, says nothing of what the later message may have done.
			res, src = later, SourceRejectedSubject
			if m.Subject == w.inbox {
				src = SourceReplyTo
			}
		}
	}
	reply.Result, reply.Source = res, src
	return nil
}

// ownRejection reports whether a rejection of the key is this Send's own:
// it carries cmd's fingerprint fp (contract v1.2). A rejection without one
// (a worker before v1.2, or a refusal of a body that did not validate) is
// taken only where no other message's can arrive: legacy says where.
func ownRejection(res messages.Result, fp string, legacy bool) bool {
	if res.Fingerprint != "" && fp != "" {
		return res.Fingerprint == fp
	}
	return legacy
}

// answerOf turns what the lookup service says of the key into this Send's
// answer, when it is one: the key's outcome (if it does not contradict
// cmd), its dead letter (if it is cmd's: the fingerprint matches), or
// idempotency_key_reused when the key's record is bound to another
// command or payload, whatever its state: a worker refuses every message
// of another body while the record exists, so this one's answer can only
// be that refusal (the fault explorer found the gateway answering 202, and
// then the other body's outcome, to a re-use whose refusal was slow). A
// key still in progress for cmd, or unknown to the workers, is no answer
// yet.
//
// acked, when not zero, is when a new message of this Send was stored at
// the latest: a dead letter that no longer covers messages stored then
// (coveredBy) is another message's, and this one may run again.
func answerOf(st messages.KeyState, cmd messages.Command, fp string, acked time.Time) (messages.Result, bool) {
	if st.Fingerprint != "" && fp != "" && (st.Fingerprint != fp || st.Kind != cmd.Kind()) {
		return messages.Result{Key: st.Key, Kind: cmd.Kind(), Status: messages.StatusRejected, Code: messages.CodeKeyReused, Fingerprint: fp,
			Message: "learnt from the workers' lookup: the key is bound to another command or payload; use a new key for a new operation"}, true
	}
	switch st.State {
	case messages.KeyStateCompleted:
		if st.Outcome == nil || sameCommand(cmd, *st.Outcome) != nil {
			return messages.Result{}, false
		}
		return *st.Outcome, true
	case messages.KeyStateDeadLettered, messages.KeyStateOutcomeUnknown:
		if st.Fingerprint == "" || st.Fingerprint != fp || st.Kind != cmd.Kind() {
			break
		}
		if st.State == messages.KeyStateDeadLettered && !acked.IsZero() && !coveredBy(st, acked) {
			break
		}
		res := messages.Result{Key: st.Key, Kind: st.Kind, Status: messages.StatusRejected, Code: st.State,
			Fingerprint: st.Fingerprint, Message: "learnt from the workers' lookup: the key's command was dead-lettered"}
		if st.State == messages.KeyStateOutcomeUnknown {
			res.Message = "learnt from the workers' lookup: the key's command was dead-lettered while a call may have taken effect; send it again with the same key to learn its outcome"
		}
		return res, true
	}
	return messages.Result{}, false
}

// coveredBy reports whether the key's dead letter st answers a message
// stored at or before acked: its dead_before is not earlier (a worker that
// does not tell dead_before is taken at its word, as before).
func coveredBy(st messages.KeyState, acked time.Time) bool {
	return st.DeadBefore.IsZero() || !acked.After(st.DeadBefore)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// accept takes a key's outcome read from result.<key> or the result stream
// as the answer, unless it contradicts cmd.
func (c *Client) accept(reply *Reply, res messages.Result, src Source, cmd messages.Command) error {
	if err := sameCommand(cmd, res); err != nil {
		return err
	}
	reply.Result, reply.Source = res, src
	return nil
}

// sameCommand returns a *messages.RejectError with CodeKeyReused when the
// stored outcome res is not the outcome of cmd: another kind, or another
// payload fingerprint (contract v1.1: every outcome carries the fingerprint
// of the command that produced it). An outcome stored by a worker older
// than v1.1 carries none; only its kind is compared.
func sameCommand(cmd messages.Command, res messages.Result) error {
	if res.Kind != cmd.Kind() {
		return &messages.RejectError{Code: messages.CodeKeyReused,
			Message: fmt.Sprintf("the key already holds the outcome of a %s, not of this %s", res.Kind, cmd.Kind())}
	}
	if fp := fingerprintOf(cmd); res.Fingerprint != "" && fp != "" && res.Fingerprint != fp {
		return &messages.RejectError{Code: messages.CodeKeyReused,
			Message: "the key already holds the outcome of another " + cmd.Kind() + " (another payload); use a new key for a new operation"}
	}
	return nil
}

// storedOutcome reads the last message on result.<key> from the result
// stream. found is false when the stream or the message does not exist.
func (c *Client) storedOutcome(ctx context.Context, key string) (res messages.Result, found bool, err error) {
	stream, err := c.resultStream(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("client: look up stream %s: %w", c.cfg.Topology.ResultStream, err)
	}
	// GetLastMsgForSubject uses a direct get only when the stream allows it
	// (AllowDirect, nats-server 2.9+), and the STREAM.MSG.GET API otherwise.
	m, err := stream.GetLastMsgForSubject(ctx, c.cfg.Topology.Subjects.ResultFor(key))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return res, false, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		c.forgetResultStream()
		return res, false, nil
	case err != nil:
		return res, false, fmt.Errorf("client: read %s from %s: %w", c.cfg.Topology.Subjects.ResultFor(key), c.cfg.Topology.ResultStream, err)
	}
	res, err = messages.DecodeResult(m.Data)
	if err != nil {
		return res, false, fmt.Errorf("client: stored outcome of %s (sequence %d) is not a result: %w", key, m.Sequence, err)
	}
	if res.Key != key || !res.Status.IsOutcome() {
		return res, false, fmt.Errorf("client: stored message %d on %s is not an outcome of %s", m.Sequence, m.Subject, key)
	}
	return res, true, nil
}

// Lookup asks the workers' lookup service what key's record says (an
// extension of contract v1.2): absent, in progress, completed with its
// outcome, dead_lettered, or outcome_unknown, with the command and
// fingerprint the key is bound to. It reads without a lock and changes
// nothing. ErrNoLookup: no worker answered.
func (c *Client) Lookup(ctx context.Context, key string) (messages.KeyState, error) {
	if err := checkKey(key); err != nil {
		return messages.KeyState{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, streamReadTimeout)
		defer cancel()
	}
	m, err := c.nc.RequestWithContext(ctx, c.cfg.Topology.Subjects.LookupFor(key), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return messages.KeyState{}, ErrNoLookup
	}
	if err != nil {
		return messages.KeyState{}, fmt.Errorf("client: look up %s: %w", key, err)
	}
	st, err := messages.DecodeKeyState(m.Data)
	if err != nil {
		return messages.KeyState{}, fmt.Errorf("client: lookup answer for %s: %w", key, err)
	}
	if st.Error != "" {
		return st, fmt.Errorf("client: look up %s: the worker says: %s", key, st.Error)
	}
	return st, nil
}

// resultStream returns a handle of the result stream, looked up once it
// exists: the workers create it, possibly after this client started.
func (c *Client) resultStream(ctx context.Context) (jetstream.Stream, error) {
	c.mu.Lock()
	s := c.results
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := c.js.Stream(ctx, c.cfg.Topology.ResultStream)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.results = s
	c.mu.Unlock()
	return s, nil
}

func (c *Client) forgetResultStream() {
	c.mu.Lock()
	c.results = nil
	c.mu.Unlock()
}

// fingerprintOf is the payload fingerprint of cmd, or "" when the client
// cannot compute it (a command it only holds as bytes).
func fingerprintOf(cmd messages.Command) string {
	if f, ok := cmd.(interface{ fingerprint() string }); ok {
		if fp := f.fingerprint(); fp == "" {
			return ""
		}
	}
	return messages.Fingerprint(cmd)
}
