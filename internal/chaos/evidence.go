package chaos

import (
	"sync"
	"time"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/messages"
)

// KindProbe is the send kind of a recovery probe: a fresh cart.add sent
// after a fault heals, whose answer time is the recovery time.
const KindProbe load.SendKind = "probe"

// evidence is what the clients of one scenario saw while it ran: every send
// and its reply, every poison message, and every answer on result.> that
// the suite's live subscription caught. The auditor adds to it what it
// reads afterwards.
type evidence struct {
	mu     sync.Mutex
	sends  []load.Sent
	poison []poisonSent
	live   map[string][]messages.Result
}

func newEvidence() *evidence { return &evidence{live: map[string][]messages.Result{}} }

func (ev *evidence) sent(s load.Sent) {
	ev.mu.Lock()
	ev.sends = append(ev.sends, s)
	ev.mu.Unlock()
}

func (ev *evidence) poisoned(p poisonSent) {
	ev.mu.Lock()
	ev.poison = append(ev.poison, p)
	ev.mu.Unlock()
}

func (ev *evidence) heard(r messages.Result) {
	ev.mu.Lock()
	ev.live[r.Key] = append(ev.live[r.Key], r)
	ev.mu.Unlock()
}

// snapshot returns copies, for the auditor.
func (ev *evidence) snapshot() ([]load.Sent, []poisonSent, map[string][]messages.Result) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	live := make(map[string][]messages.Result, len(ev.live))
	for k, v := range ev.live {
		live[k] = append([]messages.Result(nil), v...)
	}
	return append([]load.Sent(nil), ev.sends...), append([]poisonSent(nil), ev.poison...), live
}

// poisonSent is one poison message: a raw JetStream publish a worker must
// refuse with Want.
type poisonSent struct {
	What    string // e.g. "unknown field"
	Key     string // its Nats-Msg-Id, "" for none
	Subject string
	ReplyTo string // where the rejection must come (always set)
	Want    string // the rejection code it must get
	Acked   bool   // JetStream acknowledged the publish
	At      time.Time
}
