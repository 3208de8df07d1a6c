package main

import (
	"fmt"
	"time"

	"github.com/idempay/idempay/pkg/processor"
)

// waitFlags make an outcome wait for Redis replicas before it is answered.
type waitFlags struct {
	WaitReplicas int           `name:"redis-wait-replicas" env:"REDIS_WAIT_REPLICAS" default:"0" group:"Redis durability" help:"After storing an outcome, wait until this many Redis replicas have it (Redis WAIT) before answering and acking: a failover to one of them then loses no answered outcome. When fewer acknowledge in time the command is handed back and answered later. 0: no wait (replication is asynchronous)."`
	WaitTimeout  time.Duration `name:"redis-wait-timeout" env:"REDIS_WAIT_TIMEOUT" default:"1s" group:"Redis durability" help:"How long one WAIT may block; keep it below the Redis client's read timeout (3s)."`
}

// Validate is kong's hook.
func (f *waitFlags) Validate() error {
	switch {
	case f.WaitReplicas < 0:
		return fmt.Errorf("--redis-wait-replicas (REDIS_WAIT_REPLICAS) must not be negative, got %d", f.WaitReplicas)
	case f.WaitTimeout < time.Millisecond:
		return fmt.Errorf("--redis-wait-timeout (REDIS_WAIT_TIMEOUT) must be at least 1ms, got %v", f.WaitTimeout)
	}
	return nil
}

func (f *waitFlags) apply(cfg *processor.Config) {
	cfg.WaitReplicas, cfg.WaitTimeout = f.WaitReplicas, f.WaitTimeout
}
