package gateway

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/idempay/idempay/pkg/client"
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

// decodeRefund decodes a refund. With authentication, charge_key is the
// tenant's own key of the charge (what it sent as Idempotency-Key, 1-255
// visible ASCII characters), scoped like every key of the tenant
// (client.ScopeCommand): a tenant refunds its own charges, and cannot
// name another tenant's, even knowing its key.
func decodeRefund(r *http.Request, body []byte) (messages.Command, error) {
	caller := callerOf(r)
	if !caller.scoped {
		var c messages.RefundRequest
		if err := messages.Decode(body, &c); err != nil {
			return nil, err
		}
		return c, nil
	}
	var t tenantRefund
	if err := messages.Decode(body, &t); err != nil {
		return nil, err
	}
	cmd, err := client.ScopeCommand(caller.Tenant, messages.RefundRequest(t))
	if err != nil {
		return nil, err
	}
	return cmd, cmd.Validate()
}

// tenantRefund is a tenant's refund body: a payment.refund whose
// charge_key is the tenant's own key. It implements messages.Command only
// so that messages.Decode applies the workers' rules to the body; the
// whole command is validated once the key is scoped.
type tenantRefund messages.RefundRequest

func (tenantRefund) Kind() string    { return messages.KindPaymentRefund }
func (tenantRefund) Validate() error { return nil }

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

// idempotencyKey returns the request's Idempotency-Key as sent: exactly
// one header, bare (as Stripe has it) or as the draft's structured-field
// string ("...").
func idempotencyKey(h http.Header) (string, error) {
	values := h.Values(HeaderIdempotencyKey)
	switch len(values) {
	case 0:
		return "", fmt.Errorf("the %s header is missing: send a key made once per operation and kept across its retries", HeaderIdempotencyKey)
	case 1:
	default:
		return "", fmt.Errorf("%d %s headers; send exactly one", len(values), HeaderIdempotencyKey)
	}
	key := strings.TrimSpace(values[0])
	if len(key) >= 3 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	return key, nil
}

// opKey is a request's key: the caller's own, which answers show, and the
// operation's, which the workers, Redis and the provider see.
type opKey struct {
	client string
	op     string
	tenant string
	scoped bool
}

// keyOf checks the caller's key and derives the operation's: with
// authentication, any 1-255 visible ASCII characters, scoped to the
// tenant (client.ScopedKey); without (GATEWAY_AUTH=none), a canonical
// UUID, used as it is. what names where the key came from, for the error.
func keyOf(c *Caller, raw, what string) (opKey, error) {
	if !c.scoped {
		if !messages.ValidKey(raw) {
			return opKey{}, fmt.Errorf("%s %q is not a UUID in canonical form (36 characters, lower-case hex, hyphens at 8-4-4-4-12)", what, truncate(raw, 80))
		}
		return opKey{client: raw, op: raw, tenant: c.Tenant}, nil
	}
	if !client.ValidClientKey(raw) {
		return opKey{}, fmt.Errorf("%s %q: want 1-%d visible ASCII characters (0x21-0x7E)", what, truncate(raw, 80), client.MaxClientKeyLen)
	}
	return opKey{client: raw, op: client.ScopedKey(c.Tenant, raw), tenant: c.Tenant, scoped: true}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
