package load_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/idempay/idempay/internal/testenv"
)

func TestMain(m *testing.M) {
	if _, err := testenv.Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.Close()
	os.Exit(code)
}
