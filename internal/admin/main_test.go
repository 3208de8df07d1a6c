package admin_test

import (
	"testing"

	"github.com/idempay/idempay/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
