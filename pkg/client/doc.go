// Package client sends idempay commands and returns their answers, so that
// a payment or a cart change can be retried safely: every attempt of one
// operation carries the same idempotency key, and the workers run it at
// most once.
//
// # Keys
//
// Generate a key with [NewKey] once per intended operation and store it with
// the operation before the first attempt; send it again, unchanged, on every
// retry, from this process or another. The same key with a different
// payload is refused with [ErrKeyReused].
//
// # Tenants
//
// A service that publishes for a tenant of the HTTP gateway (contract v1.2,
// "Callers and tenants") sets [Config.Tenant], or calls [Client.SendFor]:
// keys are then the tenant's own (1-255 visible ASCII characters, e.g. an
// order number), and the operation's key is [ScopedKey](tenant, key), the
// same UUIDv5 the gateway derives, so the service and the gateway share
// the tenant's key space and two tenants never share an operation.
//
// # What Send does
//
// [Client.Send] (and [Client.Charge], [Client.AddToCart]) validates the key
// and the command locally, subscribes to result.<key>, rejected.<key> and a
// private inbox, publishes the command to JetStream on cmd.<type> with the
// key in Nats-Msg-Id and the inbox in Reply-To, and waits for the answer.
//
// A publish whose PubAck is lost is repeated with the same key (see
// [RetryConfig]); JetStream's duplicate window drops the copy and reports it
// in the PubAck, which [Reply.Duplicate] passes on as data. After a
// duplicate PubAck the answer may already have been published, before the
// client listened, so Send also reads the key's stored outcome from the
// RESULTS stream.
//
// # Answers and errors
//
//   - succeeded: a *[Reply] and a nil error.
//   - failed: a *[Reply] and a *[FailedError] (errors.Is(err, [ErrFailed])):
//     the operation ran and definitively did not take effect. Both are
//     returned because a caller that only checks the error must not take a
//     declined card for a payment.
//   - rejected: a *[Reply] and a *messages.RejectError, matched with
//     errors.Is against [ErrInvalidPayload], [ErrUnknownCommand],
//     [ErrPayloadTooLarge], [ErrKeyReused], [ErrDeadLettered]. Nothing
//     changed.
//   - no answer: [ErrPublishUnconfirmed] (nil *Reply; the command may be
//     stored), [ErrNoStream] (nil *Reply; it is not), [ErrResultTimeout]
//     (a *Reply without a Result; it is stored and will run). In each case
//     sending again with the same key is safe and returns the one outcome.
//
// [Client.Status] reads a key's stored outcome without sending anything.
package client
