package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// observed is everything the auditor looks at, all of it what a user of
// idempay can see: what the clients sent and got back, the answers on
// result.> (live), rejected.> and the poison messages' reply subjects (kept
// by the audit stream), the RESULTS and DEADLETTER streams, and, in Redis,
// the simulated provider's ledger and the carts. Never an idempotency
// record.
type observed struct {
	sends  []load.Sent
	poison []poisonSent
	live   map[string][]messages.Result // result.<key>, as heard

	stored      map[string]messages.Result   // RESULTS: the last outcome of each key
	deadLetters []client.DeadLetter          // DEADLETTER
	rejected    map[string][]messages.Result // rejected.<key>, kept by the audit stream
	replies     map[string][]messages.Result // chaos.reply.*, by subject

	provider ledger.Provider // the simulated provider's ledger
	carts    map[string]map[string]int64
}

// audit reads what a user can see and checks it, filling res.
func (e *Env) audit(ctx context.Context, res *Result) error {
	o := &observed{}
	o.sends, o.poison, o.live = e.ev.snapshot()
	if err := e.readStreams(ctx, o); err != nil {
		return err
	}
	if err := readLedger(ctx, e.rdb, o); err != nil {
		return err
	}
	a := newAuditor(o)
	a.check()
	for inv, vs := range a.violations {
		res.Violations[inv] = append(res.Violations[inv], vs...)
	}
	violations, stats := e.ws.findings()
	res.Violations[Workers] = append(res.Violations[Workers], violations...)
	res.Stats = a.stats
	res.Workers = stats
	return nil
}

// readStreams reads RESULTS (by key, as client.Status does), DEADLETTER
// and the audit stream.
func (e *Env) readStreams(ctx context.Context, o *observed) error {
	keys := map[string]bool{}
	for _, s := range o.sends {
		keys[s.Key] = true
	}
	o.stored = map[string]messages.Result{}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	sem := make(chan struct{}, 8)
	for key := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r, err := e.client.Status(ctx, key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				o.stored[key] = *r
			case !errors.Is(err, client.ErrNotFound) && firstErr == nil:
				firstErr = fmt.Errorf("chaos: read the outcome of %s: %w", key, err)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	var err error
	if o.deadLetters, err = e.client.DeadLetters(ctx); err != nil {
		return err
	}
	o.rejected, o.replies = map[string][]messages.Result{}, map[string][]messages.Result{}
	stream, err := e.js.Stream(ctx, auditStream)
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	rejectedRoot := messages.DefaultSubjects().Rejected + "."
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("chaos: read %s %d: %w", auditStream, seq, err)
		}
		r, err := messages.DecodeResult(m.Data)
		if err != nil {
			return fmt.Errorf("chaos: an undecodable answer on %s: %w", m.Subject, err)
		}
		if key, ok := strings.CutPrefix(m.Subject, rejectedRoot); ok {
			o.rejected[key] = append(o.rejected[key], r)
		} else {
			o.replies[m.Subject] = append(o.replies[m.Subject], r)
		}
	}
	return nil
}

// readLedger reads the simulated provider's ledger (as the one ledger
// checker reads it) and every cart.
func readLedger(ctx context.Context, rdb *redis.Client, o *observed) error {
	var err error
	if o.provider, err = ledger.ReadProvider(ctx, rdb, layout.Sim("", false)); err != nil {
		return err
	}
	o.carts, err = ledger.ScanCarts(ctx, rdb, "")
	return err
}

// Stats is what the auditor counted, for the report.
type Stats struct {
	// Commands is the keys the load and the probes sent; Sends their sends;
	// Unconfirmed the keys none of whose publishes JetStream acknowledged.
	Commands, Sends, Unconfirmed int
	// Poison is the poison messages published (and acknowledged).
	Poison, PoisonAcked int
	// Succeeded and Failed count keys by outcome; DeadLettered and
	// OutcomeUnknown the keys with a dead letter of each effect.
	Succeeded, Failed, DeadLettered, OutcomeUnknown int
	// ExtraCalls is the provider calls beyond the first, over every charge
	// key (sim:calls).
	ExtraCalls int64
	// Reused counts the re-uses of a key with another payload refused.
	Reused int
}

// keyFacts is one key as the auditor sees it.
type keyFacts struct {
	key         string
	cmd         messages.Command // the key's command (its first send that is no re-use)
	reuse       messages.Command // the other payload it was re-used with, if any
	sends       []load.Sent
	accepted    bool // a send of cmd got a PubAck: it is in COMMANDS, or was
	reuseStored bool // a re-use reached COMMANDS (not dropped as a duplicate)
	// lastPublish is the latest moment a send of cmd may have put a new
	// message in COMMANDS: a send's start when its first publish was
	// acknowledged as new, its end when a retried or unconfirmed publish may
	// have landed at any time of it; a duplicate stored nothing.
	lastPublish time.Time

	outcomes   []sourced // succeeded / failed answers, from every source
	rejections []sourced
	dead       []client.DeadLetter
}

// sourced is an answer and where it was seen.
type sourced struct {
	from string
	res  messages.Result
}

type auditor struct {
	o          *observed
	keys       map[string]*keyFacts
	order      []string
	violations map[Invariant][]string
	stats      Stats
}

func newAuditor(o *observed) *auditor {
	a := &auditor{o: o, keys: map[string]*keyFacts{}, violations: map[Invariant][]string{}}
	for _, s := range o.sends {
		k := a.keys[s.Key]
		if k == nil {
			k = &keyFacts{key: s.Key}
			a.keys[s.Key] = k
			a.order = append(a.order, s.Key)
		}
		k.sends = append(k.sends, s)
		if s.Kind == load.KindReuse {
			k.reuse = s.Command
			if s.Reply != nil && !s.Reply.Duplicate {
				k.reuseStored = true
			}
			continue
		}
		if k.cmd == nil {
			k.cmd = s.Command
		}
		if s.Reply != nil {
			k.accepted = true
			if st := s.Reply.Result.Status; st.IsOutcome() {
				k.outcomes = append(k.outcomes, sourced{"the client (" + string(s.Kind) + " send)", s.Reply.Result})
			} else if st == messages.StatusRejected {
				k.rejections = append(k.rejections, sourced{"the client (" + string(s.Kind) + " send)", s.Reply.Result})
			}
		}
		var published time.Time
		switch {
		case s.Reply == nil:
			published = s.At.Add(s.Took) // unconfirmed: it may have landed
		case s.Reply.Duplicate:
		case s.Reply.PublishAttempts <= 1:
			published = s.At
		default:
			published = s.At.Add(s.Took)
		}
		if published.After(k.lastPublish) {
			k.lastPublish = published
		}
	}
	for key, rs := range o.live {
		if k := a.keys[key]; k != nil {
			for _, r := range rs {
				if r.Status.IsOutcome() {
					k.outcomes = append(k.outcomes, sourced{"result." + key, r})
				}
			}
		}
	}
	for key, r := range o.stored {
		if k := a.keys[key]; k != nil {
			k.outcomes = append(k.outcomes, sourced{"RESULTS", r})
		}
	}
	for key, rs := range o.rejected {
		if k := a.keys[key]; k != nil {
			for _, r := range rs {
				k.rejections = append(k.rejections, sourced{"rejected." + key, r})
			}
		}
	}
	for _, dl := range o.deadLetters {
		if k := a.keys[dl.Key]; k != nil {
			k.dead = append(k.dead, dl)
		}
	}
	return a
}

func (a *auditor) failf(inv Invariant, format string, args ...any) {
	a.violations[inv] = append(a.violations[inv], fmt.Sprintf(format, args...))
}

// outcome returns the key's outcome: its first outcome answer from any
// source (check agree reports any other that differs).
func (k *keyFacts) outcome() (messages.Result, bool) {
	if len(k.outcomes) == 0 {
		return messages.Result{}, false
	}
	return k.outcomes[0].res, true
}

func (k *keyFacts) deadWith(effect string) bool {
	for _, dl := range k.dead {
		if dl.Effect == effect {
			return true
		}
	}
	return false
}

func (a *auditor) check() {
	for _, key := range a.order {
		k := a.keys[key]
		a.stats.Commands++
		a.stats.Sends += len(k.sends)
		if !k.accepted {
			a.stats.Unconfirmed++
		}
		if out, ok := k.outcome(); ok {
			if out.Status == messages.StatusSucceeded {
				a.stats.Succeeded++
			} else {
				a.stats.Failed++
			}
		}
		if k.deadWith("none") {
			a.stats.DeadLettered++
		}
		if k.deadWith("unknown") {
			a.stats.OutcomeUnknown++
		}
		for _, s := range k.sends {
			if s.Kind == load.KindReuse && errors.Is(s.Err, client.ErrKeyReused) {
				a.stats.Reused++
			}
		}
		if k.cmd == nil {
			continue // only re-uses of a key the suite never sent otherwise: not made
		}
		a.checkAnswered(k)
		a.checkBounded(k)
		a.checkAgree(k)
		a.checkDeadLetters(k)
	}
	a.checkPoison()
	a.checkLedger()
}

// checkAnswered: an accepted command ends with an outcome or a dead letter;
// a re-use that reached COMMANDS ends refused.
func (a *auditor) checkAnswered(k *keyFacts) {
	if k.accepted && len(k.outcomes) == 0 && len(k.dead) == 0 {
		a.failf(Answered, "%s %s: accepted by JetStream (PubAck) but never answered: no outcome in RESULTS or on result.%s, no answer to any of its %d sends, no dead letter%s",
			k.cmd.Kind(), k.key, k.key, len(k.sends), rejectionsNote(k))
	}
	if k.reuseStored && !k.reuseRefused() {
		a.failf(Answered, "%s %s: re-used with another payload, which JetStream accepted, and never refused as %s", k.cmd.Kind(), k.key, messages.CodeKeyReused)
	}
}

// checkBounded: no send took longer than its client's bounds allow.
func (a *auditor) checkBounded(k *keyFacts) {
	for _, s := range k.sends {
		if s.Took > sendBound {
			a.failf(Bounded, "%s %s: a %s send took %v, longer than the client's bounds allow (%v): %v",
				k.cmd.Kind(), k.key, s.Kind, s.Took.Round(time.Millisecond), sendBound, s.Err)
		}
	}
}

func rejectionsNote(k *keyFacts) string {
	if len(k.rejections) == 0 {
		return ""
	}
	codes := make([]string, 0, len(k.rejections))
	for _, r := range k.rejections {
		codes = append(codes, r.res.Code)
	}
	return "; rejected as " + strings.Join(codes, ", ")
}

func (k *keyFacts) reuseRefused() bool {
	for _, s := range k.sends {
		if s.Kind == load.KindReuse && errors.Is(s.Err, client.ErrKeyReused) {
			return true
		}
	}
	for _, r := range k.rejections {
		if r.res.Code == messages.CodeKeyReused {
			return true
		}
	}
	return false
}

// checkAgree: every outcome answer of the key is one and the same, is the
// outcome of the key's command, and fits it; a re-use never gets an
// outcome; no other rejection than a re-use's or a dead letter's.
func (a *auditor) checkAgree(k *keyFacts) {
	fp := messages.Fingerprint(k.cmd)
	var first *sourced
	disagreed := false
	for i := range k.outcomes {
		o := &k.outcomes[i]
		if o.res.Key != k.key || o.res.Kind != k.cmd.Kind() || (o.res.Fingerprint != "" && o.res.Fingerprint != fp) {
			a.failf(Agree, "%s %s: %s answered the outcome of another command: %s", k.cmd.Kind(), k.key, o.from, o.res.Marshal())
			continue
		}
		if first == nil {
			first = o
			continue
		}
		if !sameOutcome(first.res, o.res) && !disagreed {
			a.failf(Agree, "%s %s: answers disagree: %s said %s; %s said %s", k.cmd.Kind(), k.key, first.from, first.res.Marshal(), o.from, o.res.Marshal())
			disagreed = true // one finding per key
		}
	}
	if first != nil {
		if why := fits(k.cmd, first.res); why != "" {
			a.failf(Agree, "%s %s: the outcome does not fit its command (%s): %s", k.cmd.Kind(), k.key, why, first.res.Marshal())
		}
	}
	for _, s := range k.sends {
		if s.Kind != load.KindReuse || s.Reply == nil || !s.Reply.Result.Status.IsOutcome() || errors.Is(s.Err, client.ErrKeyReused) {
			continue
		}
		a.failf(Agree, "%s %s: re-used with another payload and answered %s instead of %s: %s",
			k.cmd.Kind(), k.key, s.Reply.Result.Status, messages.CodeKeyReused, s.Reply.Result.Marshal())
	}
	for _, r := range k.rejections {
		switch r.res.Code {
		case messages.CodeDeadLettered, messages.CodeOutcomeUnknown: // checked with the dead letters
		case messages.CodeKeyReused:
			if k.reuse == nil {
				a.failf(Agree, "%s %s: refused as %s by %s, but it was only ever sent with one payload", k.cmd.Kind(), k.key, r.res.Code, r.from)
			}
		default:
			a.failf(Agree, "%s %s: a valid command refused as %s by %s: %s", k.cmd.Kind(), k.key, r.res.Code, r.from, r.res.Message)
		}
	}
}

// sameOutcome compares two answers but for replayed.
func sameOutcome(x, y messages.Result) bool {
	x.Replayed, y.Replayed = false, false
	return bytes.Equal(x.Marshal(), y.Marshal())
}

// fits returns why an outcome cannot be its command's, "" when it can.
func fits(cmd messages.Command, res messages.Result) string {
	switch c := cmd.(type) {
	case messages.ChargeRequest:
		declines := strings.HasPrefix(c.AccountID, layout.SimDeclinePrefix)
		if res.Status == messages.StatusFailed {
			if !declines || res.Code != messages.CodeCardDeclined {
				return "a failed charge must be a declined card, on an account the provider declines"
			}
			return ""
		}
		if declines {
			return "the provider declines this account"
		}
		var d messages.ChargeData
		if json.Unmarshal(res.Data, &d) != nil || d.AccountID != c.AccountID || d.Amount != c.Amount || d.Currency != c.Currency || d.ChargeID == "" {
			return "the charge is not the one asked for"
		}
	case messages.CartAddRequest:
		var d messages.CartAddData
		if res.Status != messages.StatusSucceeded {
			return "a cart add cannot fail"
		}
		if json.Unmarshal(res.Data, &d) != nil || d.CartID != c.CartID || d.SKU != c.SKU || d.Quantity < c.Quantity {
			return "the line is not the one added to"
		}
	case messages.RefundRequest:
		if res.Status == messages.StatusSucceeded {
			var d messages.RefundData
			if json.Unmarshal(res.Data, &d) != nil || d.Amount != c.Amount || d.RefundID == "" {
				return "the refund is not the one asked for"
			}
		}
	}
	return ""
}

// checkDeadLetters: a key is never dead-lettered while it has an outcome;
// a key told dead_lettered took no effect (unless re-sent after it); every
// dead_lettered or outcome_unknown answer has its dead letter.
func (a *auditor) checkDeadLetters(k *keyFacts) {
	for _, dl := range k.dead {
		for _, o := range k.outcomes {
			if !o.res.ProcessedAt.After(dl.DeadLettered) {
				a.failf(DeadLetters, "%s %s: dead-lettered (%s) at %s although its outcome, processed at %s, was stored: %s",
					k.cmd.Kind(), k.key, dl.Effect, dl.DeadLettered.Format(time.RFC3339Nano), o.res.ProcessedAt.Format(time.RFC3339Nano), o.res.Marshal())
				break
			}
		}
		if dl.Effect != "none" || k.lastPublish.After(dl.DeadLettered) {
			continue // it may have taken effect, or a re-send re-drove it
		}
		if len(k.outcomes) > 0 {
			a.failf(DeadLetters, "%s %s: told dead_lettered (no effect) at %s, and still got an outcome without a re-send: %s",
				k.cmd.Kind(), k.key, dl.DeadLettered.Format(time.RFC3339Nano), k.outcomes[0].res.Marshal())
		}
		// An effect at the provider after it: checkLedger.
	}
	for _, r := range k.rejections {
		want := map[string]string{messages.CodeDeadLettered: "none", messages.CodeOutcomeUnknown: "unknown"}[r.res.Code]
		// A key dead-lettered as unknown and then resolved by the workers
		// to nothing (voided) is answered dead_lettered by the resolver: its
		// dead letter says unknown.
		resolved := r.res.Code == messages.CodeDeadLettered && k.deadWith("unknown")
		if want != "" && !k.deadWith(want) && !resolved {
			a.failf(DeadLetters, "%s %s: answered %s by %s, but DEADLETTER holds no such dead letter of it", k.cmd.Kind(), k.key, r.res.Code, r.from)
		}
		// A dead_lettered answer (from a dead letter or from a resolution)
		// followed by an effect at the provider: checkLedger.
	}
}

// checkPoison: every acknowledged poison message gets its rejection, on
// its reply subject (and rejected.<key> when it has a valid key), and
// nothing else.
func (a *auditor) checkPoison() {
	for _, p := range a.o.poison {
		a.stats.Poison++
		if !p.Acked {
			continue
		}
		a.stats.PoisonAcked++
		got := append([]messages.Result(nil), a.o.replies[p.ReplyTo]...)
		if messages.ValidKey(p.Key) {
			got = append(got, a.o.rejected[p.Key]...)
		}
		ok := false
		for _, r := range got {
			if r.Status != messages.StatusRejected || r.Code != p.Want {
				a.failf(Answered, "poison (%s, key %q) answered %s/%s, want rejected/%s", p.What, p.Key, r.Status, r.Code, p.Want)
				continue
			}
			ok = true
		}
		if !ok && len(got) == 0 {
			a.failf(Answered, "poison (%s, key %q, sent %s): accepted by JetStream and never answered (want rejected/%s on %s)",
				p.What, p.Key, p.At.Format(time.RFC3339Nano), p.Want, p.ReplyTo)
		}
		if o, found := a.o.stored[p.Key]; found {
			a.failf(Agree, "poison (%s, key %s) has an outcome in RESULTS: %s", p.What, p.Key, o.Marshal())
		}
	}
}

// checkLedger: the charges and refunds, judged by the one ledger checker
// (internal/ledger) on what the suite saw: the provider's effects are
// exactly what the answers claim - a succeeded charge or refund is the
// provider's, a failed one has none, a dead_lettered answer or a dead
// letter copied with Dlq-Effect none is never followed by an effect
// unless a re-send re-drove the key - refunds stay within their charge,
// and nothing is charged for a key never sent. Its dead-letter findings
// are reported under DeadLetters, the others under Charges; its
// one-outcome and stranded findings are the auditor's own checks (Agree,
// Answered), which know the poison messages too; its carts findings are
// reported under Carts.
func (a *auditor) checkLedger() {
	for _, key := range a.order {
		if n := a.o.provider.Calls[key]; n > 1 && isChargeCmd(a.keys[key].cmd) {
			a.stats.ExtraCalls += n - 1
		}
	}
	for _, v := range ledger.Check(ledgerInput(a.o)).Violations {
		switch {
		case v.Invariant == ledger.Claimed && v.Rule == ledger.RuleDeadLetter:
			a.failf(DeadLetters, "%s", v.Text)
		case v.Invariant == ledger.Claimed && v.Rule == ledger.RuleNoCopy:
			// checkDeadLetters' own, which knows a resolution's answer.
		case v.Invariant == ledger.Claimed, v.Invariant == ledger.Refunds, v.Invariant == ledger.DoubleCharge:
			a.failf(Charges, "%s", v.Text)
		case v.Invariant == ledger.Carts:
			a.failf(Carts, "%s", v.Text)
		}
	}
}

// ledgerInput is what the suite saw, as the ledger checker reads it. The
// answers heard live and kept by the audit stream have no time of their
// own: the checker then takes their processed_at.
func ledgerInput(o *observed) *ledger.Input {
	in := &ledger.Input{Stored: o.stored}
	for _, s := range o.sends {
		role := ledger.RoleResend
		if s.Kind == load.KindReuse {
			role = ledger.RoleReuse
		}
		ls := ledger.Send{Key: s.Key, Command: s.Command, Role: role, At: s.At, Done: s.At.Add(s.Took),
			KeyReused: errors.Is(s.Err, client.ErrKeyReused)}
		if s.Err != nil {
			ls.Err = s.Err.Error()
		}
		if s.Reply != nil {
			ls.Accepted, ls.Duplicate, ls.PublishAttempts = true, s.Reply.Duplicate, s.Reply.PublishAttempts
			if s.Reply.Result.Status != "" {
				told := s.Reply.Result
				ls.Told = &told
			}
		}
		in.Sends = append(in.Sends, ls)
	}
	for key, rs := range o.live {
		for _, r := range rs {
			in.Heard = append(in.Heard, ledger.Heard{Subject: "result." + key, Result: r})
		}
	}
	for key, rs := range o.rejected {
		for _, r := range rs {
			in.Heard = append(in.Heard, ledger.Heard{Subject: "rejected." + key, Result: r})
		}
	}
	in.DeadLetters = []ledger.DeadLetter{}
	for _, dl := range o.deadLetters {
		in.DeadLetters = append(in.DeadLetters, ledger.DeadLetter{Key: dl.Key, Kind: dl.Kind, Effect: dl.Effect,
			At: dl.DeadLettered, Published: dl.Published, Body: dl.Body})
	}
	in.Provider, in.Carts = o.provider, o.carts
	return in
}

func isChargeCmd(c messages.Command) bool {
	_, ok := c.(messages.ChargeRequest)
	return ok
}
