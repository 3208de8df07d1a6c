package messages

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSubjects_WithDefaults(t *testing.T) {
	t.Parallel()

	t.Run("Zero", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, Subjects{Command: "cmd", Result: "result", Rejected: "rejected", DeadLetter: "dlq", Lookup: "lookup"},
			Subjects{}.WithDefaults())
		require.Equal(t, Subjects{}.WithDefaults(), DefaultSubjects())
	})

	t.Run("KeepsSetRoots", func(t *testing.T) {
		t.Parallel()
		s := Subjects{Command: "t1.cmd", DeadLetter: "t1.dlq"}
		got := s.WithDefaults()
		require.Equal(t, Subjects{Command: "t1.cmd", Result: "result", Rejected: "rejected", DeadLetter: "t1.dlq", Lookup: "lookup"}, got)
		require.Equal(t, Subjects{Command: "t1.cmd", DeadLetter: "t1.dlq"}, s, "WithDefaults returns a copy")
	})
}

func TestSubjects_Helpers(t *testing.T) {
	t.Parallel()

	const key = "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f"

	tests := map[string]struct {
		subjects                                      Subjects
		command, commandWild, result, resultWild      string
		rejected, deadLetter, deadLetterWild, typeSub string
	}{
		"Defaults": {
			subjects: DefaultSubjects(),
			command:  "cmd.payment.charge", commandWild: "cmd.>",
			result: "result." + key, resultWild: "result.>",
			rejected:   "rejected." + key,
			deadLetter: "dlq.payment.charge", deadLetterWild: "dlq.>",
		},
		"Namespaced": {
			subjects: Subjects{Command: "t1.cmd", Result: "t1.result", Rejected: "t1.rejected", DeadLetter: "t1.dlq"},
			command:  "t1.cmd.payment.charge", commandWild: "t1.cmd.>",
			result: "t1.result." + key, resultWild: "t1.result.>",
			rejected:   "t1.rejected." + key,
			deadLetter: "t1.dlq.payment.charge", deadLetterWild: "t1.dlq.>",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := tt.subjects
			require.Equal(t, tt.command, s.CommandFor(KindPaymentCharge))
			require.Equal(t, tt.commandWild, s.CommandWildcard())
			require.Equal(t, tt.result, s.ResultFor(key))
			require.Equal(t, tt.resultWild, s.ResultWildcard())
			require.Equal(t, tt.rejected, s.RejectedFor(key))
			require.Equal(t, tt.deadLetter, s.DeadLetterFor(KindPaymentCharge))
			require.Equal(t, tt.deadLetterWild, s.DeadLetterWildcard())

			typ, ok := s.KindOf(s.CommandFor(KindCartAdd))
			require.True(t, ok)
			require.Equal(t, KindCartAdd, typ)
		})
	}
}

func TestSubjects_KindOf(t *testing.T) {
	t.Parallel()

	s := Subjects{Command: "cmd"}.WithDefaults()
	tests := map[string]struct {
		subject string
		want    string
		ok      bool
	}{
		"Charge":        {"cmd.payment.charge", KindPaymentCharge, true},
		"Cart":          {"cmd.cart.add", KindCartAdd, true},
		"UnknownType":   {"cmd.refund", "refund", true},
		"ResultSubject": {"result.payment.charge", "", false},
		"RootOnly":      {"cmd", "", false},
		"RootPrefix":    {"cmdx.payment.charge", "", false},
		"OtherRoot":     {"t1.cmd.payment.charge", "", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, ok := s.KindOf(tt.subject)
			require.Equal(t, tt.ok, ok)
			if ok {
				require.Equal(t, tt.want, got)
			}
		})
	}
}

func TestTopology(t *testing.T) {
	t.Parallel()

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		got := Topology{}.WithDefaults()
		require.Equal(t, Topology{Subjects: DefaultSubjects(), CommandStream: "COMMANDS", ResultStream: "RESULTS",
			DeadLetterStream: "DEADLETTER", Consumer: "workers"}, got)
		require.Equal(t, got, DefaultTopology())
		require.NoError(t, got.Validate())
	})

	invalid := map[string]struct {
		edit    func(*Topology)
		wantErr string
	}{
		"Wildcard":     {func(t *Topology) { t.Subjects.Command = "cmd.*" }, "Subjects.Command"},
		"EmptyToken":   {func(t *Topology) { t.Subjects.Result = "a..b" }, "Subjects.Result"},
		"TrailingDot":  {func(t *Topology) { t.Subjects.Rejected = "rej." }, "Subjects.Rejected"},
		"Space":        {func(t *Topology) { t.Subjects.DeadLetter = "d lq" }, "Subjects.DeadLetter"},
		"SameRoot":     {func(t *Topology) { t.Subjects.Rejected = "result" }, "Subjects.Result and Topology.Subjects.Rejected"},
		"StreamDot":    {func(t *Topology) { t.CommandStream = "A.B" }, "CommandStream"},
		"ConsumerStar": {func(t *Topology) { t.Consumer = "w*" }, "Consumer"},
	}
	for name, tt := range invalid {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			top := DefaultTopology()
			tt.edit(&top)
			require.ErrorContains(t, top.Validate(), tt.wantErr)
		})
	}
}
