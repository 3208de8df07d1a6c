package stripe_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/idempay/idempay/internal/testenv"
)

// mock is the stripe-mock every test of this package talks to, through a
// faultProxy of its own.
var mock *testenv.StripeMock

func TestMain(m *testing.M) {
	var err error
	if mock, err = testenv.StartStripeMock(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := testenv.Shared(); err != nil { // NATS and Redis, for the engine tests
		mock.Shutdown()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.Close()
	mock.Shutdown()
	os.Exit(code)
}
