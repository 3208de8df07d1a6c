// Package gateway owns idempay's HTTP gateway: the handler that puts web
// and mobile clients on the same pipeline as pkg/client, following the IETF
// draft "The Idempotency-Key HTTP Header Field" and Stripe's behaviour, as
// the contract's section "The HTTP gateway" describes.
//
// It maps POST /v1/payments, POST /v1/refunds and POST /v1/carts/{cart_id}/items
// to payment.charge, payment.refund and cart.add, with the Idempotency-Key
// header as the command's key, waits for the answer up to Config.Wait
// through a pkg/client Client, and turns the answer into an HTTP status
// (see [Gateway.Handler] for the table). GET /v1/results/{key} reads a
// key's stored outcome. It also serves /healthz, /readyz, /metrics, the
// OpenAPI 3.1 description (/openapi.json, the file openapi.json of this
// package, served as is) and a checkout page (/) that shows a browser
// client doing retries right.
//
// The gateway is stateless: several of them may run behind a load
// balancer, and no answer depends on what one of them remembers. Whether
// a key's first request is still in flight is read from NATS: a publish
// that JetStream drops as a duplicate names the earlier message's
// sequence, and that message is either still in the command stream (in
// flight: 409), or gone, in which case its outcome, if it has one, is
// already in the result stream (a replay), and otherwise its dead letter
// says whether the operation certainly did not take effect.
//
// Like every client-side package it never imports the worker's engine,
// store, operations or simulated provider (.golangci.yaml, depguard).
package gateway
