package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestShared_CreateWhileDelete creates streams while others are deleted,
// as the parallel tests of one binary do on the shared server. nats-server
// removes an account's streams directory, in a goroutine, once its last
// stream is deleted; a stream created in that moment failed with "could not
// create storage directory" (CI, pkg/stripe, 2026-12-06). Shared's anchor
// stream keeps the directory from ever being empty. Without it this test
// fails within a few seconds under -race.
func TestShared_CreateWhileDelete(t *testing.T) {
	env, err := startEnv() // Shared's servers, of this test's own
	require.NoError(t, err)
	t.Cleanup(env.close)
	nc, err := ConnectNATS(env.NATSURL, t.Name())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	ns := Namespace()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("%s_RACE_%d_%d", ns, g, i)
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}})
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("create %s: %w", name, err)
					return
				}
				if err := js.DeleteStream(ctx, name); err != nil && ctx.Err() == nil {
					errs <- fmt.Errorf("delete %s: %w", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
