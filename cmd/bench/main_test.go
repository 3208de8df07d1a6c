package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGoFlags(t *testing.T) {
	require.Equal(t, []string{"--short", "--count=5", "--rounds", "2", "-h", "--", "-x"},
		goFlags([]string{"-short", "-count=5", "-rounds", "2", "-h", "--", "-x"}))
	require.Equal(t, []string{"soak", "--duration", "1m"}, goFlags([]string{"soak", "-duration", "1m"}))
}

func TestRun_Help(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		require.Zero(t, exitCode(err, &stderr), stderr.String())
		for _, flag := range []string{"--count", "--rounds", "--short", "--json", "BENCH_SHORT", "bench soak --help"} {
			require.Contains(t, stdout.String(), flag, args)
		}
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"soak", "-help"}, &stdout, &stderr)
	require.Zero(t, exitCode(err, &stderr))
	require.Contains(t, stdout.String(), "SOAK_DURATION")
}

func TestRun_UsageErrors(t *testing.T) {
	for want, args := range map[string][]string{
		"unknown flag --bogus":               {"-bogus"},
		"--count must be between 2":          {"-count", "1"},
		"--rounds must be at least 1":        {"--rounds=-1"},
		"--client-in-flight must be":         {"--client-in-flight", "0"},
		"--interval (SOAK_INTERVAL) must be": {"soak", "--duration", "5s", "--interval", "10s"},
		"--duration (SOAK_DURATION) must be": {"soak", "-duration", "10ms"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		require.Equal(t, 2, exitCode(err, &stderr), args)
		require.Contains(t, stderr.String(), want, args)
	}
}
