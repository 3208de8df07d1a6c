package messages

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// MaxBodySize is the largest command body a worker accepts (64 KiB). A larger
// one is rejected with CodePayloadTooLarge.
const MaxBodySize = 64 << 10

// The command kinds of the contract: the <type> of cmd.<type>, and the
// "command" field of every answer. A kind is a stable constant, not a Go
// type name, so renaming a type never changes what travels on the wire.
const (
	KindPaymentCharge = "payment.charge"
	KindCartAdd       = "cart.add"
	KindPaymentRefund = "payment.refund" // contract v1.1
)

// Command is a validated command body.
type Command interface {
	// Kind returns the command's kind, e.g. "payment.charge".
	Kind() string
	// Validate checks the contract's rules and returns a *RejectError with
	// CodeInvalidPayload naming the first bad field.
	Validate() error
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ChargeRequest is the body of payment.charge.
type ChargeRequest struct {
	// AccountID is 1-64 characters of [A-Za-z0-9_.-].
	AccountID string `json:"account_id"`
	// Amount is in minor units, 1 to 10^12.
	Amount int64 `json:"amount"`
	// Currency is three upper-case letters.
	Currency string `json:"currency"`
	// Description is optional, at most 255 characters.
	Description string `json:"description,omitempty"`
}

// Kind implements Command.
func (ChargeRequest) Kind() string { return KindPaymentCharge }

// MaxAmount is the largest charge amount, in minor units.
const MaxAmount = 1_000_000_000_000

// Validate implements Command.
func (c ChargeRequest) Validate() error {
	switch {
	case !idPattern.MatchString(c.AccountID):
		return invalidPayload("account_id must be 1-64 characters of [A-Za-z0-9_.-]")
	case c.Amount < 1 || c.Amount > MaxAmount:
		return invalidPayload("amount must be an integer from 1 to 10^12 (minor units)")
	case !isCurrency(c.Currency):
		return invalidPayload("currency must be three upper-case letters A-Z")
	case utf8.RuneCountInString(c.Description) > MaxTextLength:
		return invalidPayload("description must be at most 255 characters")
	}
	return nil
}

// MaxTextLength bounds the free-text fields (description, reason), in
// characters.
const MaxTextLength = 255

func isCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// CartAddRequest is the body of cart.add.
type CartAddRequest struct {
	// CartID is 1-64 characters of [A-Za-z0-9_.-].
	CartID string `json:"cart_id"`
	// SKU is 1-64 characters of [A-Za-z0-9_.-].
	SKU string `json:"sku"`
	// Quantity is 1 to 1000.
	Quantity int64 `json:"quantity"`
}

// Kind implements Command.
func (CartAddRequest) Kind() string { return KindCartAdd }

// MaxQuantity is the largest quantity one cart.add may add.
const MaxQuantity = 1000

// Validate implements Command.
func (c CartAddRequest) Validate() error {
	switch {
	case !idPattern.MatchString(c.CartID):
		return invalidPayload("cart_id must be 1-64 characters of [A-Za-z0-9_.-]")
	case !idPattern.MatchString(c.SKU):
		return invalidPayload("sku must be 1-64 characters of [A-Za-z0-9_.-]")
	case c.Quantity < 1 || c.Quantity > MaxQuantity:
		return invalidPayload(fmt.Sprintf("quantity must be an integer from 1 to %d", MaxQuantity))
	}
	return nil
}

// RefundRequest is the body of payment.refund (contract v1.1): a refund of an
// earlier payment.charge, named by that charge's idempotency key. The refund
// has its own key, its Nats-Msg-Id, like any command.
type RefundRequest struct {
	// ChargeKey is the idempotency key of the payment.charge to refund, a
	// UUID in canonical form.
	ChargeKey string `json:"charge_key"`
	// Amount is in minor units, 1 to 10^12, at most what is left of the
	// charge.
	Amount int64 `json:"amount"`
	// Reason is optional, at most 255 characters.
	Reason string `json:"reason,omitempty"`
}

// Kind implements Command.
func (RefundRequest) Kind() string { return KindPaymentRefund }

// Validate implements Command.
func (r RefundRequest) Validate() error {
	switch {
	case !ValidKey(r.ChargeKey):
		return invalidPayload("charge_key must be the charge's idempotency key, a UUID in canonical form (36 characters, lower-case hex, 8-4-4-4-12)")
	case r.Amount < 1 || r.Amount > MaxAmount:
		return invalidPayload("amount must be an integer from 1 to 10^12 (minor units)")
	case utf8.RuneCountInString(r.Reason) > MaxTextLength:
		return invalidPayload("reason must be at most 255 characters")
	}
	return nil
}

// NewCommand returns a new zero command of one of the contract's kinds, to
// decode a body into, and false for a kind the contract does not define.
func NewCommand(kind string) (Command, bool) {
	switch kind {
	case KindPaymentCharge:
		return &ChargeRequest{}, true
	case KindCartAdd:
		return &CartAddRequest{}, true
	case KindPaymentRefund:
		return &RefundRequest{}, true
	}
	return nil, false
}
