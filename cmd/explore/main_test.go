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
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-help"}, nil, &stdout, &stderr)
	require.Zero(t, exitCode(err, &stderr), stderr.String())
	for _, s := range []string{"--seed", "EXPLORE_SEED", "--seeds", "--keys", "--parallel", "--report", "--key", "make explore SEED=N"} {
		require.Contains(t, stdout.String(), s)
	}
}

func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-seeds", "x"}, {"-nope"}, {"-parallel", "0"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, nil, &stdout, &stderr)
		require.Equal(t, cli.ExitUsage, exitCode(err, &stderr), "%v: %s", args, stderr.String())
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), nil, []string{"EXPLORE_KEYS=0"}, &stdout, &stderr)
	require.Equal(t, cli.ExitUsage, exitCode(err, &stderr), stderr.String())
	require.Contains(t, stderr.String(), "--keys (from EXPLORE_KEYS) must be between 1 and 10000")

	stderr.Reset()
	err = run(context.Background(), []string{"--seed", "17", "--key", "not-a-key"}, nil, &stdout, &stderr)
	require.Equal(t, cli.ExitUsage, exitCode(err, &stderr), stderr.String())
	require.Contains(t, stderr.String(), `--key "not-a-key" is not a key`)
}

// TestRun_ConfigReference: the explorer's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.ErrorIs(t, run(context.Background(), []string{cli.ReferenceFlag}, nil, &stdout, &stderr), cli.ErrHelp)
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "explore", stdout.Bytes()))
}
