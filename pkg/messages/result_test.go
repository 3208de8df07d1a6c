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

// TestResult_MarshalIsEncodingJSON: the hand-written encoder writes
// exactly the bytes encoding/json writes for a Result, whatever its strings
// hold (escapes, HTML characters, invalid UTF-8, U+2028), its Data (nil,
// indented) and its time (zones, nanoseconds, the zero time).
func TestResult_MarshalIsEncodingJSON(t *testing.T) {
	t.Parallel()
	strs := []string{"", "plain", `quote " and \ backslash`, "<script>&amp;</script>", "tab\tnew\nline\x00",
		"ünïcödé ✓", "bad utf8 \xff\xfe", "line sep \u2028 para \u2029", "del \x7f"}
	datas := []json.RawMessage{nil, json.RawMessage(`null`), json.RawMessage("{\n \"a\" : [1, 2],\t\"b\":\"<&>\"\n}"),
		json.RawMessage(`{"charge_id":"ch_1","amount":1999}`), json.RawMessage("[\"\u2028 \u2029 \u20ac\"]")}
	times := []time.Time{{}, time.Date(2026, 12, 3, 15, 4, 5, 123456789, time.UTC),
		time.Date(2026, 12, 3, 15, 4, 5, 0, time.FixedZone("X", 5*3600+1800))}
	i := 0
	for _, s := range strs {
		for _, d := range datas {
			for _, at := range times {
				i++
				r := Result{Key: s, Kind: s + "k", Status: Status(s), Code: s, Message: s, Data: d,
					Attempts: i * 7, Replayed: i%2 == 0, ProcessedAt: at}
				if i%3 != 0 {
					r.Fingerprint = s + "fp"
				}
				want := r
				if len(want.Data) == 0 {
					want.Data = json.RawMessage("null")
				}
				wantBytes, err := json.Marshal(want)
				require.NoError(t, err)
				require.Equal(t, string(wantBytes), string(r.Marshal()), "result %+v", r)
			}
		}
	}
}

// TestData_AppendJSON: the outcome data's own encoders write what
// json.Marshal writes.
func TestData_AppendJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "ch_0123", `a"b\\c`, "<&>", "ünï \u2028", "bad \xff"} {
		c := ChargeData{ChargeID: s, AccountID: s + "acct", Amount: -42, Currency: s + "EUR"}
		want, err := json.Marshal(c)
		require.NoError(t, err)
		require.Equal(t, string(want), string(c.AppendJSON(nil)))
		r := RefundData{RefundID: s, ChargeID: s + "ch", Amount: 1 << 40, Currency: s, RefundedTotal: 7}
		want, err = json.Marshal(r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(r.AppendJSON([]byte{})))
	}
}
