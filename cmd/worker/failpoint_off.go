//go:build !failpoint

package main

import (
	"log/slog"

	"github.com/idempay/idempay/pkg/processor"
)

// failpointFlags is empty in a production build: fault injection exists
// only in a worker built with -tags failpoint.
type failpointFlags struct{}

func (*failpointFlags) validate() error { return nil }

func (*failpointFlags) failpoint(*slog.Logger) func(processor.Failpoint, string) bool { return nil }
