package chaos

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/idempay/idempay/internal/testenv"
)

// servers are one scenario's fresh NATS and Redis, and the proxies the
// workers reach them through. The suite's own connections (the load, the
// auditor) go to the servers directly: the faults are the workers'.
type servers struct {
	nats       *testenv.NATSNode
	redis      *testenv.RedisServer
	replica    *testenv.RedisServer // RedisReplica only
	replProxy  *testenv.Proxy       // between the replica and the primary
	natsProxy  *testenv.Proxy
	redisProxy *testenv.Proxy
}

// redisAOF are the README's Redis settings: every write in the append-only
// file, fsynced before the reply.
var redisAOF = []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always"}

// redisVolatile is Redis without persistence, for the negative controls.
var redisVolatile = []string{"--save", "", "--appendonly", "no"}

func startServers(sc *Scenario) (_ *servers, err error) {
	if sc.Deployment != Single {
		return nil, fmt.Errorf("chaos: deployment %d is not implemented", sc.Deployment)
	}
	s := &servers{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.nats, err = testenv.StartNATSNode(&testenv.NATSNodeOptions{NoSyncAlways: sc.NATSNoSync}); err != nil {
		return nil, err
	}
	if !sc.NATSNoSync && !s.nats.SyncAlways() {
		return nil, errors.New("chaos: the nats-server binary does not support sync_interval: always; use 2.10 or later (NATS_SERVER_BIN)")
	}
	args := redisAOF
	if sc.RedisNoPersistence {
		args = redisVolatile
	}
	if s.redis, err = testenv.StartRedisWith(args...); err != nil {
		return nil, err
	}
	redisAddr, err := hostPort(s.redis.URL)
	if err != nil {
		return nil, err
	}
	if sc.RedisReplica {
		// The replica follows the primary through a proxy of its own, so
		// that the link between them can fail while both run.
		if s.replProxy, err = testenv.StartProxy(redisAddr); err != nil {
			return nil, err
		}
		_, port, err := net.SplitHostPort(s.replProxy.Addr())
		if err != nil {
			return nil, err
		}
		if s.replica, err = testenv.StartRedisWith(append(append([]string{}, redisVolatile...), "--replicaof", "127.0.0.1", port)...); err != nil {
			return nil, err
		}
	}
	natsAddr, err := hostPort(s.nats.URL)
	if err != nil {
		return nil, err
	}
	if s.natsProxy, err = testenv.StartProxy(natsAddr); err != nil {
		return nil, err
	}
	if s.redisProxy, err = testenv.StartProxy(redisAddr); err != nil {
		return nil, err
	}
	return s, nil
}

// workerEnv points the workers at the servers through the proxies.
func (s *servers) workerEnv() []string {
	return []string{"NATS_URL=nats://" + s.natsProxy.Addr(), "REDIS_URL=redis://" + s.redisProxy.Addr()}
}

func (s *servers) close() {
	if s.natsProxy != nil {
		s.natsProxy.Close()
	}
	if s.redisProxy != nil {
		s.redisProxy.Close()
	}
	if s.replProxy != nil {
		s.replProxy.Close()
	}
	s.nats.Shutdown()
	s.redis.Shutdown()
	s.replica.Shutdown()
}

func hostPort(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("chaos: server URL %q: %w", rawURL, err)
	}
	return u.Host, nil
}
