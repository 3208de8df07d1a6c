package explore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/idempay/idempay/internal/testenv"
)

// Defaults of Config: make explore's run, at least 200 seeds and 20,000
// keys.
const (
	FirstSeedDefault = 1
	SeedsDefault     = 200
	KeysDefault      = 100
	ParallelDefault  = 4
)

// Config configures Run.
type Config struct {
	// FirstSeed is the first seed; Run plays FirstSeed, FirstSeed+1, ...
	// Defaults to 1.
	FirstSeed uint64
	// Seeds is how many seeds to play. Defaults to 200.
	Seeds int
	// Keys is the keys of each seed. Defaults to 100.
	Keys int
	// Parallel is how many seeds run at once on the shared servers: a seed
	// mostly waits (for timeouts, redeliveries, frozen calls), so several
	// share two cores. Defaults to 4.
	Parallel int
	// Deployment is the servers to run on; nil starts a fresh one for the
	// run and stops it after.
	Deployment *testenv.Deployment
	// Progress, if set, receives each seed's result as it ends, in the
	// order they end.
	Progress func(done, total int, s *SeedResult)
	// Logger, if set, receives the workers' logs, each record with its
	// seed: what a replay (one seed) reads to see how a violation came
	// about. Nil: the workers log nothing.
	Logger *slog.Logger
	// Key, if set, is a key whose whole history (ledger.Input.History)
	// each seed that sends it keeps in SeedResult.History: with a replay,
	// the story of a violation's key.
	Key string
}

// WithDefaults returns a copy with every zero field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	d := *c
	d.FirstSeed = cmp.Or(c.FirstSeed, FirstSeedDefault)
	d.Seeds = cmp.Or(c.Seeds, SeedsDefault)
	d.Keys = cmp.Or(c.Keys, KeysDefault)
	d.Parallel = cmp.Or(c.Parallel, ParallelDefault)
	return &d
}

func (c *Config) validate() error {
	switch {
	case c.Seeds < 1:
		return fmt.Errorf("explore: Seeds must be at least 1, got %d", c.Seeds)
	case c.Keys < 1 || c.Keys > 10_000:
		return fmt.Errorf("explore: Keys must be between 1 and 10000, got %d", c.Keys)
	case c.Parallel < 1 || c.Parallel > 16:
		return fmt.Errorf("explore: Parallel must be between 1 and 16, got %d", c.Parallel)
	}
	return nil
}

// Summary is a whole run.
type Summary struct {
	Config   Config
	Seeds    []*SeedResult // in seed order
	Started  time.Time
	Duration time.Duration
	// Stopped is set when the run was cut short (ctx ended): Seeds holds
	// the ones that finished.
	Stopped bool
}

// Violations counts every violation of the run.
func (s *Summary) Violations() int {
	n := 0
	for _, r := range s.Seeds {
		n += len(r.Report.Violations)
	}
	return n
}

// Keys counts the keys played.
func (s *Summary) Keys() int {
	n := 0
	for _, r := range s.Seeds {
		n += r.Keys
	}
	return n
}

// Run plays cfg.Seeds seeds, cfg.Parallel at a time, and returns them all.
// It returns an error only when the harness could not run (a server that
// would not start); findings are in the Summary. When ctx ends it stops
// starting seeds and returns what finished, with Stopped set.
func Run(ctx context.Context, cfg *Config) (*Summary, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := cfg.Deployment
	if d == nil {
		var err error
		// The servers are bounded by their own readiness waits, and Close
		// must run whatever ctx says.
		if d, err = testenv.StartDeployment(&testenv.DeploymentOptions{Name: "explore"}); err != nil { //nolint:contextcheck // see above
			return nil, err
		}
		defer d.Close() //nolint:contextcheck // see above
	}
	sum := &Summary{Config: *cfg, Started: time.Now()}
	seeds := make(chan uint64)
	go func() {
		defer close(seeds)
		for i := range cfg.Seeds {
			select {
			case seeds <- cfg.FirstSeed + uint64(i):
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	for range cfg.Parallel {
		wg.Go(func() {
			for seed := range seeds {
				res, err := runPlan(ctx, d, NewPlan(seed, cfg.Keys), cfg.Logger, cfg.Key)
				mu.Lock()
				switch {
				case err != nil && ctx.Err() != nil:
				case err != nil:
					if firstErr == nil {
						firstErr = fmt.Errorf("explore: seed %d: %w", seed, err)
					}
				default:
					sum.Seeds = append(sum.Seeds, res)
					if cfg.Progress != nil {
						cfg.Progress(len(sum.Seeds), cfg.Seeds, res)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(sum.Seeds, func(i, j int) bool { return sum.Seeds[i].Seed < sum.Seeds[j].Seed })
	sum.Duration = time.Since(sum.Started)
	sum.Stopped = ctx.Err() != nil
	if firstErr != nil && !errors.Is(firstErr, context.Canceled) {
		return sum, firstErr
	}
	return sum, nil
}
