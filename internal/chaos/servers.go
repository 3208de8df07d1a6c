package chaos

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/internal/testenv"
)

// servers are one scenario's fresh deployment (testenv.Deployment: a
// nats-server child, a redis-server child, and the proxies the workers
// reach them through), and a Redis replica for the scenarios that need
// one. The suite's own connections (the load, the auditor) go to the
// servers directly: the faults are the workers'.
type servers struct {
	d          *testenv.Deployment
	nats       *testenv.NATSNode
	redis      *testenv.RedisServer
	replica    *testenv.RedisServer // RedisReplica only
	replProxy  *testenv.Proxy       // between the replica and the primary
	natsProxy  *testenv.Proxy
	redisProxy *testenv.Proxy
}

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
	args := testenv.RedisAOF
	if sc.RedisNoPersistence {
		args = testenv.RedisVolatile
	}
	if s.d, err = testenv.StartDeployment(&testenv.DeploymentOptions{Name: "chaos-suite", NATSChild: true,
		NoSyncAlways: sc.NATSNoSync, RedisArgs: args, Proxies: true,
		// The load publishes through a reconnect: buffer all it may send.
		NATSOptions: []nats.Option{nats.ReconnectBufSize(64 << 20)}}); err != nil {
		return nil, err
	}
	s.nats, s.redis, s.natsProxy, s.redisProxy = s.d.NATSNode, s.d.Redis, s.d.NATSProxy, s.d.RedisProxy
	if !sc.NATSNoSync && !s.nats.SyncAlways() {
		return nil, errors.New("chaos: the nats-server binary does not support sync_interval: always; use 2.10 or later (NATS_SERVER_BIN)")
	}
	if sc.RedisReplica {
		redisAddr, err := hostPort(s.redis.URL)
		if err != nil {
			return nil, err
		}
		// The replica follows the primary through a proxy of its own, so
		// that the link between them can fail while both run.
		if s.replProxy, err = testenv.StartProxy(redisAddr); err != nil {
			return nil, err
		}
		_, port, err := net.SplitHostPort(s.replProxy.Addr())
		if err != nil {
			return nil, err
		}
		if s.replica, err = testenv.StartRedisWith(append(append([]string{}, testenv.RedisVolatile...), "--replicaof", "127.0.0.1", port)...); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// workerEnv points the workers at the servers through the proxies.
func (s *servers) workerEnv() []string {
	return []string{"NATS_URL=" + s.d.WorkerNATSURL(), "REDIS_URL=" + s.d.WorkerRedisURL()}
}

func (s *servers) close() {
	if s.replProxy != nil {
		s.replProxy.Close()
	}
	s.replica.Shutdown()
	s.d.Close()
}

func hostPort(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("chaos: server URL %q: %w", rawURL, err)
	}
	return u.Host, nil
}
