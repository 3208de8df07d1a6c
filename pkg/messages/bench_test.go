package messages

import (
	"encoding/json"
	"testing"
	"time"
)

// The hot in-process paths of one command, run by make bench with
// -benchmem: every allocation here is paid on every command.

var (
	benchCharge = []byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR","description":"order 1001"}`)
	benchCart   = []byte(`{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2}`)
)

func BenchmarkDecode(b *testing.B) {
	b.Run("Charge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c ChargeRequest
			if err := Decode(benchCharge, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Cart", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c CartAddRequest
			if err := Decode(benchCart, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ChargeCarefulPath", func(b *testing.B) { // what every body cost before the fast path
		b.ReportAllocs()
		for b.Loop() {
			var c ChargeRequest
			if err := decodeSlow(benchCharge, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	c := ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFingerprint(b *testing.B) {
	c := ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"}
	b.ReportAllocs()
	for b.Loop() {
		_ = Fingerprint(c)
	}
}

func BenchmarkResultMarshal(b *testing.B) {
	data, err := json.Marshal(ChargeData{ChargeID: "ch_0123456789abcdef01234567", AccountID: "acct_42", Amount: 1999, Currency: "EUR"})
	if err != nil {
		b.Fatal(err)
	}
	r := Result{Key: "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", Kind: KindPaymentCharge, Status: StatusSucceeded,
		Data: data, Attempts: 1, ProcessedAt: time.Now().UTC(), Fingerprint: "1a4b4750a5da821234e8dd6ad2e96c9948a6dcd010f45a3e986f74190d96b50e"}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Marshal()
	}
}
