package ledger

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Invariant names a promise the checker holds the system to (see the
// package doc).
type Invariant string

// The invariants, in the order reports list them.
const (
	Claimed      Invariant = "claimed"
	OneOutcome   Invariant = "one-outcome"
	Stranded     Invariant = "stranded"
	Refunds      Invariant = "refunds"
	DoubleCharge Invariant = "double-charge"
	Carts        Invariant = "carts"
)

// Invariants lists every Invariant.
var Invariants = []Invariant{Claimed, OneOutcome, Stranded, Refunds, DoubleCharge, Carts}

// Describe says what an invariant promises, in one line.
func (i Invariant) Describe() string {
	switch i {
	case Claimed:
		return "nothing claimed that the ledger does not hold: succeeded is the provider's effect, failed has none, dead_lettered is never followed by an effect of a call made before it"
	case OneOutcome:
		return "one outcome per key, identical but for replayed; no client takes another message's answer for its own"
	case Stranded:
		return "every accepted command ends answered, refused or dead-lettered; COMMANDS drains; outcome_unknown resolves (v1.2)"
	case Refunds:
		return "refunds never above the charge, at the provider or in the answers"
	case DoubleCharge:
		return "no key takes effect twice; nothing takes effect for a key never sent as that command"
	case Carts:
		return "every cart line holds the sum of its keys' distinct succeeded adds, and no cart holds anything else"
	}
	return string(i)
}

// Violation is one disagreement.
type Violation struct {
	Invariant Invariant
	// Rule names which rule of a Claimed violation broke (RuleOutcome,
	// RuleDeadLetter, RuleNoCopy), for a harness that reports them apart;
	// "" for the other invariants.
	Rule string
	// Key is the key it concerns, "" for the run as a whole.
	Key string
	// Text says what disagrees with what, with the evidence.
	Text string
}

// The rules of Claimed.
const (
	// RuleOutcome: a succeeded or failed answer is not what the provider
	// holds.
	RuleOutcome = "outcome"
	// RuleDeadLetter: a claim that the key took no effect (a dead_lettered
	// answer, or a dead letter copied with Dlq-Effect none) is followed by
	// an effect made by a call that started before it.
	RuleDeadLetter = "dead_letter"
	// RuleNoCopy: a dead_lettered answer without a copy in DEADLETTER.
	RuleNoCopy = "no_copy"
)

func (v Violation) String() string { return string(v.Invariant) + ": " + v.Text }

// Stats is what the checker counted.
type Stats struct {
	// Keys is the keys sent; Sends their sends.
	Keys, Sends int
	// Final counts the keys by what they came to: "succeeded",
	// "failed/<code>", "dead_lettered", "outcome_unknown" or "unanswered".
	Final map[string]int
	// Answers counts every answer a client was told or heard, by
	// "<status>" or "<status>/<code>".
	Answers map[string]int
	// Charged and Refunded count the run's keys the provider holds a charge
	// or refund for; Voided the keys it voided.
	Charged, Refunded, Voided int
	// UnknownCharged counts keys left outcome_unknown with an effect at the
	// provider: the truth a resolver must find (judged only with
	// RequireResolution).
	UnknownCharged int
	// CartLines is the (cart, SKU) lines judged (Input.Carts); CartUnits
	// the units they hold, CartWant the units the succeeded adds sum to.
	CartLines           int
	CartUnits, CartWant int64
}

// Report is the checker's verdict.
type Report struct {
	Violations []Violation
	Stats      Stats
}

// OK reports whether nothing was violated.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Count returns how many violations of inv the report holds.
func (r *Report) Count(inv Invariant) int {
	n := 0
	for _, v := range r.Violations {
		if v.Invariant == inv {
			n++
		}
	}
	return n
}

// sourced is an answer and where and when it was seen.
type sourced struct {
	from string
	at   time.Time
	res  messages.Result
	send *Send // the send that was told it, nil for an answer heard or stored
}

// keyFacts is one key as the checker sees it.
type keyFacts struct {
	key    string
	kind   string                      // the first send's command kind
	first  time.Time                   // its first send
	bodies map[string]messages.Command // fingerprint -> a command sent with the key
	sends  []*Send
	// lastPublish is the latest moment a send may have stored a new
	// message of the key in COMMANDS (zero: none did).
	lastPublish time.Time
	outcomes    []sourced // succeeded and failed, from every source
	notices     []sourced // dead_lettered and outcome_unknown
	refusals    []sourced // idempotency_key_reused
	dead        []DeadLetter
	calls       []Call
}

type checker struct {
	in    *Input
	keys  map[string]*keyFacts
	order []string
	rep   *Report
	// base is the first send of the run: times in texts are relative to it.
	base time.Time
}

// Check judges in and returns every violation, in key order, with the
// counts. It does no I/O.
func Check(in *Input) *Report {
	c := &checker{in: in, keys: map[string]*keyFacts{},
		rep: &Report{Stats: Stats{Final: map[string]int{}, Answers: map[string]int{}}}}
	c.gather()
	for _, key := range c.order {
		k := c.keys[key]
		c.checkOneOutcome(k)
		c.checkClaimed(k)
		c.checkStranded(k)
		c.checkDoubleCharge(k)
		c.count(k)
	}
	c.checkQueue()
	c.checkPhantoms()
	c.checkRefunds()
	c.checkCarts()
	return c.rep
}

func (c *checker) failf(inv Invariant, key, format string, args ...any) {
	c.rep.Violations = append(c.rep.Violations, Violation{Invariant: inv, Key: key, Text: fmt.Sprintf(format, args...)})
}

// claimf is failf for a rule of Claimed.
func (c *checker) claimf(rule, key, format string, args ...any) {
	c.rep.Violations = append(c.rep.Violations, Violation{Invariant: Claimed, Rule: rule, Key: key, Text: fmt.Sprintf(format, args...)})
}

// rel formats t relative to the run's first send.
func (c *checker) rel(t time.Time) string {
	if t.IsZero() {
		return "(never)"
	}
	return fmt.Sprintf("+%.3fs", t.Sub(c.base).Seconds())
}

func (c *checker) gather() {
	in := c.in
	for _, s := range in.Sends {
		if c.base.IsZero() || s.At.Before(c.base) {
			c.base = s.At
		}
	}
	for i := range in.Sends {
		s := &in.Sends[i]
		k := c.keys[s.Key]
		if k == nil {
			k = &keyFacts{key: s.Key, kind: s.Command.Kind(), first: s.At, bodies: map[string]messages.Command{}}
			c.keys[s.Key] = k
			c.order = append(c.order, s.Key)
		}
		k.bodies[messages.Fingerprint(s.Command)] = s.Command
		k.sends = append(k.sends, s)
		c.rep.Stats.Sends++
		if published := s.published(); published.After(k.lastPublish) {
			k.lastPublish = published
		}
		if s.Told == nil {
			continue
		}
		c.rep.Stats.Answers[answerLabel(*s.Told)]++
		from := fmt.Sprintf("the client (%s send at %s)", s.Role, c.rel(s.At))
		c.file(k, sourced{from: from, at: s.Done, res: *s.Told, send: s}, s)
	}
	sort.Strings(c.order)
	for _, h := range in.Heard {
		k := c.keys[h.Result.Key]
		if k == nil {
			continue // another run's, or a poison message's
		}
		c.rep.Stats.Answers[answerLabel(h.Result)]++
		c.file(k, sourced{from: h.Subject, at: h.At, res: h.Result}, nil)
	}
	for key, r := range in.Stored {
		if k := c.keys[key]; k != nil {
			c.file(k, sourced{from: "RESULTS", at: time.Time{}, res: r}, nil)
		}
	}
	for _, dl := range in.DeadLetters {
		if k := c.keys[dl.Key]; k != nil {
			k.dead = append(k.dead, dl)
		}
	}
	for _, k := range c.keys {
		sort.Slice(k.dead, func(i, j int) bool { return k.dead[i].At.Before(k.dead[j].At) })
	}
	for _, call := range in.Calls {
		if k := c.keys[call.Key]; k != nil {
			k.calls = append(k.calls, call)
		}
	}
}

// file sorts one answer into the key's outcomes, notices or refusals. A
// rejection a client took for a reused key is not the key's notice: the
// one-outcome check judges it.
func (c *checker) file(k *keyFacts, s sourced, send *Send) {
	switch {
	case s.res.Status.IsOutcome():
		k.outcomes = append(k.outcomes, s)
	case s.res.Code == messages.CodeDeadLettered || s.res.Code == messages.CodeOutcomeUnknown:
		if send != nil && send.Role == RoleReuse {
			return
		}
		k.notices = append(k.notices, s)
	case s.res.Code == messages.CodeKeyReused:
		k.refusals = append(k.refusals, s)
	}
}

func answerLabel(r messages.Result) string {
	if r.Code == "" {
		return string(r.Status)
	}
	return string(r.Status) + "/" + r.Code
}

// outcome returns the key's outcome: its first outcome answer.
func (k *keyFacts) outcome() (messages.Result, bool) {
	if len(k.outcomes) == 0 {
		return messages.Result{}, false
	}
	return k.outcomes[0].res, true
}

// body returns the command the key's outcome (or, without one, its dead
// letter or its first send) belongs to.
func (k *keyFacts) body() messages.Command {
	if out, ok := k.outcome(); ok {
		if cmd, ok := k.bodies[out.Fingerprint]; ok {
			return cmd
		}
	}
	return k.sends[0].Command
}

// lastNotice returns the key's latest dead-letter notice, by when it was
// seen.
func (k *keyFacts) lastNotice() (sourced, bool) {
	var last sourced
	found := false
	for _, n := range k.notices {
		if !found || n.at.After(last.at) {
			last, found = n, true
		}
	}
	return last, found
}

// checkOneOutcome: every outcome answer is one and the same and belongs
// to a body sent with the key; every answer a client took as its own is
// its own.
func (c *checker) checkOneOutcome(k *keyFacts) {
	var first *sourced
	for i := range k.outcomes {
		o := &k.outcomes[i]
		if o.res.Key != k.key || o.res.Kind != k.kind {
			c.failf(OneOutcome, k.key, "%s %s: %s answered the outcome of another key or kind: %s", k.kind, k.key, o.from, o.res.Marshal())
			continue
		}
		if _, sent := k.bodies[o.res.Fingerprint]; o.res.Fingerprint != "" && !sent {
			c.failf(OneOutcome, k.key, "%s %s: %s answered an outcome whose fingerprint is of no body ever sent with the key: %s", k.kind, k.key, o.from, o.res.Marshal())
			continue
		}
		if first == nil {
			first = o
			continue
		}
		if !sameOutcome(first.res, o.res) {
			c.failf(OneOutcome, k.key, "%s %s: answers disagree: %s said %s; %s said %s", k.kind, k.key, first.from, first.res.Marshal(), o.from, o.res.Marshal())
			break // one finding per key
		}
	}
	out, hasOutcome := k.outcome()
	for _, s := range k.sends {
		fp := messages.Fingerprint(s.Command)
		if s.Told != nil && s.Told.Fingerprint != "" && s.Told.Fingerprint != fp {
			c.failf(OneOutcome, k.key, "%s %s: a %s send took an answer about another body (fingerprint %.12s, its own %.12s) for its own: %s",
				k.kind, k.key, s.Role, s.Told.Fingerprint, fp, s.Told.Marshal())
			continue
		}
		if s.KeyReused && hasOutcome && out.Fingerprint == fp {
			c.failf(OneOutcome, k.key, "%s %s: a %s send was told %s, but the key's outcome is its own command's (%s %s): it took another message's refusal for its own, and a client that obeys uses a new key",
				k.kind, k.key, s.Role, messages.CodeKeyReused, out.Status, out.Code)
			continue
		}
		if s.Told != nil && s.Duplicate && s.PublishAttempts == 1 && s.Told.Fingerprint == "" &&
			(s.Told.Code == messages.CodeDeadLettered || s.Told.Code == messages.CodeOutcomeUnknown) {
			if holder := k.holder(s); holder != nil && messages.Fingerprint(holder.Command) != fp {
				c.failf(OneOutcome, k.key, "%s %s: a %s send, dropped as a duplicate of a message with another body, was told %s: that message's notice, not its own",
					k.kind, k.key, s.Role, s.Told.Code)
			}
		}
	}
}

// holder returns the send whose message held the key when s was dropped
// as its duplicate: the latest send stored as new before s began.
func (k *keyFacts) holder(s *Send) *Send {
	var h *Send
	for _, o := range k.sends {
		if o.Accepted && !o.Duplicate && !o.Gateway && o.At.Before(s.At) && (h == nil || o.At.After(h.At)) {
			h = o
		}
	}
	return h
}

// sameOutcome compares two answers but for replayed.
func sameOutcome(x, y messages.Result) bool {
	x.Replayed, y.Replayed = false, false
	return bytes.Equal(x.Marshal(), y.Marshal())
}

// effectOp is the provider operation that takes a key's effect.
func effectOp(kind string) Op {
	if kind == messages.KindPaymentRefund {
		return OpRefund
	}
	return OpCharge
}

// effect returns the provider's effect for the key as JSON, and whether
// there is one. Cart adds have none here.
func (c *checker) effect(k *keyFacts) (string, bool) {
	switch k.kind {
	case messages.KindPaymentCharge:
		ch, ok := c.in.Provider.Charges[k.key]
		return string(ch.AppendJSON(nil)), ok
	case messages.KindPaymentRefund:
		r, ok := c.in.Provider.Refunds[k.key]
		if !ok {
			return "", false
		}
		b, _ := json.Marshal(r) //nolint:errchkjson // a plain struct always encodes
		return string(b), true
	}
	return "", false
}

// checkClaimed: the key's outcome is what the provider holds, and no claim
// that the key took no effect - a dead_lettered answer, or a dead letter
// copied with Dlq-Effect none - is followed by an effect a call made
// before it.
func (c *checker) checkClaimed(k *keyFacts) {
	if k.kind != messages.KindPaymentCharge && k.kind != messages.KindPaymentRefund {
		return
	}
	held, effected := c.effect(k)
	if out, ok := k.outcome(); ok {
		switch {
		case out.Status == messages.StatusSucceeded && !effected:
			c.claimf(RuleOutcome, k.key, "%s %s: answered succeeded (%s), but the provider holds nothing for the key%s", k.kind, k.key, out.Data, c.callStory(k))
		case out.Status == messages.StatusSucceeded:
			if why := c.sameEffect(k, out); why != "" {
				c.claimf(RuleOutcome, k.key, "%s %s: answered succeeded with %s, but %s: the provider holds %s", k.kind, k.key, out.Data, why, held)
			}
		case effected:
			c.claimf(RuleOutcome, k.key, "%s %s: answered failed (%s), but the provider holds %s%s", k.kind, k.key, out.Code, held, c.callStory(k))
		}
	}
	type claim struct {
		by      string
		seen, t time.Time // when it was made known, and the moment it speaks for
		send    *Send     // the send told it, if a send was
	}
	var claims []claim
	for _, n := range k.notices {
		if n.res.Code != messages.CodeDeadLettered {
			continue
		}
		t, copied := c.deadAt(k, n)
		if !copied && c.in.DeadLetters != nil {
			c.claimf(RuleNoCopy, k.key, "%s %s: told %s by %s, but DEADLETTER holds no copy of the key", k.kind, k.key, n.res.Code, n.from)
		}
		claims = append(claims, claim{by: "told dead_lettered by " + n.from, seen: n.at, t: t, send: n.send})
	}
	for _, dl := range k.dead {
		if dl.Effect == "none" {
			claims = append(claims, claim{by: "dead-lettered with Dlq-Effect none", seen: dl.At, t: dl.At})
		}
	}
	if !effected {
		return
	}
	for _, cl := range claims {
		if k.calls == nil && c.in.Calls == nil {
			// No call log: an effect after the claim is a violation unless
			// a re-send may have re-driven the key since.
			if !k.lastPublish.After(cl.t) {
				c.claimf(RuleDeadLetter, k.key, "%s %s: %s (dead letter at %s: \"did not take effect\"), but the provider holds %s and no re-send re-drove the key after it",
					k.kind, k.key, cl.by, c.rel(cl.t), held)
				return // one finding per key
			}
			continue
		}
		for _, call := range k.calls {
			if call.Op == effectOp(k.kind) && call.Effect && call.Start.Before(cl.t) {
				when := "before the dead letter: the key's history held a call that may have taken effect, and the answer forgot it"
				if call.EffectAt.After(cl.t) {
					when = "after the dead letter: the call was still in flight when the key was dead-lettered, and nothing stopped it"
				}
				c.claimf(RuleDeadLetter, k.key, "%s %s: %s at %s (dead letter at %s: \"did not take effect\"), but the provider holds %s, made by call #%d (%s), which started at %s, %v before the dead letter, and took effect at %s, %s%s",
					k.kind, k.key, cl.by, c.rel(cl.seen), c.rel(cl.t), held, call.N, call.Behaviour, c.rel(call.Start),
					cl.t.Sub(call.Start).Round(time.Millisecond), c.rel(call.EffectAt), when, c.callStory(k))
				return // one finding per key
			}
			// A call after the claim takes effect only for a re-drive: a
			// publish after the answer, by another send than the one told
			// (a send told the dead letter while its own message, stored
			// later, ran was told about another message: seed 718). A copy
			// of the command sent before it (after the dedupe window,
			// queued behind the lock) is the same command the client was
			// told will not take effect.
			last := k.lastPublishBut(cl.send)
			if call.Op == effectOp(k.kind) && call.Effect && !call.Start.Before(cl.t) && !last.After(cl.t) {
				c.claimf(RuleDeadLetter, k.key, "%s %s: %s at %s (dead letter at %s: \"did not take effect, nor will\"), but the provider holds %s, made by call #%d (%s) at %s, and no other send re-drove the key after the dead letter (the last publish was at %s)%s",
					k.kind, k.key, cl.by, c.rel(cl.seen), c.rel(cl.t), held, call.N, call.Behaviour, c.rel(call.Start),
					c.rel(last), c.callStory(k))
				return // one finding per key
			}
		}
	}
}

// lastPublishBut is the latest moment a send other than but may have
// stored a new message of the key (all of them when but is nil).
func (k *keyFacts) lastPublishBut(but *Send) time.Time {
	if but == nil {
		return k.lastPublish
	}
	var last time.Time
	for _, s := range k.sends {
		if p := s.published(); s != but && p.After(last) {
			last = p
		}
	}
	return last
}

// deadAt returns the moment a dead_lettered notice speaks for: the copy
// in DEADLETTER it announces (the latest made before it was seen), whose
// Dlq-Effect none was decided before the key's lock was released, so no
// re-drive can have called the provider before it. A notice that follows
// a copy with effect unknown was a resolution (v1.2), decided when it was
// processed. copied is false when DEADLETTER holds no copy of the key.
func (c *checker) deadAt(k *keyFacts, n sourced) (t time.Time, copied bool) {
	seen := n.at
	if seen.IsZero() {
		seen = n.res.ProcessedAt
	}
	var last *DeadLetter
	for i := range k.dead {
		if !k.dead[i].At.After(seen) {
			last = &k.dead[i]
		}
	}
	decided := n.res.ProcessedAt
	if decided.IsZero() {
		decided = seen // an answer that does not say (the gateway's problem body)
	}
	switch {
	case last == nil:
		return decided, len(k.dead) > 0
	case last.Effect == "none":
		return last.At, true
	default:
		return decided, true
	}
}

// sameEffect returns why a succeeded answer is not the provider's effect,
// "" when it is.
func (c *checker) sameEffect(k *keyFacts, out messages.Result) string {
	switch k.kind {
	case messages.KindPaymentCharge:
		var told messages.ChargeData
		if err := json.Unmarshal(out.Data, &told); err != nil {
			return "its data is not a charge"
		}
		held := c.in.Provider.Charges[k.key]
		if told != held {
			return "it is not the provider's charge"
		}
		if req, ok := k.body().(messages.ChargeRequest); ok && (held.AccountID != req.AccountID || held.Amount != req.Amount || held.Currency != req.Currency) {
			return fmt.Sprintf("the provider charged another account or amount than the command asked (%s %d %s)", req.AccountID, req.Amount, req.Currency)
		}
	case messages.KindPaymentRefund:
		var told messages.RefundData
		if err := json.Unmarshal(out.Data, &told); err != nil {
			return "its data is not a refund"
		}
		if told != c.in.Provider.Refunds[k.key] {
			return "it is not the provider's refund"
		}
	}
	return ""
}

// callStory lists the key's provider calls, for a violation's text.
func (c *checker) callStory(k *keyFacts) string {
	if len(k.calls) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("; the key's provider calls:")
	for _, call := range k.calls {
		fmt.Fprintf(&b, " [%s #%d %s %s-%s", call.Op, call.N, call.Behaviour, c.rel(call.Start), c.rel(call.End))
		if call.Effect {
			fmt.Fprintf(&b, ", took effect at %s", c.rel(call.EffectAt))
		}
		if call.Err != "" {
			fmt.Fprintf(&b, ", returned %q", call.Err)
		}
		b.WriteString("]")
	}
	return b.String()
}

// checkStranded: the key's last message ended answered, an unknown outcome
// resolved (when required), and an effect at the provider was answered.
func (c *checker) checkStranded(k *keyFacts) {
	for _, s := range k.sends {
		if s.Broken != "" {
			c.failf(Stranded, k.key, "%s %s: a %s send through the gateway at %s: %s", k.kind, k.key, s.Role, c.rel(s.At), s.Broken)
		}
	}
	_, hasOutcome := k.outcome()
	last, hasNotice := k.lastNotice()
	if !k.lastPublish.IsZero() && !hasOutcome && (!hasNotice || last.at.Before(k.lastPublish)) && !k.lastRefused() {
		what := "never answered"
		if hasNotice {
			what = fmt.Sprintf("not answered since (its last notice, %s, came at %s)", last.res.Code, c.rel(last.at))
		}
		c.failf(Stranded, k.key, "%s %s: a message stored in COMMANDS at %s was %s: no outcome, no dead-letter notice%s%s",
			k.kind, k.key, c.rel(k.lastPublish), what, c.recordNote(k.key), c.chargeNote(k))
		return
	}
	for _, s := range k.sends {
		if s.Role != RoleReuse || !s.Accepted || s.Duplicate || !c.mustBeRefused(k, s) {
			continue
		}
		if !k.refusedReuse(s) {
			c.failf(Stranded, k.key, "%s %s: a re-use with another body was stored in COMMANDS at %s and never refused as %s", k.kind, k.key, c.rel(s.At), messages.CodeKeyReused)
		}
	}
	if hasOutcome || !hasNotice {
		return
	}
	_, effected := c.effect(k)
	if last.res.Code != messages.CodeOutcomeUnknown {
		return // dead_lettered: checkClaimed judges an effect
	}
	if k.resolvedAfter(last.res) {
		// A dead letter decided after the unknown, heard before a client
		// returned it (its link was slow): the unknown was resolved.
		return
	}
	if effected {
		c.rep.Stats.UnknownCharged++
	}
	if !c.in.RequireResolution {
		return
	}
	what := "and the provider holds nothing for it"
	if effected {
		what = "though the provider holds its effect"
	}
	c.failf(Stranded, k.key, "%s %s: told outcome_unknown at %s and never resolved (no outcome, no dead_lettered after it), %s%s%s",
		k.kind, k.key, c.rel(last.at), what, c.recordNote(k.key), c.callStory(k))
}

// resolvedAfter reports whether a dead_lettered notice of the key was
// decided at or after the outcome_unknown unknown (processed_at): the
// resolver's answer, whenever it was heard.
func (k *keyFacts) resolvedAfter(unknown messages.Result) bool {
	for _, n := range k.notices {
		if n.res.Code == messages.CodeDeadLettered && !n.res.ProcessedAt.Before(unknown.ProcessedAt) {
			return true
		}
	}
	return false
}

// lastRefused reports whether the send whose publish is the key's last
// was told its body is refused (idempotency_key_reused): its message was
// answered. A send that is not a re-use meets it when the clients' link
// reorders the bodies: its publish lost in a hang, a re-use with another
// body took the key first, and its repeated publish was refused.
func (k *keyFacts) lastRefused() bool {
	for _, s := range k.sends {
		if p := s.published(); s.KeyReused && !p.IsZero() && p.Equal(k.lastPublish) {
			return true
		}
	}
	return false
}

// mustBeRefused reports whether a re-use send's body lost the key: the
// key's outcome, when it has one, is another body's.
func (c *checker) mustBeRefused(k *keyFacts, s *Send) bool {
	if t := s.Told; t != nil && t.Status == messages.StatusRejected && t.Fingerprint == messages.Fingerprint(s.Command) &&
		(t.Code == messages.CodeDeadLettered || t.Code == messages.CodeOutcomeUnknown) {
		// Its own body's dead letter: it reached the stream first (the
		// clients' link reordered the bodies) and held the key.
		return false
	}
	out, ok := k.outcome()
	return !ok || out.Fingerprint != messages.Fingerprint(s.Command)
}

// refusedReuse reports whether a re-use send was refused: told so, or a
// refusal of its body (or, before v1.2, of any body) heard after it.
func (k *keyFacts) refusedReuse(s *Send) bool {
	if s.KeyReused {
		return true
	}
	fp := messages.Fingerprint(s.Command)
	for _, r := range k.refusals {
		if (r.res.Fingerprint == "" || r.res.Fingerprint == fp) && !r.at.Before(s.At) {
			return true
		}
	}
	return false
}

func (c *checker) recordNote(key string) string {
	if c.in.Records == nil {
		return ""
	}
	r, ok := c.in.Records[key]
	if !ok {
		return "; the key has no record"
	}
	return fmt.Sprintf("; its record: %s, %d tries, unknown %v, dead effect %q", r.State, r.Tries, r.Unknown, r.DeadEffect)
}

// chargeNote says, for a refund, where its charge stands.
func (c *checker) chargeNote(k *keyFacts) string {
	req, ok := k.body().(messages.RefundRequest)
	if !ok {
		return ""
	}
	ck := c.keys[req.ChargeKey]
	if ck == nil {
		return "; its charge was never sent"
	}
	if out, ok := ck.outcome(); ok {
		return fmt.Sprintf("; its charge %s ended %s %s", req.ChargeKey, out.Status, out.Code)
	}
	if n, ok := ck.lastNotice(); ok {
		return fmt.Sprintf("; its charge %s was told %s at %s", req.ChargeKey, n.res.Code, c.rel(n.at))
	}
	return "; its charge " + req.ChargeKey + " has no answer either"
}

// checkDoubleCharge: at most one call took effect per key, and the
// provider's effect is one a logged call made.
func (c *checker) checkDoubleCharge(k *keyFacts) {
	if c.in.Calls == nil {
		return
	}
	effects := 0
	for _, call := range k.calls {
		if call.Effect && call.Op == effectOp(k.kind) {
			effects++
		}
	}
	_, held := c.effect(k)
	switch {
	case effects > 1:
		c.failf(DoubleCharge, k.key, "%s %s: %d provider calls took effect%s", k.kind, k.key, effects, c.callStory(k))
	case held && effects == 0:
		c.failf(DoubleCharge, k.key, "%s %s: the provider holds an effect no logged call made%s", k.kind, k.key, c.callStory(k))
	}
}

// count adds the key to the stats.
func (c *checker) count(k *keyFacts) {
	c.rep.Stats.Keys++
	if _, ok := c.effect(k); ok {
		if k.kind == messages.KindPaymentRefund {
			c.rep.Stats.Refunded++
		} else {
			c.rep.Stats.Charged++
		}
	}
	if _, ok := c.in.Provider.Voided[k.key]; ok {
		c.rep.Stats.Voided++
	}
	switch out, hasOutcome := k.outcome(); {
	case hasOutcome && out.Status == messages.StatusSucceeded:
		c.rep.Stats.Final["succeeded"]++
	case hasOutcome:
		c.rep.Stats.Final["failed/"+out.Code]++
	default:
		if n, ok := k.lastNotice(); ok {
			c.rep.Stats.Final[n.res.Code]++
		} else {
			c.rep.Stats.Final["unanswered"]++
		}
	}
}

// checkQueue: COMMANDS drained.
func (c *checker) checkQueue() {
	if q := c.in.Queue; q != nil && !q.Drained() {
		c.failf(Stranded, "", "COMMANDS not drained: %d messages in the stream, %d not yet delivered, %d delivered and not acknowledged", q.Messages, q.Pending, q.AckPending)
	}
}

// checkPhantoms: every effect at the provider is of a key sent as that
// command.
func (c *checker) checkPhantoms() {
	for _, key := range sortedKeys(c.in.Provider.Charges) {
		if k := c.keys[key]; k == nil || k.kind != messages.KindPaymentCharge {
			c.failf(DoubleCharge, key, "the provider holds a charge for %s, which no client sent as a payment.charge", key)
		}
	}
	for _, key := range sortedKeys(c.in.Provider.Refunds) {
		if k := c.keys[key]; k == nil || k.kind != messages.KindPaymentRefund {
			c.failf(DoubleCharge, key, "the provider holds a refund for %s, which no client sent as a payment.refund", key)
		}
	}
}

// checkRefunds: per charge, the provider refunded no more than it
// charged, and the succeeded refunds add up to what it refunded (unless a
// refund of it is unsettled); a refund refused as exceeding the charge did
// exceed what was left of it.
func (c *checker) checkRefunds() {
	succeeded := map[string]int64{} // charge key -> the succeeded refunds' sum
	unsettled := map[string]bool{}  // charge key -> a refund of it has no outcome
	for _, key := range c.order {
		k := c.keys[key]
		if k.kind != messages.KindPaymentRefund {
			continue
		}
		req, ok := k.body().(messages.RefundRequest)
		if !ok {
			continue
		}
		out, hasOutcome := k.outcome()
		switch {
		case !hasOutcome:
			unsettled[req.ChargeKey] = true
		case out.Status == messages.StatusSucceeded:
			succeeded[req.ChargeKey] += req.Amount
		case out.Code == messages.CodeRefundExceedsCharge:
			ch, charged := c.in.Provider.Charges[req.ChargeKey]
			if left := ch.Amount - c.in.Provider.Refunded[req.ChargeKey]; charged && req.Amount <= left {
				c.failf(Refunds, key, "payment.refund %s of %d: refused as %s, but %d of charge %s is still not refunded at the provider",
					key, req.Amount, out.Code, left, req.ChargeKey)
			}
		}
	}
	charges := map[string]bool{}
	for ck := range c.in.Provider.Refunded {
		charges[ck] = true
	}
	for ck := range succeeded {
		charges[ck] = true
	}
	for _, ck := range sortedKeys(charges) {
		refunded := c.in.Provider.Refunded[ck]
		ch, charged := c.in.Provider.Charges[ck]
		switch {
		case refunded > 0 && !charged:
			c.failf(Refunds, ck, "charge %s: the provider refunded %d of it, but holds no charge for the key", ck, refunded)
		case refunded > ch.Amount:
			c.failf(Refunds, ck, "charge %s: the provider refunded %d of a charge of %d", ck, refunded, ch.Amount)
		}
		if sum := succeeded[ck]; charged && sum > ch.Amount {
			c.failf(Refunds, ck, "charge %s: refunds of %d were answered succeeded, more than its %d", ck, sum, ch.Amount)
		}
		if sum := succeeded[ck]; sum != refunded && !unsettled[ck] {
			c.failf(Refunds, ck, "charge %s: the succeeded refunds add up to %d, the provider refunded %d", ck, sum, refunded)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkCarts: each (cart, SKU) line of Input.Carts holds the sum of the
// quantities of the distinct keys whose outcome is a succeeded cart.add to
// it (a key counts once, however often it was sent or replayed), and no
// cart holds a line no such key added to. Skipped when Carts was not read.
func (c *checker) checkCarts() {
	if c.in.Carts == nil {
		return
	}
	want := map[[2]string]int64{}
	for _, key := range c.order {
		k := c.keys[key]
		add, ok := k.body().(messages.CartAddRequest)
		if !ok {
			continue
		}
		line := [2]string{add.CartID, add.SKU}
		if _, seen := want[line]; !seen {
			want[line] = 0 // a line the run touched: it must hold exactly what succeeded
		}
		if out, ok := k.outcome(); ok && out.Status == messages.StatusSucceeded {
			want[line] += add.Quantity
		}
	}
	lines := make([][2]string, 0, len(want))
	for line := range want {
		lines = append(lines, line)
	}
	for cart, skus := range c.in.Carts {
		for sku := range skus {
			if _, ok := want[[2]string{cart, sku}]; !ok {
				lines = append(lines, [2]string{cart, sku})
			}
		}
	}
	slices.SortFunc(lines, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	st := &c.rep.Stats
	st.CartLines = len(lines)
	for _, line := range lines {
		have, w := c.in.Carts[line[0]][line[1]], want[line]
		st.CartUnits += have
		st.CartWant += w
		if have != w {
			c.failf(Carts, line[0], "cart %s, %s: holds %d, the distinct succeeded adds sum to %d", line[0], line[1], have, w)
		}
	}
}
