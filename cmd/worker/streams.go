package main

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/idempay/idempay/pkg/processor"
)

// streamFlags are the settings of the streams the worker creates, and
// whether it creates any.
type streamFlags struct {
	Provision          bool          `name:"provision" env:"PROVISION" default:"true" negatable:"" group:"Streams" help:"Create the streams and the consumer when they are missing, and set in place, with a warning, what the guarantees need of existing ones (the command stream's duplicate window, the results stream's max age, ...: docs/operations.md lists them); their other settings are kept. --provision=false (PROVISION=false): create and change nothing, and stop at start naming what is missing or off, for streams an operator made (docs/operations.md gives the nats commands); the worker then needs no stream-admin rights."`
	StreamReplicas     int           `name:"stream-replicas" env:"STREAM_REPLICAS" default:"1" group:"Streams" help:"Replicas of the COMMANDS, RESULTS and DEADLETTER streams the worker creates (1-5; 3 on a three-node NATS cluster). An existing stream keeps its own."`
	DeadLetterMaxAge   time.Duration `name:"deadletter-max-age" env:"DEADLETTER_MAX_AGE" default:"720h" group:"Streams" help:"How long the DEADLETTER stream keeps a dead letter, when the worker creates it; 0: for ever."`
	DeadLetterMaxBytes int64         `name:"deadletter-max-bytes" env:"DEADLETTER_MAX_BYTES" default:"1073741824" group:"Streams" help:"Size limit in bytes of the DEADLETTER stream (1073741824: 1 GiB), when the worker creates it; the oldest dead letters go first. 0: none."`
	CommandMaxBytes    int64         `name:"command-max-bytes" env:"COMMAND_MAX_BYTES" default:"1073741824" group:"Streams" help:"Size limit in bytes of the COMMANDS stream (1073741824: 1 GiB), when the worker creates it; a full stream refuses new commands (their publishers get an error) and drops no queued one. 0: none."`
	ResultMaxBytes     int64         `name:"result-max-bytes" env:"RESULT_MAX_BYTES" default:"8589934592" group:"Streams" help:"Size limit in bytes of the RESULTS stream (8589934592: 8 GiB), when the worker creates it; a full stream refuses new outcomes (their commands wait, un-acked) and drops no stored one before RESULT_TTL. 0: none."`
}

// Validate is kong's hook.
func (f *streamFlags) Validate() error {
	switch {
	case f.StreamReplicas < 1 || f.StreamReplicas > 5:
		return fmt.Errorf("--stream-replicas (STREAM_REPLICAS) must be between 1 and 5 (JetStream's limit), got %d", f.StreamReplicas)
	case f.DeadLetterMaxAge < 0:
		return fmt.Errorf("--deadletter-max-age (DEADLETTER_MAX_AGE) must not be negative (0: for ever), got %v", f.DeadLetterMaxAge)
	case f.DeadLetterMaxBytes < 0:
		return fmt.Errorf("--deadletter-max-bytes (DEADLETTER_MAX_BYTES) must not be negative (0: no limit), got %d", f.DeadLetterMaxBytes)
	case f.CommandMaxBytes < 0:
		return fmt.Errorf("--command-max-bytes (COMMAND_MAX_BYTES) must not be negative (0: no limit), got %d", f.CommandMaxBytes)
	case f.ResultMaxBytes < 0:
		return fmt.Errorf("--result-max-bytes (RESULT_MAX_BYTES) must not be negative (0: no limit), got %d", f.ResultMaxBytes)
	}
	return nil
}

// apply sets the engine's stream settings.
func (f *streamFlags) apply(cfg *processor.Config) {
	cfg.NoProvision = !f.Provision
	cfg.StreamReplicas = f.StreamReplicas
	// 0 on the command line is "no limit", which the engine spells -1.
	cfg.DeadLetterMaxAge = cmp.Or(f.DeadLetterMaxAge, -1)
	cfg.DeadLetterMaxBytes = cmp.Or(f.DeadLetterMaxBytes, -1)
	cfg.CommandMaxBytes = cmp.Or(f.CommandMaxBytes, -1)
	cfg.ResultMaxBytes = cmp.Or(f.ResultMaxBytes, -1)
}

// startErr names the flag behind an engine's start error where one does,
// in the words of the command line: the engine's own message names its
// Config field and the README of old.
func startErr(err error) error {
	if !errors.Is(err, processor.ErrNotProvisioned) {
		return err
	}
	msg := strings.NewReplacer(
		" (Config.NoProvision)", " (--provision=false, PROVISION=false)",
		"the README gives the", "docs/operations.md, \"Streams that operators own\", gives the",
	).Replace(err.Error())
	if !strings.Contains(msg, "--provision=false") {
		msg += " (--provision=false, PROVISION=false)"
	}
	return &provisionError{msg: msg, err: err}
}

// provisionError is an engine's start error reworded by startErr.
type provisionError struct {
	msg string
	err error
}

func (e *provisionError) Error() string { return e.msg }
func (e *provisionError) Unwrap() error { return e.err }
