package gateway

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/idempay/idempay/pkg/messages"
)

// decoder turns a request's body (and path) into a validated command, or
// a *messages.RejectError.
type decoder func(r *http.Request, body []byte) (messages.Command, error)

func decodeCharge(_ *http.Request, body []byte) (messages.Command, error) {
	var c messages.ChargeRequest
	if err := messages.Decode(body, &c); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeRefund(_ *http.Request, body []byte) (messages.Command, error) {
	var c messages.RefundRequest
	if err := messages.Decode(body, &c); err != nil {
		return nil, err
	}
	return c, nil
}

// cartItem is the body of POST /v1/carts/{cart_id}/items: a cart.add
// without its cart_id, which the path names. It implements
// messages.Command only so that messages.Decode applies the workers' own
// rules (exact field names, integers, UTF-8); the whole command is
// validated once the cart_id is added.
type cartItem struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

func (cartItem) Kind() string    { return messages.KindCartAdd }
func (cartItem) Validate() error { return nil }

func decodeCartItem(r *http.Request, body []byte) (messages.Command, error) {
	var item cartItem
	if err := messages.Decode(body, &item); err != nil {
		return nil, err
	}
	c := messages.CartAddRequest{CartID: r.PathValue("cart_id"), SKU: item.SKU, Quantity: item.Quantity}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// errTooLarge is readBody's error for a body over MaxBodySize.
var errTooLarge = errors.New("gateway: body too large")

// readBody reads at most MaxBodySize bytes of the body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodySize {
		return nil, errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, errTooLarge
	}
	return body, err
}

// jsonContentType reports whether a Content-Type header names
// application/json, in UTF-8 if it names a charset at all.
func jsonContentType(header string) bool {
	mt, params, err := mime.ParseMediaType(header)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// idempotencyKey returns the request's Idempotency-Key: exactly one
// header, a canonical UUID, bare (as Stripe has it) or as the draft's
// structured-field string ("...").
func idempotencyKey(h http.Header) (string, error) {
	values := h.Values(HeaderIdempotencyKey)
	switch len(values) {
	case 0:
		return "", fmt.Errorf("the %s header is missing: send a UUID made once per operation and kept across its retries", HeaderIdempotencyKey)
	case 1:
	default:
		return "", fmt.Errorf("%d %s headers; send exactly one", len(values), HeaderIdempotencyKey)
	}
	key := strings.TrimSpace(values[0])
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	if !messages.ValidKey(key) {
		return "", fmt.Errorf("%s %q is not a UUID in canonical form (36 characters, lower-case hex, hyphens at 8-4-4-4-12)", HeaderIdempotencyKey, truncate(key, 80))
	}
	return key, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
