package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
)

// DeploymentOptions shape a Deployment. The zero value is an in-process
// NATS and a redis-server child without persistence, reached directly.
type DeploymentOptions struct {
	// Name names the harness's own connections. Defaults to "testenv".
	Name string
	// NATSChild runs nats-server as a child process (StartNATSNode: it can
	// be killed and restarted from its store, and a worker process can
	// reach it) instead of in this process (StartNATS: restartable only).
	// Defaults to false.
	NATSChild bool
	// NoSyncAlways leaves a NATSChild's sync_interval at the server's
	// default: for a negative control only. Defaults to false.
	NoSyncAlways bool
	// RedisArgs are redis-server's arguments. Defaults to RedisVolatile;
	// RedisAOF is the README's production setting.
	RedisArgs []string
	// Proxies puts a TCP proxy in front of each server for the workers
	// (WorkerNATSURL, WorkerRedisURL), through which a harness injects
	// network faults; the harness's own connections go direct. Defaults
	// to false.
	Proxies bool
	// NATSOptions and JetStreamOptions are added to the harness's own NATS
	// connection and JetStream context (a larger reconnect buffer, more
	// async publishes in flight). Defaults to none.
	NATSOptions      []nats.Option
	JetStreamOptions []jetstream.JetStreamOpt
}

// Redis argument sets for DeploymentOptions.RedisArgs.
var (
	// RedisVolatile is Redis without persistence.
	RedisVolatile = []string{"--save", "", "--appendonly", "no"}
	// RedisAOF is the README's Redis: every write in the append-only file,
	// fsynced before the reply.
	RedisAOF = []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always"}
)

// Deployment is one running idempay system for a harness - the fault
// explorer, and the chaos suite, the benchmarks, the load test and the
// demo as they move onto it: its servers, the harness's own connections to
// them, and the workers it runs, each of which it can stop and restart,
// and, when the worker runs as a process, kill and pause (see Worker).
// Close stops it all.
type Deployment struct {
	// NATS and Redis are the servers: NATS in process (NATSServer) or a
	// child (NATSNode), Redis a child.
	NATS     *NATSServer
	NATSNode *NATSNode
	Redis    *RedisServer
	// NATSProxy and RedisProxy stand between the workers and the servers
	// when DeploymentOptions.Proxies asked for them.
	NATSProxy, RedisProxy *Proxy

	// NC, JS and RDB are the harness's own connections, straight to the
	// servers.
	NC  *nats.Conn
	JS  jetstream.JetStream
	RDB *redis.Client

	mu      sync.Mutex
	workers []Worker
}

// StartDeployment starts the servers and connects to them.
func StartDeployment(opts *DeploymentOptions) (_ *Deployment, err error) {
	if opts == nil {
		opts = &DeploymentOptions{}
	}
	d := &Deployment{}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if opts.NATSChild {
		if d.NATSNode, err = StartNATSNode(&NATSNodeOptions{NoSyncAlways: opts.NoSyncAlways}); err != nil {
			return nil, err
		}
	} else if d.NATS, err = StartNATS(); err != nil {
		return nil, err
	}
	// A deployment holds several namespaces at once (the explorer plays
	// seeds in parallel, each creating and deleting its streams).
	if err = anchorStreams(d.NATSURL()); err != nil {
		return nil, err
	}
	args := opts.RedisArgs
	if args == nil {
		args = RedisVolatile
	}
	if d.Redis, err = StartRedisWith(args...); err != nil {
		return nil, err
	}
	if opts.Proxies {
		if d.NATSProxy, err = proxyFor(d.NATSURL()); err != nil {
			return nil, err
		}
		if d.RedisProxy, err = proxyFor(d.Redis.URL); err != nil {
			return nil, err
		}
	}
	name := opts.Name
	if name == "" {
		name = "testenv"
	}
	natsOpts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts.NATSOptions...)
	if d.NC, err = nats.Connect(d.NATSURL(), natsOpts...); err != nil {
		return nil, fmt.Errorf("testenv: connect to NATS: %w", err)
	}
	if d.JS, err = jetstream.New(d.NC, opts.JetStreamOptions...); err != nil {
		return nil, err
	}
	if d.RDB, err = ConnectRedis(d.Redis.URL); err != nil {
		return nil, err
	}
	return d, nil
}

func proxyFor(rawURL string) (*Proxy, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("testenv: server URL %q: %w", rawURL, err)
	}
	return StartProxy(u.Host)
}

// NATSURL is the NATS server's client URL.
func (d *Deployment) NATSURL() string {
	if d.NATSNode != nil {
		return d.NATSNode.URL
	}
	return d.NATS.URL
}

// WorkerNATSURL and WorkerRedisURL are the URLs a worker uses: through the
// proxies when there are some.
func (d *Deployment) WorkerNATSURL() string {
	if d.NATSProxy != nil {
		return "nats://" + d.NATSProxy.Addr()
	}
	return d.NATSURL()
}

// WorkerRedisURL: see WorkerNATSURL.
func (d *Deployment) WorkerRedisURL() string {
	if d.RedisProxy != nil {
		return "redis://" + d.RedisProxy.Addr()
	}
	return d.Redis.URL
}

// Add registers w with the deployment, so that Workers lists it and Close
// stops it. It does not start it.
func (d *Deployment) Add(w Worker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.workers = append(d.workers, w)
}

// Workers returns the workers added, in order.
func (d *Deployment) Workers() []Worker {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Worker(nil), d.workers...)
}

// StopWorkers stops every worker gracefully and forgets them, returning
// the first error.
func (d *Deployment) StopWorkers(ctx context.Context) error {
	d.mu.Lock()
	ws := d.workers
	d.workers = nil
	d.mu.Unlock()
	var first error
	for _, w := range ws {
		if err := w.Stop(ctx); err != nil && first == nil {
			first = fmt.Errorf("testenv: stop %s: %w", w.Name(), err)
		}
	}
	return first
}

// QueueState reads the command stream of top and its consumer.
func (d *Deployment) QueueState(ctx context.Context, top messages.Topology) (msgs, pending, ackPending uint64, err error) {
	s, err := d.JS.Stream(ctx, top.CommandStream)
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	c, err := s.Consumer(ctx, top.Consumer)
	if err != nil {
		return 0, 0, 0, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return info.State.Msgs, ci.NumPending, uint64(max(ci.NumAckPending, 0)), nil
}

// WaitDrained polls until the command stream of top is empty and its
// consumer has nothing pending or unacknowledged, or ctx ends; the error
// then says what was left.
func (d *Deployment) WaitDrained(ctx context.Context, top messages.Topology) error {
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		msgs, pending, ackPending, err := d.QueueState(ctx, top)
		switch {
		case err != nil:
			return err
		case msgs > 0 || pending > 0 || ackPending > 0:
			return fmt.Errorf("%s holds %d messages; consumer %s: %d pending, %d unacknowledged", top.CommandStream, msgs, top.Consumer, pending, ackPending)
		}
		return nil
	})
}

// DeleteStreams removes top's streams (and with them their consumers):
// what one run of a harness that shares the servers leaves behind.
func (d *Deployment) DeleteStreams(ctx context.Context, top messages.Topology) {
	for _, name := range []string{top.CommandStream, top.ResultStream, top.DeadLetterStream} {
		if err := d.JS.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // best effort: the servers go with the deployment anyway
		}
	}
}

// Close stops the workers (each gets 10s to drain), closes the
// connections and stops the servers.
func (d *Deployment) Close() {
	if d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = d.StopWorkers(ctx)
	cancel()
	if d.NC != nil {
		d.NC.Close()
	}
	if d.RDB != nil {
		_ = d.RDB.Close()
	}
	for _, p := range []*Proxy{d.NATSProxy, d.RedisProxy} {
		if p != nil {
			p.Close()
		}
	}
	d.NATS.Shutdown()
	d.NATSNode.Shutdown()
	d.Redis.Shutdown()
}
