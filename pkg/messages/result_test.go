package messages

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestResult_Marshal(t *testing.T) {
	t.Parallel()

	// Every field is on the wire, zero or not: clients in any language
	// decode answers without knowing Go's omitempty rules.
	allFields := []string{"key", "command", "status", "code", "message", "data", "attempts", "replayed", "processed_at"}

	fields := func(t *testing.T, body []byte) map[string]json.RawMessage {
		t.Helper()
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(body, &m))
		return m
	}

	t.Run("ZeroValue", func(t *testing.T) {
		t.Parallel()
		got := fields(t, Result{}.Marshal())
		require.Len(t, got, len(allFields))
		for _, name := range allFields {
			require.Contains(t, got, name)
		}
		require.JSONEq(t, `{"key":"","command":"","status":"","code":"","message":"","data":null,
			"attempts":0,"replayed":false,"processed_at":"0001-01-01T00:00:00Z"}`, string(Result{}.Marshal()))
	})

	t.Run("Succeeded", func(t *testing.T) {
		t.Parallel()
		data, err := json.Marshal(ChargeData{ChargeID: "ch_1", AccountID: "acct_42", Amount: 1999, Currency: "EUR"})
		require.NoError(t, err)
		r := Result{
			Key: "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", Kind: KindPaymentCharge, Status: StatusSucceeded,
			Data: data, Attempts: 2, Replayed: true, Fingerprint: "1a4b",
			ProcessedAt: time.Date(2026, 11, 27, 10, 0, 0, 123_000_000, time.UTC),
		}
		require.JSONEq(t, `{"key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","command":"payment.charge",
			"status":"succeeded","code":"","message":"",
			"data":{"charge_id":"ch_1","account_id":"acct_42","amount":1999,"currency":"EUR"},
			"attempts":2,"replayed":true,"processed_at":"2026-11-27T10:00:00.123Z","fingerprint":"1a4b"}`, string(r.Marshal()))
	})

	tests := map[string]struct {
		data     json.RawMessage
		wantData string
	}{
		"NilData":          {nil, `null`},
		"EmptyData":        {json.RawMessage{}, `null`},
		"NullData":         {json.RawMessage(`null`), `null`},
		"ObjectData":       {json.RawMessage(`{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":5}`), `{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":5}`},
		"IndentedData":     {json.RawMessage("{\n  \"a\": 1\n}"), `{"a":1}`},
		"ScalarStringData": {json.RawMessage(`"x"`), `"x"`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := Result{Key: "k", Kind: KindCartAdd, Status: StatusFailed, Code: CodeCardDeclined,
				Message: "card declined", Data: tt.data, Attempts: 1,
				ProcessedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			body := r.Marshal()
			require.Len(t, fields(t, body), len(allFields))
			require.Equal(t, tt.wantData, string(fields(t, body)["data"]))

			back, err := DecodeResult(body)
			require.NoError(t, err)
			want := r
			want.Data = json.RawMessage(tt.wantData)
			require.Equal(t, want, back)
			require.Equal(t, body, back.Marshal(), "marshal of the decoded result is byte-identical")
		})
	}

	t.Run("DoesNotModifyReceiver", func(t *testing.T) {
		t.Parallel()
		r := Result{Key: "k"}
		_ = r.Marshal()
		require.Nil(t, r.Data)
	})

	t.Run("InvalidDataPanics", func(t *testing.T) {
		t.Parallel()
		require.Panics(t, func() { _ = Result{Data: json.RawMessage(`{`)}.Marshal() })
	})
}

func TestDecodeResult(t *testing.T) {
	t.Parallel()

	t.Run("ContractExample", func(t *testing.T) {
		t.Parallel()
		body := `{"key": "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", "command": "payment.charge", "status": "succeeded",
 "code": "", "message": "", "data": {"charge_id": "ch_1", "account_id": "acct_42", "amount": 1999, "currency": "EUR"},
 "attempts": 1, "replayed": false, "processed_at": "2026-11-27T10:00:00Z"}`
		r, err := DecodeResult([]byte(body))
		require.NoError(t, err)
		require.Equal(t, StatusSucceeded, r.Status)
		require.True(t, r.Status.IsOutcome())
		require.Equal(t, 1, r.Attempts)
		require.True(t, time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).Equal(r.ProcessedAt))

		var data ChargeData
		require.NoError(t, json.Unmarshal(r.Data, &data))
		require.Equal(t, ChargeData{ChargeID: "ch_1", AccountID: "acct_42", Amount: 1999, Currency: "EUR"}, data)
	})

	t.Run("NotJSON", func(t *testing.T) {
		t.Parallel()
		_, err := DecodeResult([]byte(`{"key":`))
		require.Error(t, err)
	})
}

func TestStatus_IsOutcome(t *testing.T) {
	t.Parallel()

	tests := map[Status]bool{
		StatusSucceeded: true,
		StatusFailed:    true,
		StatusRejected:  false,
		"":              false,
		"SUCCEEDED":     false,
	}
	for status, want := range tests {
		require.Equal(t, want, status.IsOutcome(), "status %q", status)
	}
}
