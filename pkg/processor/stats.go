package processor

import "sync/atomic"

// Stats counts what a Processor did since it was created. Every field is a
// running total; take two snapshots to get a rate.
type Stats struct {
	// Deliveries is every message handed to the pipeline, redeliveries
	// included.
	Deliveries uint64 `json:"deliveries"`
	// Succeeded and Failed count outcomes this processor produced and
	// stored (not replays).
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	// Replayed counts deliveries answered with an outcome already stored.
	Replayed uint64 `json:"replayed"`
	// Rejected counts rejected answers (invalid input, reused keys).
	Rejected uint64 `json:"rejected"`
	// Redelivered counts deliveries handed back for later: a busy key, a
	// retryable error, a stopping processor.
	Redelivered uint64 `json:"redelivered"`
	// LockBusy counts deliveries that found their key locked by another
	// worker.
	LockBusy uint64 `json:"lock_busy"`
	// LockLost counts attempts that lost their lock (the watchdog's
	// extension failed, or the fenced commit was refused).
	LockLost uint64 `json:"lock_lost"`
	// DeadLettered counts commands copied to the dead letters; of those,
	// OutcomeUnknown were answered outcome_unknown rather than
	// dead_lettered.
	DeadLettered   uint64 `json:"dead_lettered"`
	OutcomeUnknown uint64 `json:"outcome_unknown"`
	// ReplicaShortfall counts answers held back because fewer Redis
	// replicas than Config.WaitReplicas acknowledged the outcome in time.
	ReplicaShortfall uint64 `json:"replica_shortfall"`
}

type counters struct {
	deliveries, succeeded, failed, replayed, rejected, redelivered,
	lockBusy, lockLost, deadLettered, outcomeUnknown, replicaShortfall atomic.Uint64
}

// Stats returns a snapshot of the processor's counters.
func (p *Processor) Stats() Stats {
	c := &p.counters
	return Stats{
		Deliveries: c.deliveries.Load(), Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
		Replayed: c.replayed.Load(), Rejected: c.rejected.Load(), Redelivered: c.redelivered.Load(),
		LockBusy: c.lockBusy.Load(), LockLost: c.lockLost.Load(),
		DeadLettered: c.deadLettered.Load(), OutcomeUnknown: c.outcomeUnknown.Load(),
		ReplicaShortfall: c.replicaShortfall.Load(),
	}
}
