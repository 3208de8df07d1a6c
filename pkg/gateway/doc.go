// Package gateway owns idempay's HTTP gateway: the handler that puts web
// and mobile clients on the same pipeline as pkg/client, following the IETF
// draft "The Idempotency-Key HTTP Header Field" and Stripe's behaviour, as
// the contract's sections "The HTTP gateway" and "Callers and tenants"
// (v1.2) describe.
//
// It maps POST /v1/payments, POST /v1/refunds and POST /v1/carts/{cart_id}/items
// to payment.charge, payment.refund and cart.add, with the Idempotency-Key
// header as the command's key, waits for the answer up to Config.Wait
// through a pkg/client Client, and turns the answer into an HTTP status
// (see [Gateway.Handler] for the table). GET /v1/results/{key} reads a
// key's outcome. It also serves /healthz, /readyz and /metrics (the last
// two only when no operator address takes them, Config.SeparateOperations),
// the OpenAPI 3.1 description (/openapi.json, the file openapi.json of
// this package, served as is) and a checkout page (/) that shows a browser
// client doing retries right.
//
// # Callers and tenants
//
// Every /v1/ request is authenticated by Config.Auth ([APIKeys], [JWT], a
// [Chain] of both, or [NoAuth] for one's own machine) and belongs to one
// tenant. The tenant's Idempotency-Key (any 1-255 visible ASCII
// characters) is scoped to it with client.ScopedKey, a UUIDv5 that is the
// operation's key everywhere downstream: the workers, Redis and the
// provider never learn about tenants, and two tenants that send one key
// make two operations; neither can read, replay, block or reuse the
// other's. Answers show the caller's own key. Each tenant has its own
// rate, burst and concurrency limits (429 rate_limited past them), so one
// noisy tenant never slows another at this gateway. Every response
// carries Request-Id, and every request gets one audit log line (request
// id, tenant, key, status; never a credential).
//
// # State
//
// Whether a key's first request is still in flight is read from NATS: a
// publish that JetStream drops as a duplicate names the earlier message's
// sequence, and that message is either still in the command stream (in
// flight: 409), or gone, in which case its outcome, if it has one, is
// already in the result stream (a replay), and otherwise what became of
// it (endedWithoutOutcome) says whether the operation certainly did not
// take effect. What no stream says (that a command was answered 202, or
// that a message was refused) is kept in a small JetStream key-value
// bucket (stateStore), so that any replica answers alike, also after a
// restart. No gateway process holds state that decides an answer, but
// its tenants' rate limiters: N replicas allow a tenant N times its
// limits.
//
// Like every client-side package it never imports the worker's engine,
// store, operations or simulated provider (.golangci.yaml, depguard).
package gateway
