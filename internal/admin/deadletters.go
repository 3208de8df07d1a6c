package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Status is where a dead letter stands now, from what its key's record
// says (the workers' lookup service) and the key's other copies. The
// record is the truth whoever re-drove the key: this console, the
// producer, the client re-sending its key, or the resolver.
type Status string

// The statuses of a dead letter.
const (
	// StatusPending: the key is still dead-lettered (dead_lettered or
	// outcome_unknown) and this is its newest copy: a replay may help.
	StatusPending Status = "pending"
	// StatusReplaying: the key was re-driven and a command of it is being
	// worked on.
	StatusReplaying Status = "replaying"
	// StatusResolved: the key has its outcome now (State.Outcome): a
	// replay, a re-send of the key, or the resolver found the effect.
	StatusResolved Status = "resolved"
	// StatusVoided: the key was voided at the provider: a replay is
	// answered dead_lettered; the operation needs a new key.
	StatusVoided Status = "voided"
	// StatusSuperseded: a newer dead letter of the key exists.
	StatusSuperseded Status = "superseded"
	// StatusExpired: the key has no record: it expired a retention
	// (RESULT_TTL) after the dead letter, or was evicted.
	StatusExpired Status = "expired"
	// StatusUnchecked: no worker answered the lookup; what the key's
	// record says is not known.
	StatusUnchecked Status = "unchecked"
)

// Statuses are the statuses, in the order listings explain them.
var Statuses = []Status{StatusPending, StatusReplaying, StatusResolved, StatusVoided, StatusSuperseded, StatusExpired, StatusUnchecked}

// ParseStatus reads a status's name.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown status %q (pending, replaying, resolved, voided, superseded, expired, unchecked)", s)
}

// Moved reports whether the key moved on since this dead letter: it was
// re-driven or resolved (the --replayed filter).
func (s Status) Moved() bool {
	return s == StatusReplaying || s == StatusResolved || s == StatusSuperseded
}

// Filter selects dead letters; a zero field selects all.
type Filter struct {
	// Kinds: only these command kinds.
	Kinds []string
	// Since and Before: dead-lettered at or after Since, before Before.
	Since, Before time.Time
	// Reason: Dlq-Reason contains it, ignoring case.
	Reason string
	// Effect: Dlq-Effect is it (none or unknown).
	Effect string
	// Statuses: only these statuses.
	Statuses []Status
	// Replayed: only keys that moved on since (Status.Moved).
	Replayed bool
	// Keys: only these keys.
	Keys []string
}

// Empty reports whether f selects every dead letter.
func (f *Filter) Empty() bool {
	return len(f.Kinds) == 0 && f.Since.IsZero() && f.Before.IsZero() && f.Reason == "" && f.Effect == "" &&
		len(f.Statuses) == 0 && !f.Replayed && len(f.Keys) == 0
}

// String says what f selects, for an audit entry.
func (f *Filter) String() string {
	var p []string
	if len(f.Kinds) > 0 {
		p = append(p, "kind="+strings.Join(f.Kinds, ","))
	}
	if !f.Since.IsZero() {
		p = append(p, "since="+f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Before.IsZero() {
		p = append(p, "before="+f.Before.UTC().Format(time.RFC3339))
	}
	if f.Reason != "" {
		p = append(p, fmt.Sprintf("reason=%q", f.Reason))
	}
	if f.Effect != "" {
		p = append(p, "effect="+f.Effect)
	}
	if len(f.Statuses) > 0 {
		s := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			s[i] = string(st)
		}
		p = append(p, "status="+strings.Join(s, ","))
	}
	if f.Replayed {
		p = append(p, "replayed")
	}
	if len(f.Keys) > 0 {
		p = append(p, "key="+strings.Join(f.Keys, ","))
	}
	if len(p) == 0 {
		return "all"
	}
	return strings.Join(p, " ")
}

// matchesCopy applies the filters a copy decides alone.
func (f *Filter) matchesCopy(dl *client.DeadLetter) bool {
	switch {
	case len(f.Kinds) > 0 && !slices.Contains(f.Kinds, dl.Kind):
		return false
	case !f.Since.IsZero() && dl.DeadLettered.Before(f.Since):
		return false
	case !f.Before.IsZero() && !dl.DeadLettered.Before(f.Before):
		return false
	case f.Reason != "" && !strings.Contains(strings.ToLower(dl.Reason), strings.ToLower(f.Reason)):
		return false
	case f.Effect != "" && dl.Effect != f.Effect:
		return false
	case len(f.Keys) > 0 && !slices.Contains(f.Keys, dl.Key):
		return false
	}
	return true
}

func (f *Filter) matchesStatus(s Status) bool {
	return (len(f.Statuses) == 0 || slices.Contains(f.Statuses, s)) && (!f.Replayed || s.Moved())
}

// Entry is one dead letter and where it stands.
type Entry struct {
	client.DeadLetter
	// Voided: the copy's Dlq-Voided header (voided before the dead letter).
	Voided bool
	// Status is where it stands now.
	Status Status
	// State is what the key's record says now (the lookup's answer); zero
	// when Status is superseded (not asked) or unchecked.
	State messages.KeyState
	// StateError says why the lookup failed, when Status is unchecked.
	StateError string
}

// Listing is the dead letters a filter selected.
type Listing struct {
	// Entries are the selected dead letters, oldest first.
	Entries []Entry
	// Read is how many dead letters were read (the newest ScanLimit),
	// Total how many the stream holds.
	Read  int
	Total uint64
	// Counts is how many selected entries have each status.
	Counts map[Status]int
}

// Truncated reports whether older dead letters were left unread.
func (l *Listing) Truncated() bool { return uint64(max(l.Read, 0)) < l.Total }

// DeadLetters reads the newest Config.ScanLimit dead letters and returns
// those f selects, each with its status: every key among them is looked
// up once through the workers' lookup service (LookupConcurrency at a
// time), unless a newer copy of it supersedes the entry.
func (a *Admin) DeadLetters(ctx context.Context, f *Filter) (*Listing, error) {
	if f == nil {
		f = &Filter{}
	}
	dls, total, err := a.client.ScanDeadLetters(ctx, a.cfg.ScanLimit)
	if err != nil {
		return nil, err
	}
	newest := map[string]uint64{} // key -> sequence of its newest copy
	for _, dl := range dls {
		newest[dl.Key] = max(newest[dl.Key], dl.Sequence)
	}
	var entries []Entry
	var keys []string
	asked := map[string]bool{}
	for i := range dls {
		dl := &dls[i]
		if !f.matchesCopy(dl) {
			continue
		}
		e := Entry{DeadLetter: *dl, Voided: dl.Header.Get(messages.HeaderDlqVoided) == "true"}
		if newest[dl.Key] != dl.Sequence {
			e.Status = StatusSuperseded
		} else if !asked[dl.Key] {
			asked[dl.Key] = true
			keys = append(keys, dl.Key)
		}
		entries = append(entries, e)
	}
	states := a.lookUp(ctx, keys)
	l := &Listing{Read: len(dls), Total: total, Counts: map[Status]int{}}
	for _, e := range entries {
		if e.Status == "" {
			st := states[e.Key]
			e.State, e.StateError = st.state, st.err
			e.Status = statusOf(st)
		}
		if f.matchesStatus(e.Status) {
			l.Entries = append(l.Entries, e)
			l.Counts[e.Status]++
		}
	}
	return l, nil
}

type lookedUp struct {
	state messages.KeyState
	err   string
}

// lookUp asks the workers' lookup service about each key, a few at a time.
func (a *Admin) lookUp(ctx context.Context, keys []string) map[string]lookedUp {
	out := make(map[string]lookedUp, len(keys))
	var mu sync.Mutex
	sem := make(chan struct{}, a.cfg.LookupConcurrency)
	var wg sync.WaitGroup
	for _, key := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := a.client.Lookup(ctx, key)
			r := lookedUp{state: st}
			if errors.Is(err, client.ErrNoLookup) {
				r.err = "no worker answered the lookup (lookup." + "<key>): are the workers running?"
			} else if err != nil {
				r.err = err.Error()
			}
			mu.Lock()
			out[key] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func statusOf(l lookedUp) Status {
	if l.err != "" {
		return StatusUnchecked
	}
	switch l.state.State {
	case messages.KeyStateCompleted:
		return StatusResolved
	case messages.KeyStateInProgress:
		return StatusReplaying
	case messages.KeyStateAbsent:
		return StatusExpired
	case messages.KeyStateDeadLettered, messages.KeyStateOutcomeUnknown:
		if l.state.Voided {
			return StatusVoided
		}
		return StatusPending
	}
	return StatusUnchecked
}

// Replayable says whether Replay re-drives e, and why not.
func Replayable(e *Entry) (ok bool, why string) {
	switch e.Status {
	case StatusPending:
		return true, ""
	case StatusExpired:
		if e.Effect == EffectNone {
			return true, ""
		}
		return false, "its record expired while its outcome was unknown: whether a call took effect is no longer recorded; ask the provider about the key first"
	case StatusReplaying:
		return false, "the key was re-driven and is being worked on"
	case StatusResolved:
		return false, "the key has its outcome already"
	case StatusVoided:
		return false, "the key was voided at the provider: a replay is answered dead_lettered; send the operation with a new key"
	case StatusSuperseded:
		return false, "a newer dead letter of the key exists"
	case StatusUnchecked:
		return false, "its key's state is not known: " + e.StateError
	}
	return false, "status " + string(e.Status)
}

// ReplayResult is what became of one entry of a bulk replay.
type ReplayResult struct {
	Entry Entry
	// Skipped says why the entry was not replayed; empty when it was (or,
	// in a dry run, would be).
	Skipped string
	// Answer is the key's answer to the replay; nil when there was none.
	Answer *messages.Result
	// Err is the replay's error: a failed or rejected answer's, or why no
	// answer came.
	Err error
}

// ReplayReport counts what a bulk replay did.
type ReplayReport struct {
	DryRun  bool
	Results []ReplayResult
	// Replayed is how many were re-driven (in a dry run: would be);
	// Succeeded, Failed and Rejected count their answers, NoAnswer those
	// without one (inside the duplicate window, a timeout, an error),
	// Skipped those left alone.
	Replayed, Succeeded, Failed, Rejected, NoAnswer, Skipped int
}

// Replay re-drives the replayable entries (Replayable), one per key,
// ReplayConcurrency at a time, each waiting for its answer; with dryRun
// it only says which it would. The key's record decides what a replay
// does, as for any re-send: a key that completed meanwhile is answered
// with its outcome, without running again.
func (a *Admin) Replay(ctx context.Context, entries []Entry, dryRun bool) *ReplayReport {
	rep := &ReplayReport{DryRun: dryRun, Results: make([]ReplayResult, len(entries))}
	seen := map[string]bool{}
	sem := make(chan struct{}, a.cfg.ReplayConcurrency)
	var wg sync.WaitGroup
	for i := range entries {
		res := &rep.Results[i]
		res.Entry = entries[i]
		if ok, why := Replayable(&entries[i]); !ok {
			res.Skipped = why
			continue
		}
		if seen[res.Entry.Key] {
			res.Skipped = "another copy of the key is replayed"
			continue
		}
		seen[res.Entry.Key] = true
		if dryRun {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reply, err := a.client.ReplayDeadLetter(ctx, res.Entry.DeadLetter)
			res.Err = err
			if reply != nil && reply.Result.Status != "" {
				r := reply.Result
				res.Answer = &r
			}
		})
	}
	wg.Wait()
	for _, r := range rep.Results {
		switch {
		case r.Skipped != "":
			rep.Skipped++
			continue
		case dryRun:
		case r.Answer == nil:
			rep.NoAnswer++
		case r.Answer.Status == messages.StatusSucceeded:
			rep.Succeeded++
		case r.Answer.Status == messages.StatusFailed:
			rep.Failed++
		default:
			rep.Rejected++
		}
		rep.Replayed++
	}
	return rep
}

// PurgeReport says what a bulk purge deleted.
type PurgeReport struct {
	DryRun bool
	// Purged is how many copies were deleted (in a dry run: would be).
	Purged int
	Keys   []string
}

// Purge deletes the entries' copies from the dead-letter stream (or, with
// dryRun, counts them). The keys' records are untouched: a dead key keeps
// no outcome either way and can still be re-sent.
func (a *Admin) Purge(ctx context.Context, entries []Entry, dryRun bool) (*PurgeReport, error) {
	rep := &PurgeReport{DryRun: dryRun}
	seen := map[string]bool{}
	for _, e := range entries {
		if !seen[e.Key] {
			seen[e.Key] = true
			rep.Keys = append(rep.Keys, e.Key)
		}
	}
	if dryRun {
		rep.Purged = len(entries)
		return rep, nil
	}
	name := a.cfg.Topology.DeadLetterStream
	stream, err := a.js.Stream(ctx, name)
	if err != nil {
		return rep, fmt.Errorf("admin: stream %s: %w", name, err)
	}
	for _, e := range entries {
		if err := stream.DeleteMsg(ctx, e.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return rep, fmt.Errorf("admin: delete dead letter %d (key %s): %w", e.Sequence, e.Key, err)
		}
		rep.Purged++
	}
	return rep, nil
}

// ParseAge reads an age or a time, as the filters take them: a Go
// duration is that long before now (1h: an hour ago), anything else an
// RFC 3339 time. The empty string is the zero time (no bound).
func ParseAge(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want an age (a Go duration, e.g. 90m) or a time (RFC 3339, e.g. 2026-12-08T10:00:00Z)", s)
}
