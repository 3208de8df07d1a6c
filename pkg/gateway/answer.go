package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Log attribute keys.
const (
	attrKey     = "key"
	attrOpKey   = "operation_key"
	attrCommand = "command"
	attrError   = "error"
)

// settleTimeout bounds the reads that decide the answer to a duplicate
// (the earlier message, the outcome, its dead letter), apart from the
// request's Wait, which a slow publish may have used up.
const settleTimeout = 5 * time.Second

// Retry-After of answers that ask for the same request again soon: 409
// and 202 (the first request's outcome is usually a moment away).
const retrySoon = time.Second

// command returns the handler of a POST that sends the command decode
// makes of the request.
func (g *Gateway) command(decode decoder) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info := infoOf(r.Context())
		if !jsonContentType(r.Header.Get("Content-Type")) {
			writeProblem(w, problemOf(CodeUnsupportedMediaType), "",
				fmt.Sprintf("Content-Type %q: the body must be application/json", truncate(r.Header.Get("Content-Type"), 80)), 0)
			return
		}
		body, err := readBody(w, r)
		switch {
		case errors.Is(err, errTooLarge):
			writeProblem(w, problemOf(messages.CodePayloadTooLarge), "",
				fmt.Sprintf("the body is over %d bytes", MaxBodySize), 0)
			return
		case err != nil:
			info.err = err
			writeProblem(w, problemOf(messages.CodeInvalidPayload), "", "could not read the body", 0)
			return
		}
		raw, err := idempotencyKey(r.Header)
		if err != nil {
			writeProblem(w, problemOf(messages.CodeInvalidKey), "", err.Error(), 0)
			return
		}
		k, err := keyOf(callerOf(r), raw, HeaderIdempotencyKey)
		if err != nil {
			writeProblem(w, problemOf(messages.CodeInvalidKey), "", err.Error(), 0)
			return
		}
		info.key = k.client
		cmd, err := decode(r, body)
		if err != nil {
			g.writeRejection(r.Context(), w, k, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Wait)
		defer cancel()
		var reply *client.Reply
		if k.scoped {
			reply, err = g.client.SendScoped(ctx, k.tenant, k.client, cmd) // cmd was scoped by decode
		} else {
			reply, err = g.client.Send(ctx, k.op, cmd)
		}
		g.answer(w, r, k, cmd, reply, err)
	}
}

// answer writes the response to a Send's result.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, k opKey, cmd messages.Command, reply *client.Reply, err error) {
	ctx := r.Context()
	switch {
	case reply == nil:
		// Nothing acknowledged the publish.
		switch {
		case errors.Is(err, client.ErrPublishUnconfirmed):
			infoOf(ctx).err = err
			writeProblem(w, problemOf(CodePublishUnconfirmed), k.client, "NATS did not confirm the command in time; it may have been accepted: send the same request again with the same key", retrySoon)
		case errors.As(err, new(*messages.RejectError)):
			g.writeRejection(ctx, w, k, err)
		default:
			infoOf(ctx).err = err
			writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the command was not accepted (nothing was stored): send the same request again with the same key after Retry-After seconds", retrySoon)
		}
	case reply.Result.Status == "":
		switch {
		case errors.Is(err, client.ErrKeyReused):
			// The key's stored outcome is another command's.
			writeProblem(w, problemOf(messages.CodeKeyReused), k.client, rejectMessage(err), 0)
		case reply.Duplicate && reply.PublishAttempts == 1:
			// Another request's message holds the key and has no stored
			// outcome yet (the client returned at once: DuplicateWait).
			g.settleDuplicate(ctx, w, k, cmd, reply.Sequence)
		default:
			// Accepted and stored; the answer did not come within Wait.
			g.accepted(ctx, w, k, cmd, reply.Sequence)
		}
	case reply.Result.Status.IsOutcome():
		// A replay: the outcome was not produced by this request's own
		// message, which was dropped as a duplicate of another request's
		// (first attempt), or found the outcome stored.
		replayed := reply.Result.Replayed || (reply.Duplicate && reply.PublishAttempts == 1)
		writeOutcome(w, reply.Result, replayed, k)
	default:
		res := reply.Result
		if fp := messages.Fingerprint(cmd); res.Fingerprint != "" && res.Fingerprint != fp {
			// Another message's refusal of the key (contract v1.2: a
			// rejection carries the refused message's fingerprint), taken
			// after a duplicate PubAck: not this request's answer.
			g.settleDuplicate(ctx, w, k, cmd, reply.Sequence)
			return
		}
		fp := res.Fingerprint
		if fp == "" && reply.Source == client.SourceReplyTo {
			fp = messages.Fingerprint(cmd) // the answer to this very message
		}
		g.recordEnded(ctx, k, reply.Sequence, res.Code, fp)
		g.writeRejection(ctx, w, k, &messages.RejectError{Code: res.Code, Message: res.Message})
	}
}

// recordEnded keeps a refusal of message seq where every gateway finds it
// (stateStore): a repeat of the request inside the dedupe window is
// dropped as a duplicate of that message, which is gone by then, and
// only this record tells what became of it. Only the refusals a repeat
// can meet are kept; a record that cannot be written leaves the repeat
// the cautious answer (outcome_unknown).
func (g *Gateway) recordEnded(ctx context.Context, k opKey, seq uint64, code, fp string) {
	switch code {
	case messages.CodeKeyReused, messages.CodeDeadLettered, messages.CodeOutcomeUnknown:
	default:
		return
	}
	if seq == 0 || fp == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := g.state.putEnded(ctx, k.op, seq, endedRecord{Code: code, Fingerprint: fp}); err != nil {
		g.log.WarnContext(ctx, "gateway: record a refusal", attrRequestID, requestID(ctx), attrOpKey, k.op, attrError, err)
	}
}

// writeRejection writes the problem of a rejection (the worker's, or the
// gateway's own check of the body) by its code.
func (g *Gateway) writeRejection(ctx context.Context, w http.ResponseWriter, k opKey, err error) {
	re, ok := errors.AsType[*messages.RejectError](err)
	if !ok {
		infoOf(ctx).err = err
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the command could not be sent; send the same request again with the same key after Retry-After seconds", retrySoon)
		return
	}
	var retry time.Duration
	switch re.Code {
	case messages.CodeDeadLettered, messages.CodeOutcomeUnknown:
		// A re-send with the key reaches a worker only after the dedupe
		// window.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		retry = g.dedupeWindow(ctx)
	case messages.CodeInvalidPayload, messages.CodeInvalidKey, messages.CodePayloadTooLarge, messages.CodeKeyReused, messages.CodeUnknownCommand:
	default:
		// A rejection code newer than this gateway: say nothing about the
		// effect, ask for the same request again.
		writeProblem(w, problemOf(messages.CodeOutcomeUnknown), k.client, fmt.Sprintf("the command was rejected with code %q: %s", re.Code, re.Message), time.Minute)
		return
	}
	writeProblem(w, problemOf(re.Code), k.client, cmp.Or(re.Message, problemOf(re.Code).About), retry)
}

// rejectMessage is the message of a *messages.RejectError in err.
func rejectMessage(err error) string {
	if re, ok := errors.AsType[*messages.RejectError](err); ok && re.Message != "" {
		return re.Message
	}
	return err.Error()
}

// acceptedBody is the body of a POST's 202.
type acceptedBody struct {
	Key      string `json:"key"`
	Command  string `json:"command"`
	Status   string `json:"status"`
	Location string `json:"location"`
	Detail   string `json:"detail"`
}

// accepted answers 202 for a command stored as message seq that got no
// answer within Wait, once it has recorded that where every gateway finds
// it: its Location then answers 202 pending, never 404, until the outcome
// exists, whichever replica serves it, and after a restart. A 202 is a
// promise about its Location, so a record that cannot be written within
// settleTimeout gets 503 instead: the same request again (the command is
// stored; it runs at most once) is answered from what NATS holds.
func (g *Gateway) accepted(ctx context.Context, w http.ResponseWriter, k opKey, cmd messages.Command, seq uint64) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	rec := acceptedRecord{Seq: seq, Kind: cmd.Kind(), Fingerprint: messages.Fingerprint(cmd)}
	if err := g.recordAccepted(sctx, k.op, rec); err != nil {
		infoOf(ctx).err = err
		g.log.WarnContext(sctx, "gateway: could not record an accepted command; answered 503 (the same request again gets its outcome)",
			attrRequestID, requestID(ctx), attrOpKey, k.op, attrError, err)
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client,
			"the command was accepted, but the gateway could not record it for GET "+resultLocation(k.client)+
				": send the same request again with the same key after Retry-After seconds; it gets the command's outcome, and the command runs at most once", retrySoon)
		return
	}
	loc := resultLocation(k.client)
	body, _ := json.Marshal(acceptedBody{ //nolint:errchkjson // a struct of strings always encodes
		Key: k.client, Command: cmd.Kind(), Status: "accepted", Location: loc,
		Detail: fmt.Sprintf("accepted; no answer within %s yet. Read the outcome at %s, or send the same request again with the same key.", g.cfg.Wait, loc),
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", loc)
	h.Set("Retry-After", "1")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(body, '\n'))
}

// recordAccepted writes rec, again after a failed or timed-out attempt
// (the put is idempotent) until ctx is done: one attempt lost on a
// flapping link must not break the 202's promise.
func (g *Gateway) recordAccepted(ctx context.Context, op string, rec acceptedRecord) error {
	for {
		actx, cancel := context.WithTimeout(ctx, recordAttemptTimeout)
		err := g.state.putAccepted(actx, op, rec)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(recordRetryPause):
		}
	}
}

// Bounds of one attempt of recordAccepted, and the pause between two.
const (
	recordAttemptTimeout = time.Second
	recordRetryPause     = 100 * time.Millisecond
)

// resultLocation is the URL path of a key's outcome: the caller's own key,
// escaped as one path segment.
func resultLocation(key string) string { return "/v1/results/" + url.PathEscape(key) }

// outcomeBody is the answer JSON of an outcome as the gateway sends it:
// the worker's answer with the caller's own key (never the scoped one) and
// replayed false, so that every response for the key has the same body;
// whether this response repeats it is the Idempotent-Replayed header's to
// say.
func outcomeBody(res messages.Result, k opKey) []byte {
	res.Replayed = false
	res.Key = k.client
	return res.Marshal()
}

// writeOutcome writes a key's outcome: 201 with the answer for succeeded,
// a problem with the answer inside for failed.
func writeOutcome(w http.ResponseWriter, res messages.Result, replayed bool, k opKey) {
	h := w.Header()
	h.Set("Location", resultLocation(k.client))
	h.Set("Cache-Control", "no-store")
	if replayed {
		h.Set(HeaderIdempotentReplayed, "true")
	}
	body := outcomeBody(res, k)
	if res.Status == messages.StatusSucceeded {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(append(body, '\n')) //nolint:gosec // G705: application/json from Result.Marshal, never HTML
		return
	}
	pt := problemOf(res.Code)
	if pt.Status != http.StatusPaymentRequired && pt.Status != http.StatusUnprocessableEntity {
		pt = problemOf(CodeFailed) // a failed code this gateway does not know: 422
	}
	pt.Code = res.Code
	writeProblemBody(w, pt, problem{Key: k.client, Detail: cmp.Or(res.Message, pt.About), Outcome: body}, 0)
}

// pendingBody is the body of GET /v1/results/{key}'s 202 (contract v1.2).
type pendingBody struct {
	Key    string `json:"key"`
	Status string `json:"status"`
}

// result serves GET /v1/results/{key}: the caller's own key's outcome
// (200); 202 pending while a command answered 202 is still in the command
// stream; what became of it if it ended without an outcome (as a repeat
// of its POST would be answered); 404 when nothing is known of the key for
// this caller (another tenant's key included).
func (g *Gateway) result(w http.ResponseWriter, r *http.Request) {
	k, err := keyOf(callerOf(r), r.PathValue("key"), "the key")
	if err != nil {
		pt := problemOf(messages.CodeInvalidKey)
		pt.Title = "Malformed key"
		writeProblem(w, pt, "", err.Error(), 0)
		return
	}
	info := infoOf(r.Context())
	info.key = k.client
	ctx, cancel := context.WithTimeout(r.Context(), settleTimeout)
	defer cancel()
	res, err := g.client.Status(ctx, k.op)
	switch {
	case err == nil:
		writeResult(w, *res, k)
		return
	case !errors.Is(err, client.ErrNotFound):
		info.err = err
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the outcome could not be read; ask again after Retry-After seconds", retrySoon)
		return
	}
	rec, found, err := g.state.accepted(ctx, k.op)
	switch {
	case err != nil:
		info.err = err
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the key's state could not be read; ask again after Retry-After seconds", retrySoon)
		return
	case !found:
		writeProblem(w, problemOf(CodeOutcomeNotFound), k.client, "", 0)
		return
	}
	inFlight, err := g.inCommandStream(ctx, rec.Seq)
	switch {
	case err != nil:
		info.err = err
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the key's state could not be read; ask again after Retry-After seconds", retrySoon)
		return
	case inFlight:
		writePending(w, k)
		return
	}
	// Gone: a message leaves the command stream only once its key's
	// outcome, if it has one, is in the result stream.
	res, err = g.client.Status(ctx, k.op)
	switch {
	case err == nil:
		writeResult(w, *res, k)
	case !errors.Is(err, client.ErrNotFound):
		info.err = err
		writeProblem(w, problemOf(CodeServiceUnavailable), k.client, "the outcome could not be read; ask again after Retry-After seconds", retrySoon)
	default:
		g.writeEnded(ctx, w, k, rec.Fingerprint, g.endedWithoutOutcome(ctx, k.op, rec.Seq, rec.Kind))
	}
}

func writeResult(w http.ResponseWriter, res messages.Result, k opKey) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(outcomeBody(res, k), '\n'))
}

func writePending(w http.ResponseWriter, k opKey) {
	body, _ := json.Marshal(pendingBody{Key: k.client, Status: "pending"}) //nolint:errchkjson // two strings always encode
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Retry-After", "1")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(body, '\n'))
}
