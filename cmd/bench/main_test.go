package main

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
)

func TestRun_Help(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, nil, &stdout, &stderr)
		require.Zero(t, exitCode(err, &stderr), stderr.String())
		for _, flag := range []string{"--count", "--rounds", "--short", "--json", "BENCH_SHORT", "bench soak --help"} {
			require.Contains(t, stdout.String(), flag, args)
		}
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"soak", "-help"}, nil, &stdout, &stderr)
	require.Zero(t, exitCode(err, &stderr))
	require.Contains(t, stdout.String(), "SOAK_DURATION")
}

func TestRun_UsageErrors(t *testing.T) {
	for want, args := range map[string][]string{
		"unknown flag --bogus":                               {"-bogus"},
		"--count must be between 2":                          {"-count", "1"},
		"--rounds must be at least 1 (or 0 for the default)": {"--rounds=-1"},
		"--client-in-flight must be":                         {"--client-in-flight", "0"},
		"--interval (SOAK_INTERVAL) must be":                 {"soak", "--duration", "5s", "--interval", "10s"},
		"--duration (SOAK_DURATION) must be":                 {"soak", "-duration", "10ms"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, nil, &stdout, &stderr)
		require.Equal(t, cli.ExitUsage, exitCode(err, &stderr), args)
		require.Contains(t, stderr.String(), want, args)
	}
}

// TestRun_EnvErrors: a variable's bad value names the flag and the variable.
func TestRun_EnvErrors(t *testing.T) {
	for want, env := range map[string]string{
		"--count (from BENCH_COUNT): expected":            "BENCH_COUNT=many",
		"--count (from IDEMPAY_BENCH_COUNT): expected":    "IDEMPAY_BENCH_COUNT=many",
		"--gomaxprocs (IDEMPAY_BENCH_GOMAXPROCS) must be": "IDEMPAY_BENCH_GOMAXPROCS=-1",
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), nil, []string{env}, &stdout, &stderr)
		require.Equal(t, cli.ExitUsage, exitCode(err, &stderr), env)
		require.Contains(t, stderr.String(), want, env)
	}
}

// TestRun_ConfigReference: the benchmark's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{cli.ReferenceFlag}, nil, &stdout, &stderr)
	require.Zero(t, exitCode(err, &stderr), stderr.String())
	require.Contains(t, stdout.String(), "### `bench soak`")
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "bench", stdout.Bytes()))
}
