package messages_test

import (
	"errors"
	"fmt"

	"github.com/idempay/idempay/pkg/messages"
)

// A worker decodes a body strictly, then fingerprints it. Two bodies that
// differ only in field order and white space are the same command; a body
// with a fractional amount is refused with invalid_payload.
func ExampleDecode() {
	first := []byte(`{"account_id": "acct_42", "amount": 1999, "currency": "EUR"}`)
	retry := []byte(`{"currency":"EUR","amount":1999,"account_id":"acct_42"}`)

	var a, b messages.ChargeRequest
	if err := messages.Decode(first, &a); err != nil {
		panic(err)
	}
	if err := messages.Decode(retry, &b); err != nil {
		panic(err)
	}
	fmt.Println(string(messages.Canonical(a)))
	fmt.Println(messages.Fingerprint(a))
	fmt.Println("same command:", messages.Fingerprint(a) == messages.Fingerprint(b))

	var bad messages.ChargeRequest
	err := messages.Decode([]byte(`{"account_id":"acct_42","amount":19.99,"currency":"EUR"}`), &bad)
	fmt.Println(errors.Is(err, messages.ErrInvalidPayload), err)

	// Output:
	// {"account_id":"acct_42","amount":1999,"currency":"EUR"}
	// 21338b720a090865271d54c5ef551abe24d844a5a3c677595bef18e05d375857
	// same command: true
	// true rejected: invalid_payload: amount must be an integer (no fraction, no exponent), got number 19.99
}
