package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/sim"
)

// The floor's two scripts: the fewest Redis commands the state machine of
// docs/state-machine.md needs around a provider call, and fewer than it
// needs (no tries, no effect, no fingerprint check, no retention extended
// at the commit, no reply but a word). KEYS[1] the record, KEYS[2] the lock.
var (
	// floorBegin: the fence, the record's state, and the mark that a try
	// runs (what tells the next delivery a call may have taken effect).
	floorBegin = redis.NewScript(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then return "lost" end
local st = redis.call("HGET", KEYS[1], "state")
if st then return st end
redis.call("HSET", KEYS[1], "state", "running", "fingerprint", ARGV[2])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
return "run"
`)
	// floorCommit: the fenced commit, and the lock's release.
	floorCommit = redis.NewScript(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then return "lost" end
redis.call("HSET", KEYS[1], "state", "completed", "data", ARGV[2])
redis.call("DEL", KEYS[2])
return "committed"
`)
)

// floor measures the least any worker of this design can do for a charge,
// in this process, on the same servers and preload as the ceiling: the
// bare consumer's fetch loop and ack, and between them, for each message,
// the I/O the contract requires and nothing else:
//
//	decode -> SET NX lock + begin script (one pipeline) -> the simulated
//	provider's charge (its one script) -> commit script -> publish to
//	RESULTS, wait for the PubAck -> ack
//
// It has none of the worker's validation, redsync (a plain SET NX PX with
// a counter for a value), retries, metrics, logs, tracing, lock watchdog,
// lookup service or resolver, and its scripts do less than the state
// machine must. The Redis client pipelines as the worker's does
// (internal/autopipe), and the collector runs at the worker's GOGC. No
// implementation of the design can use less CPU per charge than this on
// these servers; how far the worker is above it is the worker's own cost.
func (b *bencher) floor(ctx context.Context, round, inFlight int) (*Result, error) {
	ns := b.nextNamespace()
	defer b.s.reset(ctx, ns)
	q, err := b.barePreload(ctx, ns, inFlight, "idempay-bench-floor")
	if err != nil {
		return nil, err
	}
	defer q.nc.Close()
	nc, js, cons := q.nc, q.js, q.cons
	opt, err := redis.ParseURL(b.s.redisURL)
	if err != nil {
		return nil, err
	}
	opt.PoolSize = inFlight
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	pipe := autopipe.New(rdb, nil)
	rdb.AddHook(pipe)
	defer pipe.Close()
	provider, err := sim.New(rdb, &sim.Config{KeyPrefix: ns.keyPrefix()})
	if err != nil {
		return nil, err
	}
	for _, s := range []*redis.Script{floorBegin, floorCommit} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return nil, err
		}
	}
	f := &floorWorker{js: js, rdb: rdb, provider: provider, prefix: ns.keyPrefix() + "floor:", results: ns.resultRoot() + "."}

	r := &Result{Name: fmt.Sprintf("floor @%d", inFlight), Kind: "floor", Command: kindCharge, InFlight: inFlight, Round: round}
	defer debug.SetGCPercent(debug.SetGCPercent(workerGCPercent))
	m := b.s.begin(ctx)
	n, elapsed, err := drainWith(ctx, nc, cons, b.cfg.Count, inFlight, f.handle)
	if err != nil {
		return nil, err
	}
	r.Commands, r.Seconds = n, elapsed.Seconds()
	r.PerSecond = float64(n) / elapsed.Seconds()
	m.end(ctx, r, nil, true)
	if err := expectMessages(ctx, b.s.js, ns.resultStream(), b.cfg.Count); err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	return r, nil
}

// workerGCPercent is cmd/worker's GOGC (its gcPercent), which the floor
// runs at too.
const workerGCPercent = 400

// floorWorker is the floor's per-message work.
type floorWorker struct {
	js       jetstream.JetStream
	rdb      *redis.Client
	provider *sim.Provider
	prefix   string // of the floor's record and lock keys
	results  string // the result subject's prefix
	lockSeq  atomic.Uint64
}

// errFloorLost: a floor script found another value in the lock; nothing
// else holds these keys, so it is a bug of the floor.
var errFloorLost = errors.New("bench: floor: the lock is not ours")

func (f *floorWorker) handle(ctx context.Context, msg jetstream.Msg) error {
	key := msg.Headers().Get(messages.HeaderMsgID)
	var req messages.ChargeRequest
	if err := json.Unmarshal(msg.Data(), &req); err != nil {
		return err
	}
	rec, lock := f.prefix+"rec:"+key, f.prefix+"lock:"+key
	value := strconv.FormatUint(f.lockSeq.Add(1), 36)
	keys := []string{rec, lock}
	// The lock and begin in one pipeline, as the worker sends them
	// (autopipe.Follow).
	begin := redis.NewCmd(ctx, "evalsha", floorBegin.Hash(), 2, rec, lock, value, "fp", int64(24*time.Hour/time.Millisecond))
	fctx, followers := autopipe.Follow(ctx, begin)
	if ok, err := f.rdb.SetNX(fctx, lock, value, 10*time.Second).Result(); err != nil || !ok {
		return fmt.Errorf("%w: SET NX said %v (%w)", errFloorLost, ok, err)
	}
	if !followers.Taken() {
		_ = f.rdb.Process(ctx, begin)
	}
	if s, _ := begin.Text(); s != "run" {
		return fmt.Errorf("%w: begin said %q", errFloorLost, s)
	}
	data, err := f.provider.Charge(ctx, key, req)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	// The answer as the worker publishes it, stored whole.
	body := messages.Result{Key: key, Kind: messages.KindPaymentCharge, Status: messages.StatusSucceeded, Data: raw,
		Attempts: 1, ProcessedAt: time.Now().UTC(), Fingerprint: messages.Fingerprint(req)}.Marshal()
	if s, err := floorCommit.EvalSha(ctx, f.rdb, keys, value, body).Text(); err != nil || s != "committed" {
		return fmt.Errorf("%w: commit said %q (%w)", errFloorLost, s, err)
	}
	fut, err := f.js.PublishMsgAsync(&nats.Msg{Subject: f.results + key, Data: body})
	if err != nil {
		return err
	}
	select {
	case <-fut.Ok():
	case err := <-fut.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	return msg.Ack()
}
