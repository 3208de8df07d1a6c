package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Codes of the gateway's own problems, besides the contract's answer codes
// (messages.Code*), which keep their names.
const (
	// CodeRequestInFlight (409): the key's first request is still in
	// flight; send the same request again after Retry-After.
	CodeRequestInFlight = "request_in_flight"
	// CodeUnsupportedMediaType (415): the body is not application/json.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeOutcomeNotFound (404, GET /v1/results/{key}): no stored outcome.
	CodeOutcomeNotFound = "outcome_not_found"
	// CodePublishUnconfirmed (504): NATS did not confirm the command; it
	// may or may not be accepted. Send the same request again with the
	// same key.
	CodePublishUnconfirmed = "publish_unconfirmed"
	// CodeServiceUnavailable (503): the gateway cannot reach NATS or the
	// command stream, or could not read or record a key's state. The
	// detail says whether the command was stored; either way the same
	// request again, with the same key, is safe.
	CodeServiceUnavailable = "service_unavailable"
	// CodeFailed (422): a failed outcome with a code this gateway does not
	// know (a newer worker's).
	CodeFailed = "failed"
	// CodeNotFound and CodeMethodNotAllowed: no such route or method.
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeOriginNotAllowed (403): a CORS preflight from an origin not in
	// Config.AllowedOrigins.
	CodeOriginNotAllowed = "origin_not_allowed"
	// CodeUnauthenticated (401, contract v1.2): missing, malformed,
	// unknown, expired or badly signed credentials.
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden (403, contract v1.2): a valid token without the
	// tenant claim.
	CodeForbidden = "forbidden"
	// CodeRateLimited (429, contract v1.2): the tenant exceeds its rate or
	// its concurrent requests; Retry-After says when to come back.
	CodeRateLimited = "rate_limited"
)

// problemType is one kind of problem: its code (the contract's, where it
// has one), HTTP status and title. The type URI is /problems/<code>,
// served by the gateway with the about text.
type problemType struct {
	Code   string
	Status int
	Title  string
	About  string
}

// problemTypes lists every problem the gateway answers with. openapi.json
// lists the same codes (TestOpenAPI checks it).
var problemTypes = []problemType{
	{messages.CodeInvalidKey, http.StatusBadRequest, "Missing or malformed key",
		"Every POST needs the header Idempotency-Key, made once per operation and kept across its retries: 1-255 visible ASCII characters (without authentication, GATEWAY_AUTH=none: a UUID in canonical form). GET /v1/results/{key} takes the same key in its path."},
	{CodeUnauthenticated, http.StatusUnauthorized, "Unauthenticated",
		"Send Authorization: Bearer <API key or token>. The credentials were missing, malformed, unknown, expired or badly signed. Nothing was sent."},
	{CodeForbidden, http.StatusForbidden, "Forbidden",
		"The token is valid but names no tenant (its tenant claim is missing or not a tenant id). Nothing was sent."},
	{CodeRateLimited, http.StatusTooManyRequests, "Rate limited",
		"The tenant sends more requests per second, or has more under way at once, than its limits allow. Nothing was sent. Send the same request again, with the same key, after Retry-After seconds."},
	{messages.CodeInvalidPayload, http.StatusBadRequest, "Invalid request body",
		"The body breaks a rule of the command (the detail names the field): one JSON object, exactly the documented fields, integers without fraction or exponent. Nothing was sent."},
	{CodeUnsupportedMediaType, http.StatusUnsupportedMediaType, "Body is not application/json",
		"Send the body with Content-Type: application/json (UTF-8)."},
	{messages.CodePayloadTooLarge, http.StatusRequestEntityTooLarge, "Body too large",
		"A body is at most 64 KiB (65536 bytes)."},
	{messages.CodeKeyReused, http.StatusUnprocessableEntity, "Idempotency-Key reused with another body",
		"The key already belongs to another command (another endpoint or another body). Nothing changed; use a new key for a new operation."},
	{CodeRequestInFlight, http.StatusConflict, "Request with this key still in flight",
		"The key's first request is still being processed. Send the same request again, with the same key, after Retry-After seconds: it then gets the outcome."},
	{messages.CodeCardDeclined, http.StatusPaymentRequired, "Card declined",
		"The provider declined the charge: a definitive outcome, nothing was charged. Repeating the request returns it again; try again with a new key."},
	{messages.CodeChargeNotFound, http.StatusUnprocessableEntity, "Charge not found",
		"The refund's charge_key has no succeeded charge and none in progress. Nothing was refunded."},
	{messages.CodeChargeNotRefundable, http.StatusUnprocessableEntity, "Charge not refundable",
		"The refund's charge failed. Nothing was refunded."},
	{messages.CodeRefundExceedsCharge, http.StatusUnprocessableEntity, "Refund exceeds the charge",
		"The amount is more than the charge less what was already refunded. Nothing was refunded."},
	{CodeFailed, http.StatusUnprocessableEntity, "Command failed",
		"The operation ran and definitively did not take effect (the outcome's code says why)."},
	{messages.CodeDeadLettered, http.StatusServiceUnavailable, "Command dead-lettered",
		"The command used its tries and was dead-lettered; the operation certainly did not take effect and the key keeps no outcome. Send the same request again, with the same key, after Retry-After seconds (the dedupe window): it runs afresh."},
	{messages.CodeOutcomeUnknown, http.StatusGatewayTimeout, "Outcome not known yet",
		"Not a failure: the operation may have taken effect, and its outcome is not known yet (the workers keep asking the provider). Send the same request again with the SAME key after Retry-After seconds to learn it; never retry it under a new key, which could charge twice."},
	{messages.CodeUnknownCommand, http.StatusNotImplemented, "Command not run by the workers",
		"The workers have no operation for this command (they may predate it). Nothing changed."},
	{CodePublishUnconfirmed, http.StatusGatewayTimeout, "Command not confirmed",
		"NATS did not confirm the command in time: it may or may not have been accepted. Send the same request again with the same key; it runs at most once."},
	{CodeServiceUnavailable, http.StatusServiceUnavailable, "Service unavailable",
		"The gateway is not ready (it cannot reach NATS or the workers' streams), or could not read or record the key's state (the detail says whether the command was stored). Send the same request again with the same key after Retry-After seconds; the gateway's log has the cause under the response's Request-Id."},
	{CodeOutcomeNotFound, http.StatusNotFound, "No outcome for this key",
		"Nothing is known of this key for this caller: never sent (or sent by another tenant), refused, or its outcome expired. A command answered 202 is never 404: it is 202 pending until its outcome exists."},
	{CodeNotFound, http.StatusNotFound, "Not found", "No such resource."},
	{CodeMethodNotAllowed, http.StatusMethodNotAllowed, "Method not allowed", "The resource does not support this method; the Allow header lists those it does."},
	{CodeOriginNotAllowed, http.StatusForbidden, "Origin not allowed", "This origin may not call the API from a browser."},
}

// problemOf returns the problem type of code: the failed-outcome fallback
// for an unknown failed code, service_unavailable for anything else
// unknown.
func problemOf(code string) problemType {
	for _, p := range problemTypes {
		if p.Code == code {
			return p
		}
	}
	return problemOf(CodeServiceUnavailable)
}

// problem is an RFC 9457 problem details object with the contract's code
// and, for a failed outcome, the outcome itself.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	// Key is the request's idempotency key, when it had a valid one.
	Key string `json:"key,omitempty"`
	// Outcome is the answer JSON of a failed outcome (402, 422).
	Outcome json.RawMessage `json:"outcome,omitempty"`
}

// problemTypeURI is a relative reference that the gateway itself serves.
func problemTypeURI(code string) string { return "/problems/" + code }

// writeProblem writes p's status and body. retryAfter, when positive, is
// sent as Retry-After in whole seconds (rounded up).
func writeProblem(w http.ResponseWriter, pt problemType, key, detail string, retryAfter time.Duration) {
	writeProblemBody(w, pt, problem{Key: key, Detail: detail}, retryAfter)
}

func writeProblemBody(w http.ResponseWriter, pt problemType, p problem, retryAfter time.Duration) {
	p.Type, p.Title, p.Status, p.Code = problemTypeURI(pt.Code), pt.Title, pt.Status, pt.Code
	if p.Detail == "" {
		p.Detail = pt.About
	}
	body, err := json.Marshal(p)
	if err != nil {
		// Only Outcome can fail to encode, and it comes from Result.Marshal.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(pt.Status)
	_, _ = w.Write(append(body, '\n'))
}
