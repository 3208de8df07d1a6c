// Package console owns the operators' web console that cmd/console
// serves: plain server-rendered HTML (html/template, with its pages and
// stylesheet embedded: nothing is fetched at run time, and no script runs
// in the browser), behind a login on the gateway's authentication with
// the operator role (an API-key line with role=operator, or a JWT whose
// role claim holds it).
//
// Its pages: the overview (commands a second by kind and outcome, p50 and
// p99, in flight, from the workers' /metrics it scrapes; pending and
// redelivered commands from the durable consumer; dead letters and keys
// whose outcome is unknown), the dead letters with filters and bulk
// replay and purge, the keys told outcome_unknown and their resolution,
// the key inspector with its timeline and the eviction of a record (with
// a confirmation that says what it means), and the audit log. What it
// does to idempay it does through package admin, as the producer's key
// and dlq commands do. Every change is a POST with the session's CSRF
// token, and is written to the audit log.
package console
