// Package autopipe owns the worker's Redis auto-pipelining: a go-redis hook
// that sends the commands which concurrent goroutines issue at the same
// moment as one pipeline - one write and one read on one connection -
// instead of one round trip each.
//
// A worker keeps many commands in flight, and each makes its Redis calls
// (lock, begin, commit, the provider's) one after another. Alone, each call
// costs a system call to write, a wake-up and a system call to read, on a
// connection checked out of the pool (with a liveness peek) and back. With
// the hook, the calls that arrive while a pipeline is on the wire wait for
// the next one: under load, tens of calls share one round trip; alone, a
// call goes out at once, as before. Nothing about what a call means
// changes: every command keeps its own reply and error, and the scripts
// that need atomicity are single commands either way.
package autopipe

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Config configures a Hook.
type Config struct {
	// MaxBatch caps the commands of one pipeline. Defaults to 128.
	MaxBatch int
	// Senders is how many pipelines may be on the wire at once. Defaults to 2:
	// one being answered while the next one forms.
	Senders int
}

// Hook is the auto-pipelining go-redis hook. Create it with New, add it to
// the client it was made for, and Close it after the last command. The
// client is one server's or a Sentinel master's (*redis.Client), never a
// *redis.ClusterClient: there the hook runs before the cluster's routing,
// and its pipelines would send to one node what go-redis sends to several
// (cmd/worker's pipeline says more).
type Hook struct {
	rdb   redis.UniversalClient
	cfg   Config
	queue chan *call
	stop  chan struct{}
	wg    sync.WaitGroup

	// mu orders enqueuing against Close: a command is queued only while
	// the hook is open (read lock), and Close (write lock) marks it closed
	// before the senders' last drain, so no queued command is left behind.
	mu     sync.RWMutex
	closed bool
}

var _ redis.Hook = (*Hook)(nil)

type call struct {
	cmd       redis.Cmder
	followers []redis.Cmder // sent right behind cmd, in the same pipeline
	done      chan struct{}
}

// Followers are commands that go out right behind the first command issued
// with the context Follow returned, in the same pipeline: in order, on one
// connection, in one round trip. A caller that must wait for one command's
// reply before the next (a lock, then the script that checks it) saves the
// round trip when the next is safe to send regardless: the script sees
// whether the lock was taken.
type Followers struct {
	cmds  []redis.Cmder
	taken atomic.Bool
}

type followersKey struct{}

// Follow returns ctx carrying cmds (unexecuted, e.g. redis.NewCmd). Taken
// says whether they went out; they have their replies once the command
// they followed has returned. Without the hook (a client it was not added
// to, or a closed one) they do not go: Taken is false and the caller sends
// them itself.
func Follow(ctx context.Context, cmds ...redis.Cmder) (context.Context, *Followers) {
	f := &Followers{cmds: cmds}
	return context.WithValue(ctx, followersKey{}, f), f
}

// Taken reports whether the followers went out behind a command.
func (f *Followers) Taken() bool { return f.taken.Load() }

var calls = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// New returns a Hook that pipelines through rdb, and starts its senders.
// Add it with rdb.AddHook(h).
func New(rdb redis.UniversalClient, cfg *Config) *Hook {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 128
	}
	if c.Senders <= 0 {
		c.Senders = 2
	}
	h := &Hook{rdb: rdb, cfg: c, queue: make(chan *call, c.MaxBatch*c.Senders), stop: make(chan struct{})}
	for range c.Senders {
		h.wg.Go(h.send)
	}
	return h
}

// Close stops the senders after the commands already queued; later
// commands go out one by one, as without the hook.
func (h *Hook) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// DialHook implements redis.Hook.
func (h *Hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

// ProcessPipelineHook implements redis.Hook: pipelines, the hook's own
// included, go out as they are.
func (h *Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook implements redis.Hook: a command waits for the next pipeline.
// Its context's deadline does not shorten the pipeline (the client's read
// and write timeouts bound it), so a caller whose context ends still gets
// the command's real result.
func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !pipelinable(cmd) {
			return next(ctx, cmd)
		}
		h.mu.RLock()
		if h.closed {
			h.mu.RUnlock()
			return next(ctx, cmd)
		}
		c := calls.Get().(*call) //nolint:errcheck,forcetypeassert // the pool holds *call only
		c.cmd = cmd
		if f, ok := ctx.Value(followersKey{}).(*Followers); ok && f.taken.CompareAndSwap(false, true) {
			c.followers = f.cmds
		}
		h.queue <- c // the senders run until Close, which waits for this read lock
		h.mu.RUnlock()
		<-c.done
		c.cmd, c.followers = nil, nil
		calls.Put(c)
		return cmd.Err()
	}
}

// pipelinable reports whether a command may share a pipeline: not one that
// blocks the connection or changes its state.
func pipelinable(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "blpop", "brpop", "brpoplpush", "blmove", "bzpopmin", "bzpopmax", "xread", "xreadgroup", "wait", "waitaof",
		"subscribe", "psubscribe", "ssubscribe", "multi", "exec", "watch", "unwatch", "select", "client", "hello", "auth", "quit":
		return false
	}
	return true
}

// send takes what is queued, up to MaxBatch, and sends it as one pipeline.
func (h *Hook) send() {
	batch := make([]*call, 0, h.cfg.MaxBatch)
	ctx := context.Background()
	for {
		batch = batch[:0]
		select {
		case c := <-h.queue:
			batch = append(batch, c)
		case <-h.stop:
			// Closed: nothing more is queued. Finish what is, so no caller
			// waits forever.
			for {
				select {
				case c := <-h.queue:
					h.exec(ctx, append(batch[:0], c))
				default:
					return
				}
			}
		}
		// Woken by the first call, let every goroutine ready to run go
		// first: under load they are deliveries about to queue their own
		// calls, which then share this pipeline instead of each starting
		// the next. It costs a scheduler pass; on this host (2 CPUs,
		// GOMAXPROCS=1) it took a pipeline from about 24 to about 36
		// commands and a worker from 9.2-9.9k to 10.6-11.5k charges/s.
		runtime.Gosched()
	more:
		for len(batch) < h.cfg.MaxBatch {
			select {
			case c := <-h.queue:
				batch = append(batch, c)
			default:
				break more
			}
		}
		h.exec(ctx, batch)
	}
}

func (h *Hook) exec(ctx context.Context, batch []*call) {
	pipe := h.rdb.Pipeline()
	for _, c := range batch {
		_ = pipe.Process(ctx, c.cmd) // queued; the replies come with Exec
		for _, f := range c.followers {
			_ = pipe.Process(ctx, f)
		}
	}
	_, _ = pipe.Exec(ctx) // each command carries its own reply and error
	for _, c := range batch {
		c.done <- struct{}{}
	}
}
