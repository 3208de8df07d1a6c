package messages

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds untrusted bytes to Decode for every command type. Decode
// must never panic; it either accepts a body that validates and whose
// canonical form decodes back to the same command with the same fingerprint,
// or it refuses with a *RejectError coded invalid_payload or
// payload_too_large (the latter exactly when the body is over the limit),
// the same rejection every time.
//
// The seed corpus is in testdata/fuzz/FuzzDecode; run it longer with
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./pkg/messages
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"account_id":"acct_42","amount":1999,"currency":"EUR","description":"order 1001"}`,
		`{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2}`,
		`{"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","amount":500,"reason":"requested_by_customer"}`,
		`{"amount":{"a":[1,"}",{"b":"\\""}]},"Amount":2, "x" :null}`,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		for _, newCmd := range []func() Command{
			func() Command { return new(ChargeRequest) },
			func() Command { return new(CartAddRequest) },
			func() Command { return new(RefundRequest) },
		} {
			dst := newCmd()
			err := Decode(body, dst)
			// The fast path is only a shortcut: it must come to exactly
			// what the careful path does, for every body.
			slow := newCmd()
			slowErr := decodeSlow(body, slow)
			if (err == nil) != (slowErr == nil) || (err != nil && err.Error() != slowErr.Error()) || (err == nil && !equalCommands(dst, slow)) {
				t.Fatalf("%s: %q: Decode gives %v %+v, the careful path %v %+v", dst.Kind(), body, err, dst, slowErr, slow)
			}
			if err != nil {
				var rej *RejectError
				if !errors.As(err, &rej) {
					t.Fatalf("%s: error %v (%T) is not a *RejectError", dst.Kind(), err, err)
				}
				switch rej.Code {
				case CodeInvalidPayload:
					if len(body) > MaxBodySize {
						t.Fatalf("%s: %d-byte body rejected with %s, want %s", dst.Kind(), len(body), rej.Code, CodePayloadTooLarge)
					}
				case CodePayloadTooLarge:
					if len(body) <= MaxBodySize {
						t.Fatalf("%s: %d-byte body rejected as too large", dst.Kind(), len(body))
					}
				default:
					t.Fatalf("%s: unexpected code %q: %v", dst.Kind(), rej.Code, err)
				}
				if rej.Message == "" {
					t.Fatalf("%s: rejection without a message", dst.Kind())
				}
				if again := Decode(body, newCmd()); again == nil || again.Error() != err.Error() {
					t.Fatalf("%s: the same body is refused with %v, then with %v", dst.Kind(), err, again)
				}
				continue
			}

			if err := dst.Validate(); err != nil {
				t.Fatalf("%s: Decode accepted %q but Validate says %v", dst.Kind(), body, err)
			}
			canonical := Canonical(dst)
			again := newCmd()
			if err := Decode(canonical, again); err != nil {
				t.Fatalf("%s: canonical form %s of %q does not decode: %v", dst.Kind(), canonical, body, err)
			}
			if !equalCommands(dst, again) {
				t.Fatalf("%s: %q decoded to %+v, its canonical form %s to %+v", dst.Kind(), body, dst, canonical, again)
			}
			if !bytes.Equal(canonical, Canonical(again)) {
				t.Fatalf("%s: canonical form is not a fixed point: %s then %s", dst.Kind(), canonical, Canonical(again))
			}
			if Fingerprint(dst) != Fingerprint(again) {
				t.Fatalf("%s: fingerprint of %q differs from that of its canonical form %s", dst.Kind(), body, canonical)
			}
		}
	})
}

func equalCommands(a, b Command) bool {
	switch a := a.(type) {
	case *ChargeRequest:
		b, ok := b.(*ChargeRequest)
		return ok && *a == *b
	case *CartAddRequest:
		b, ok := b.(*CartAddRequest)
		return ok && *a == *b
	case *RefundRequest:
		b, ok := b.(*RefundRequest)
		return ok && *a == *b
	}
	return false
}
