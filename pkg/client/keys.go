package client

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/idempay/idempay/pkg/messages"
)

// NewKey returns a new idempotency key: a UUIDv7 in canonical lower-case
// form. Version 7 keys start with a millisecond timestamp, so they sort by
// creation time in logs and in Redis, and carry 74 random bits.
//
// Generate the key once per intended operation, before the first attempt,
// and keep it with the operation (e.g. next to the order) so that every
// retry, from this process or after a restart, sends the same key.
func NewKey() string {
	// NewV7 fails only when the system's random source does, which Go
	// treats as fatal anyway (crypto/rand.Read never returns an error).
	return uuid.Must(uuid.NewV7()).String()
}

// checkKey returns a *messages.RejectError with CodeInvalidKey unless key is
// a canonical UUID.
func checkKey(key string) error {
	if messages.ValidKey(key) {
		return nil
	}
	return &messages.RejectError{Code: messages.CodeInvalidKey,
		Message: fmt.Sprintf("%q is not a UUID in canonical form (36 characters, lower-case hex, hyphens at 8-4-4-4-12)", key)}
}
