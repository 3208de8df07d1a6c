package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Log attribute keys.
const (
	attrKey     = "key"
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
			writeProblem(w, problemOf(messages.CodeInvalidPayload), "", "could not read the body: "+err.Error(), 0)
			return
		}
		key, err := idempotencyKey(r.Header)
		if err != nil {
			writeProblem(w, problemOf(messages.CodeInvalidKey), "", err.Error(), 0)
			return
		}
		cmd, err := decode(r, body)
		if err != nil {
			g.writeRejection(r.Context(), w, key, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Wait)
		defer cancel()
		reply, err := g.client.Send(ctx, key, cmd)
		g.answer(w, r, key, cmd, reply, err)
	}
}

// answer writes the response to a Send's result.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, key string, cmd messages.Command, reply *client.Reply, err error) {
	switch {
	case reply == nil:
		// Nothing acknowledged the publish.
		switch {
		case errors.Is(err, client.ErrPublishUnconfirmed):
			writeProblem(w, problemOf(CodePublishUnconfirmed), key, "NATS did not confirm the command in time; it may have been accepted: send the same request again with the same key", retrySoon)
		case errors.As(err, new(*messages.RejectError)):
			g.writeRejection(r.Context(), w, key, err)
		default:
			g.log.WarnContext(r.Context(), "gateway: command not sent", attrKey, key, attrCommand, cmd.Kind(), attrError, err)
			writeProblem(w, problemOf(CodeServiceUnavailable), key, "the command was not accepted: "+err.Error(), retrySoon)
		}
	case reply.Result.Status == "":
		switch {
		case errors.Is(err, client.ErrKeyReused):
			// The key's stored outcome is another command's.
			writeProblem(w, problemOf(messages.CodeKeyReused), key, rejectMessage(err), 0)
		case reply.Duplicate && reply.PublishAttempts == 1:
			// Another request's message holds the key and has no stored
			// outcome yet (the client returned at once: DuplicateWait).
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), settleTimeout)
			defer cancel()
			g.settleDuplicate(ctx, w, key, cmd, reply.Sequence)
		default:
			// Accepted and stored; the answer did not come within Wait.
			g.writeAccepted(w, key, cmd)
		}
	case reply.Result.Status.IsOutcome():
		// A replay: the outcome was not produced by this request's own
		// message, which was dropped as a duplicate of another request's
		// (first attempt), or found the outcome stored.
		replayed := reply.Result.Replayed || (reply.Duplicate && reply.PublishAttempts == 1)
		writeOutcome(w, reply.Result, replayed)
	default:
		g.writeRejection(r.Context(), w, key, &messages.RejectError{Code: reply.Result.Code, Message: reply.Result.Message})
		if reply.Result.Code == messages.CodeDeadLettered || reply.Result.Code == messages.CodeOutcomeUnknown {
			g.log.InfoContext(r.Context(), "gateway: command ended without an outcome", attrKey, key, attrCommand, cmd.Kind(), "code", reply.Result.Code)
		}
	}
}

// writeRejection writes the problem of a rejection (the worker's, or the
// gateway's own check of the body) by its code.
func (g *Gateway) writeRejection(ctx context.Context, w http.ResponseWriter, key string, err error) {
	re, ok := errors.AsType[*messages.RejectError](err)
	if !ok {
		writeProblem(w, problemOf(CodeServiceUnavailable), key, err.Error(), retrySoon)
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
		writeProblem(w, problemOf(messages.CodeOutcomeUnknown), key, fmt.Sprintf("the command was rejected with code %q: %s", re.Code, re.Message), time.Minute)
		return
	}
	writeProblem(w, problemOf(re.Code), key, cmp.Or(re.Message, problemOf(re.Code).About), retry)
}

// rejectMessage is the message of a *messages.RejectError in err.
func rejectMessage(err error) string {
	if re, ok := errors.AsType[*messages.RejectError](err); ok && re.Message != "" {
		return re.Message
	}
	return err.Error()
}

// accepted is the body of a 202.
type accepted struct {
	Key      string `json:"key"`
	Command  string `json:"command"`
	Status   string `json:"status"`
	Location string `json:"location"`
	Detail   string `json:"detail"`
}

func (g *Gateway) writeAccepted(w http.ResponseWriter, key string, cmd messages.Command) {
	loc := resultLocation(key)
	body, _ := json.Marshal(accepted{ //nolint:errchkjson // a struct of strings always encodes
		Key: key, Command: cmd.Kind(), Status: "accepted", Location: loc,
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

func resultLocation(key string) string { return "/v1/results/" + key }

// outcomeBody is the answer JSON of an outcome as the gateway sends it:
// the worker's answer with replayed false, so that every response for the
// key has the same body; whether this response repeats it is the
// Idempotent-Replayed header's to say.
func outcomeBody(res messages.Result) []byte {
	res.Replayed = false
	return res.Marshal()
}

// writeOutcome writes a key's outcome: 201 with the answer for succeeded,
// a problem with the answer inside for failed.
func writeOutcome(w http.ResponseWriter, res messages.Result, replayed bool) {
	h := w.Header()
	h.Set("Location", resultLocation(res.Key))
	h.Set("Cache-Control", "no-store")
	if replayed {
		h.Set(HeaderIdempotentReplayed, "true")
	}
	body := outcomeBody(res)
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
	writeProblemBody(w, pt, problem{Key: res.Key, Detail: cmp.Or(res.Message, pt.About), Outcome: body}, 0)
}

// result serves GET /v1/results/{key}: the stored outcome, or 404.
func (g *Gateway) result(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !messages.ValidKey(key) {
		writeProblem(w, problemOf(messages.CodeInvalidKey), "", fmt.Sprintf("%q is not a UUID in canonical form", truncate(key, 80)), 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), settleTimeout)
	defer cancel()
	res, err := g.client.Status(ctx, key)
	switch {
	case errors.Is(err, client.ErrNotFound):
		writeProblem(w, problemOf(CodeOutcomeNotFound), key, "", 0)
	case err != nil:
		g.log.WarnContext(ctx, "gateway: read outcome", attrKey, key, attrError, err)
		writeProblem(w, problemOf(CodeServiceUnavailable), key, "could not read the outcome: "+err.Error(), retrySoon)
	default:
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(outcomeBody(*res), '\n')) //nolint:gosec // G705: application/json from Result.Marshal, never HTML
	}
}
