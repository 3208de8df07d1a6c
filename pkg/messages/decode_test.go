package messages

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidKey(t *testing.T) {
	t.Parallel()

	tests := map[string]struct {
		key  string
		want bool
	}{
		"V4":               {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", true},
		"V7":               {"01936b2e-8f4a-7c3d-b1e2-9f8e7d6c5b4a", true},
		"V1":               {"6ba7b810-9dad-11d1-80b4-00c04fd430c8", true},
		"Nil":              {"00000000-0000-0000-0000-000000000000", true},
		"Max":              {"ffffffff-ffff-ffff-ffff-ffffffffffff", true},
		"UpperCase":        {"0B6E4C1E-7D2A-4F5B-9C3E-1A2B3C4D5E6F", false},
		"OneUpperCase":     {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6F", false},
		"MaxUpperCase":     {"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", false},
		"Braces":           {"{0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f}", false},
		"URN":              {"urn:uuid:0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", false},
		"NoHyphens":        {"0b6e4c1e7d2a4f5b9c3e1a2b3c4d5e6f", false},
		"NoHyphensPadded":  {"0b6e4c1e7d2a4f5b9c3e1a2b3c4d5e6f0000", false},
		"HyphenMisplaced":  {"0b6e4c1e7-d2a-4f5b-9c3e-1a2b3c4d5e6f", false},
		"HyphensAsHex":     {"0b6e4c1e07d2a04f5b09c3e01a2b3c4d5e6f", false},
		"ExtraHyphen":      {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e-f", false},
		"Len35":            {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6", false},
		"Len37":            {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f0", false},
		"NonHexG":          {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6g", false},
		"NonHexSpace":      {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6 ", false},
		"NonHexUnderscore": {"0b6e4c1e_7d2a-4f5b-9c3e-1a2b3c4d5e6f", false},
		"NonASCII":         {"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5é", false}, // 36 bytes
		"Empty":            {"", false},
		"LeadingSpace":     {" 0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, ValidKey(tt.key), "ValidKey(%q)", tt.key)
		})
	}
}

// chargeBody is a valid payment.charge body with one field replaced by a
// raw JSON value, or removed when the value is "".
func chargeBody(field, raw string) string {
	fields := []struct{ name, raw string }{
		{"account_id", `"acct_42"`},
		{"amount", `1999`},
		{"currency", `"EUR"`},
		{"description", `"order 1001"`},
	}
	var parts []string
	for _, f := range fields {
		if f.name == field {
			f.raw = raw
		}
		if f.raw != "" {
			parts = append(parts, strconv.Quote(f.name)+":"+f.raw)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// cartBody is a valid cart.add body with one field replaced by a raw JSON
// value, or removed when the value is "".
func cartBody(field, raw string) string {
	fields := []struct{ name, raw string }{
		{"cart_id", `"cart_7"`},
		{"sku", `"SKU-RED-M"`},
		{"quantity", `2`},
	}
	var parts []string
	for _, f := range fields {
		if f.name == field {
			f.raw = raw
		}
		if f.raw != "" {
			parts = append(parts, strconv.Quote(f.name)+":"+f.raw)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func quoted(s string) string { return strconv.Quote(s) }

func TestDecode_Charge(t *testing.T) {
	t.Parallel()

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()

		tests := map[string]struct {
			body string
			want ChargeRequest
		}{
			"Contract": {
				`{"account_id": "acct_42", "amount": 1999, "currency": "EUR", "description": "order 1001"}`,
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"},
			},
			"Compact": {
				`{"account_id":"acct_42","amount":1999,"currency":"EUR"}`,
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR"},
			},
			"Reordered": {
				`{"currency":"EUR","description":"order 1001","amount":1999,"account_id":"acct_42"}`,
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"},
			},
			"WhiteSpace": {
				"\r\n\t {\n\t\"account_id\" :\t\"acct_42\" ,\r\n \"amount\"\n:\n1999 , \"currency\":\"EUR\"\n}\n\t \r\n",
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR"},
			},
			"EmptyDescription": {
				chargeBody("description", `""`),
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR"},
			},
			"EscapedStrings": {
				`{"account_id":"acct\u005f42","amount":1999,"currency":"\u0045UR","description":"caf\u00e9 \"x\""}`,
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: `café "x"`},
			},
			"AmountOne": {
				chargeBody("amount", `1`),
				ChargeRequest{AccountID: "acct_42", Amount: 1, Currency: "EUR", Description: "order 1001"},
			},
			"AmountMax": {
				chargeBody("amount", `1000000000000`),
				ChargeRequest{AccountID: "acct_42", Amount: MaxAmount, Currency: "EUR", Description: "order 1001"},
			},
			"AccountID64": {
				chargeBody("account_id", quoted(strings.Repeat("a", 64))),
				ChargeRequest{AccountID: strings.Repeat("a", 64), Amount: 1999, Currency: "EUR", Description: "order 1001"},
			},
			"AccountIDAllClasses": {
				chargeBody("account_id", `"Az09_.-"`),
				ChargeRequest{AccountID: "Az09_.-", Amount: 1999, Currency: "EUR", Description: "order 1001"},
			},
			"Description255ASCII": {
				chargeBody("description", quoted(strings.Repeat("x", 255))),
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: strings.Repeat("x", 255)},
			},
			"Description255TwoByteRunes": {
				chargeBody("description", quoted(strings.Repeat("é", 255))),
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: strings.Repeat("é", 255)},
			},
			"Description255FourByteRunes": {
				chargeBody("description", `"`+strings.Repeat("😀", 255)+`"`),
				ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: strings.Repeat("😀", 255)},
			},
		}
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var got ChargeRequest
				require.NoError(t, Decode([]byte(tt.body), &got))
				require.Equal(t, tt.want, got)
			})
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()

		tests := map[string]struct {
			body    string
			wantMsg string // a substring of the RejectError's message, naming the field
		}{
			"UnknownField":             {`{"account_id":"acct_42","amount":1999,"currency":"EUR","tip":1}`, `unknown field "tip"`},
			"MisCasedAccountID":        {`{"Account_ID":"acct_42","amount":1999,"currency":"EUR"}`, `unknown field "Account_ID"`},
			"MisCasedAmount":           {`{"account_id":"acct_42","AMOUNT":1999,"currency":"EUR"}`, `unknown field "AMOUNT"`},
			"MisCasedBesideExact":      {`{"account_id":"acct_42","amount":1999,"currency":"EUR","Currency":"USD"}`, `unknown field "Currency"`},
			"UnicodeFoldedName":        {`{"account_id":"acct_42","amount":1999,"currency":"EUR","de\u017fcription":"x"}`, `unknown field "deſcription"`},
			"CartField":                {`{"account_id":"acct_42","amount":1999,"currency":"EUR","quantity":1}`, `unknown field "quantity"`},
			"AmountString":             {chargeBody("amount", `"1999"`), "amount must be an integer"},
			"AmountBool":               {chargeBody("amount", `true`), "amount must be an integer"},
			"AmountObject":             {chargeBody("amount", `{}`), "amount must be an integer"},
			"AmountFraction":           {chargeBody("amount", `1999.0`), "amount must be an integer"},
			"AmountFractionNonZero":    {chargeBody("amount", `19.99`), "amount must be an integer"},
			"AmountExponent":           {chargeBody("amount", `1e3`), "amount must be an integer"},
			"AmountExponentUpper":      {chargeBody("amount", `1E3`), "amount must be an integer"},
			"AmountOverflowsInt64":     {chargeBody("amount", `9223372036854775808`), "amount must be an integer"},
			"AmountNull":               {chargeBody("amount", `null`), "amount"},
			"AmountMissing":            {chargeBody("amount", ``), "amount"},
			"AmountZero":               {chargeBody("amount", `0`), "amount"},
			"AmountNegativeZero":       {chargeBody("amount", `-0`), "amount"},
			"AmountNegative":           {chargeBody("amount", `-1999`), "amount"},
			"AmountTooLarge":           {chargeBody("amount", `1000000000001`), "amount"},
			"AccountIDNumber":          {chargeBody("account_id", `42`), "account_id must be a string"},
			"AccountIDArray":           {chargeBody("account_id", `["acct_42"]`), "account_id must be a string"},
			"AccountIDEmpty":           {chargeBody("account_id", `""`), "account_id"},
			"AccountIDMissing":         {chargeBody("account_id", ``), "account_id"},
			"AccountID65":              {chargeBody("account_id", quoted(strings.Repeat("a", 65))), "account_id"},
			"AccountIDSpace":           {chargeBody("account_id", `"acct 42"`), "account_id"},
			"AccountIDSlash":           {chargeBody("account_id", `"acct/42"`), "account_id"},
			"AccountIDNonASCII":        {chargeBody("account_id", `"accté"`), "account_id"},
			"AccountIDTrailingNewline": {chargeBody("account_id", `"acct_42\n"`), "account_id"},
			"CurrencyLower":            {chargeBody("currency", `"eur"`), "currency"},
			"CurrencyFour":             {chargeBody("currency", `"EURO"`), "currency"},
			"CurrencyTwo":              {chargeBody("currency", `"EU"`), "currency"},
			"CurrencyDigit":            {chargeBody("currency", `"E1R"`), "currency"},
			"CurrencyNonASCII":         {chargeBody("currency", `"ÉUR"`), "currency"},
			"CurrencyMissing":          {chargeBody("currency", ``), "currency"},
			"CurrencyNumber":           {chargeBody("currency", `978`), "currency must be a string"},
			"DescriptionNumber":        {chargeBody("description", `1001`), "description must be a string"},
			"Description256ASCII":      {chargeBody("description", quoted(strings.Repeat("x", 256))), "description"},
			"Description256TwoByte":    {chargeBody("description", quoted(strings.Repeat("é", 256))), "description"},
			"Description256ThreeByte":  {chargeBody("description", quoted(strings.Repeat("€", 256))), "description"},
			"Description256FourByte":   {chargeBody("description", `"`+strings.Repeat("😀", 256)+`"`), "description"},
			"Description256Escaped":    {chargeBody("description", `"`+strings.Repeat(`\u00e9`, 256)+`"`), "description"},
		}
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var got ChargeRequest
				err := Decode([]byte(tt.body), &got)
				requireReject(t, err, ErrInvalidPayload, tt.wantMsg)
			})
		}
	})
}

func TestDecode_CartAdd(t *testing.T) {
	t.Parallel()

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()

		tests := map[string]struct {
			body string
			want CartAddRequest
		}{
			"Contract":    {`{"cart_id": "cart_7", "sku": "SKU-RED-M", "quantity": 2}`, CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2}},
			"Reordered":   {`{"quantity":2,"sku":"SKU-RED-M","cart_id":"cart_7"}`, CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2}},
			"WhiteSpace":  {"\n{ \"sku\" : \"SKU-RED-M\" ,\n\t\"quantity\":2,\r\n\"cart_id\":\"cart_7\" }\n", CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2}},
			"QuantityOne": {cartBody("quantity", `1`), CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 1}},
			"QuantityMax": {cartBody("quantity", `1000`), CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: MaxQuantity}},
			"IDs64":       {`{"cart_id":"` + strings.Repeat("c", 64) + `","sku":"` + strings.Repeat("S", 64) + `","quantity":2}`, CartAddRequest{CartID: strings.Repeat("c", 64), SKU: strings.Repeat("S", 64), Quantity: 2}},
		}
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var got CartAddRequest
				require.NoError(t, Decode([]byte(tt.body), &got))
				require.Equal(t, tt.want, got)
			})
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()

		tests := map[string]struct {
			body    string
			wantMsg string
		}{
			"UnknownField":      {`{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2,"price":5}`, `unknown field "price"`},
			"ChargeField":       {`{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2,"amount":5}`, `unknown field "amount"`},
			"MisCasedCartID":    {`{"Cart_ID":"cart_7","sku":"SKU-RED-M","quantity":2}`, `unknown field "Cart_ID"`},
			"MisCasedSKU":       {`{"cart_id":"cart_7","SKU":"SKU-RED-M","quantity":2}`, `unknown field "SKU"`},
			"QuantityZero":      {cartBody("quantity", `0`), "quantity"},
			"QuantityNegative":  {cartBody("quantity", `-1`), "quantity"},
			"QuantityTooLarge":  {cartBody("quantity", `1001`), "quantity"},
			"QuantityFraction":  {cartBody("quantity", `2.0`), "quantity must be an integer"},
			"QuantityExponent":  {cartBody("quantity", `2e0`), "quantity must be an integer"},
			"QuantityString":    {cartBody("quantity", `"2"`), "quantity must be an integer"},
			"QuantityMissing":   {cartBody("quantity", ``), "quantity"},
			"CartIDMissing":     {cartBody("cart_id", ``), "cart_id"},
			"CartID65":          {cartBody("cart_id", quoted(strings.Repeat("c", 65))), "cart_id"},
			"CartIDSpace":       {cartBody("cart_id", `"cart 7"`), "cart_id"},
			"CartIDNumber":      {cartBody("cart_id", `7`), "cart_id must be a string"},
			"SKUEmpty":          {cartBody("sku", `""`), "sku"},
			"SKU65":             {cartBody("sku", quoted(strings.Repeat("S", 65))), "sku"},
			"SKUSpace":          {cartBody("sku", `"SKU RED"`), "sku"},
			"SKUBraces":         {cartBody("sku", `"{SKU}"`), "sku"},
			"SKUNull":           {cartBody("sku", `null`), "sku"},
			"SKUBool":           {cartBody("sku", `false`), "sku must be a string"},
			"ChargeBodyForCart": {chargeBody("", ""), `unknown field "`},
		}
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var got CartAddRequest
				err := Decode([]byte(tt.body), &got)
				requireReject(t, err, ErrInvalidPayload, tt.wantMsg)
			})
		}
	})
}

// TestDecode_Body covers what is wrong with a body whatever its command type.
func TestDecode_Body(t *testing.T) {
	t.Parallel()

	valid := chargeBody("", "")
	// Exactly MaxBodySize bytes: a valid object padded with white space.
	atLimit := valid + strings.Repeat(" ", MaxBodySize-len(valid))
	// One byte over the limit, though otherwise valid.
	overLimit := atLimit + " "

	t.Run("AtLimit", func(t *testing.T) {
		t.Parallel()
		require.Len(t, atLimit, MaxBodySize)
		var got ChargeRequest
		require.NoError(t, Decode([]byte(atLimit), &got))
		require.Equal(t, "acct_42", got.AccountID)
	})

	tests := map[string]struct {
		body    []byte
		want    *RejectError
		wantMsg string
	}{
		"Null":                 {[]byte(`null`), ErrInvalidPayload, "JSON object"},
		"NullPadded":           {[]byte(" \n null \n"), ErrInvalidPayload, "JSON object"},
		"Array":                {[]byte(`[]`), ErrInvalidPayload, "JSON object"},
		"ArrayOfObject":        {[]byte(`[` + valid + `]`), ErrInvalidPayload, "JSON object"},
		"EmptyString":          {[]byte(`""`), ErrInvalidPayload, "JSON object"},
		"String":               {[]byte(strconv.Quote(valid)), ErrInvalidPayload, "JSON object"},
		"Number":               {[]byte(`1999`), ErrInvalidPayload, "JSON object"},
		"True":                 {[]byte(`true`), ErrInvalidPayload, "JSON object"},
		"Empty":                {[]byte{}, ErrInvalidPayload, "JSON object"},
		"Nil":                  {nil, ErrInvalidPayload, "JSON object"},
		"WhiteSpaceOnly":       {[]byte(" \t\r\n"), ErrInvalidPayload, "JSON object"},
		"ByteOrderMark":        {append([]byte("\xef\xbb\xbf"), valid...), ErrInvalidPayload, "JSON object"},
		"Truncated":            {[]byte(valid[:len(valid)-1]), ErrInvalidPayload, "not valid JSON"},
		"OpenBrace":            {[]byte(`{`), ErrInvalidPayload, "not valid JSON"},
		"TrailingComma":        {[]byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR",}`), ErrInvalidPayload, "not valid JSON"},
		"SingleQuotes":         {[]byte(`{'account_id':'acct_42'}`), ErrInvalidPayload, "not valid JSON"},
		"TwoObjects":           {[]byte(valid + valid), ErrInvalidPayload, "after top-level value"},
		"TwoObjectsSpaced":     {[]byte(valid + "\n" + valid), ErrInvalidPayload, "after top-level value"},
		"TrailingGarbage":      {[]byte(valid + " x"), ErrInvalidPayload, "after top-level value"},
		"TrailingNull":         {[]byte(valid + "null"), ErrInvalidPayload, "after top-level value"},
		"InvalidUTF8InString":  {[]byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR","description":"` + "\xff\xfe" + `"}`), ErrInvalidPayload, "UTF-8"},
		"InvalidUTF8Outside":   {append([]byte(valid), 0xc3), ErrInvalidPayload, "UTF-8"},
		"SurrogateHalfUTF8":    {[]byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR","description":"` + "\xed\xa0\x80" + `"}`), ErrInvalidPayload, "UTF-8"},
		"OverLimit":            {[]byte(overLimit), ErrPayloadTooLarge, "65537 bytes"},
		"OverLimitInvalidUTF8": {append(bytes.Repeat([]byte{0xff}, MaxBodySize), '{'), ErrPayloadTooLarge, "at most 65536"},
		"WayOverLimit":         {bytes.Repeat([]byte("{"), 1<<20), ErrPayloadTooLarge, "1048576 bytes"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, dst := range []Command{&ChargeRequest{}, &CartAddRequest{}} {
				err := Decode(tt.body, dst)
				requireReject(t, err, tt.want, tt.wantMsg)
			}
		})
	}
}

func TestDecode_Deterministic(t *testing.T) {
	t.Parallel()

	// A body with several faults gets the same rejection every time: a
	// redelivered or re-sent command must not get a different answer.
	body := []byte(`{"zeta":1,"account_id":"acct_42","Amount":1,"currency":"EUR","alpha":2,"Beta":3}`)
	var first ChargeRequest
	want := Decode(body, &first)
	requireReject(t, want, ErrInvalidPayload, `unknown field "Amount"`) // the first in byte order
	for range 50 {
		var c ChargeRequest
		require.Equal(t, want.Error(), Decode(body, &c).Error())
	}
}

// requireReject checks that err is a *RejectError matching the sentinel want
// (and no other rejection sentinel) whose message contains wantMsg.
func requireReject(t *testing.T, err error, want *RejectError, wantMsg string) {
	t.Helper()
	require.Error(t, err)
	var rej *RejectError
	require.ErrorAs(t, err, &rej)
	require.ErrorIs(t, err, want)
	for _, other := range []*RejectError{ErrInvalidKey, ErrInvalidPayload, ErrUnknownCommand, ErrPayloadTooLarge, ErrKeyReused, ErrDeadLettered} {
		if other != want {
			require.NotErrorIs(t, err, other)
		}
	}
	require.Contains(t, rej.Message, wantMsg)
	require.Contains(t, err.Error(), "rejected: "+want.Code+": ")
}

// otherKind has the same JSON fields as ChargeRequest under another kind,
// so its canonical form is identical: only the kind in the fingerprint
// differs.
type otherKind ChargeRequest

func (otherKind) Kind() string    { return "test.other" }
func (otherKind) Validate() error { return nil }

func TestFingerprint(t *testing.T) {
	t.Parallel()

	// decode decodes body as a command of kind: payment.charge, cart.add,
	// payment.refund, or otherKind (a charge under another kind).
	decode := func(t *testing.T, kind, body string) Command {
		t.Helper()
		switch kind {
		case KindCartAdd:
			var c CartAddRequest
			require.NoError(t, Decode([]byte(body), &c))
			return c
		case KindPaymentRefund:
			var c RefundRequest
			require.NoError(t, Decode([]byte(body), &c))
			return c
		default:
			var c ChargeRequest
			require.NoError(t, Decode([]byte(body), &c))
			if kind == (otherKind{}).Kind() {
				return otherKind(c)
			}
			return c
		}
	}
	const (
		charge = KindPaymentCharge
		cart   = KindCartAdd
		refund = KindPaymentRefund
		other  = "test.other"
		base   = `{"account_id":"acct_42","amount":1999,"currency":"EUR","description":"order 1001"}`
	)

	// The fingerprint is part of what is stored, and clients in other
	// languages compute it too: pin it. The canonical forms and digests
	// below were computed independently, with Python's
	// json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False),
	// which writes these flat objects exactly as RFC 8785 does.
	golden := map[string]struct {
		kind, body, canonical, fingerprint string
	}{
		"Charge": {charge, `{ "description": "order 1001", "currency": "EUR", "amount": 1999, "account_id": "acct_42" }`,
			base, "1a4b4750a5da821234e8dd6ad2e96c9948a6dcd010f45a3e986f74190d96b50e"},
		// v1 kept cart.add's fields in declaration order; v1.1 sorts them.
		"CartSorted": {cart, `{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2}`,
			`{"cart_id":"cart_7","quantity":2,"sku":"SKU-RED-M"}`, "ffbc350d0b60f4f5b97636de4fbb365048b1cc3252a2ade6a389fcc481d82610"},
		"Refund": {refund, `{"reason":"requested_by_customer","charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","amount":500}`,
			`{"amount":500,"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","reason":"requested_by_customer"}`,
			"986096e6488ee4642d421a27e697c5e1958fb2493d42acebaa9108699839d1ca"},
		// RFC 8785 escapes only '"', '\' and control characters: no HTML
		// escaping of <, > and & (which encoding/json would do), non-ASCII
		// and U+2028 as literal UTF-8, lower-case \u00xx.
		"Escapes": {charge, `{"account_id":"acct_42","amount":1,"currency":"EUR","description":"<b>&\"q\"\\ \n\t\u0001\u001F \u00e9 \ud83d\ude00 \u2028/"}`,
			"{\"account_id\":\"acct_42\",\"amount\":1,\"currency\":\"EUR\",\"description\":\"<b>&\\\"q\\\"\\\\ \\n\\t\\u0001\\u001f \u00e9 \U0001F600 \u2028/\"}",
			"f887d46cc4b040be4dac3e4b807e647bcd602a2afb4299b83bbcfea3e4cc742f"},
	}
	for name, g := range golden {
		t.Run("Golden"+name, func(t *testing.T) {
			t.Parallel()
			c := decode(t, g.kind, g.body)
			require.Equal(t, g.canonical, string(Canonical(c))) // pinned byte for byte: JSONEq would accept any field order
			require.Equal(t, g.fingerprint, Fingerprint(c))
			sum := sha256.Sum256([]byte(g.kind + "\n" + g.canonical))
			require.Equal(t, hex.EncodeToString(sum[:]), Fingerprint(c))
		})
	}

	tests := map[string]struct {
		kindA, bodyA string
		kindB, bodyB string
		same         bool
	}{
		"ReorderedFields": {
			charge, base,
			charge, `{"description":"order 1001","currency":"EUR","amount":1999,"account_id":"acct_42"}`, true,
		},
		"WhiteSpace": {
			charge, base,
			charge, "\n{ \"account_id\" : \"acct_42\",\n\t\"amount\": 1999 ,\"currency\":\"EUR\", \"description\":\"order 1001\" }\r\n", true,
		},
		"EscapedEqualStrings": {
			charge, base,
			charge, `{"account_id":"acct\u005f42","amount":1999,"currency":"EUR","description":"order\u00201001"}`, true,
		},
		"DescriptionAbsentEqualsEmpty": {
			charge, `{"account_id":"acct_42","amount":1999,"currency":"EUR"}`,
			charge, `{"account_id":"acct_42","amount":1999,"currency":"EUR","description":""}`, true,
		},
		"ReasonAbsentEqualsEmpty": {
			refund, `{"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","amount":5}`,
			refund, `{"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","amount":5,"reason":""}`, true,
		},
		"CartReordered": {
			cart, `{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2}`,
			cart, `{"quantity":2,"cart_id":"cart_7","sku":"SKU-RED-M"}`, true,
		},
		"DifferentAmount":            {charge, base, charge, chargeBody("amount", "2000"), false},
		"DifferentAccount":           {charge, base, charge, chargeBody("account_id", `"acct_43"`), false},
		"DifferentDescription":       {charge, base, charge, chargeBody("description", `"order 1002"`), false},
		"DescriptionAbsentVersusSet": {charge, chargeBody("description", ""), charge, base, false},
		"DifferentQuantity":          {cart, cartBody("", ""), cart, cartBody("quantity", "3"), false},
		"OtherKindSameFields":        {charge, base, other, base, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, b := decode(t, tt.kindA, tt.bodyA), decode(t, tt.kindB, tt.bodyB)
			if tt.same {
				require.Equal(t, string(Canonical(a)), string(Canonical(b)))
				require.Equal(t, Fingerprint(a), Fingerprint(b))
				return
			}
			require.NotEqual(t, Fingerprint(a), Fingerprint(b))
		})
	}

	t.Run("OtherKindSameCanonical", func(t *testing.T) {
		t.Parallel()
		// Guard OtherKindSameFields: it only proves that the kind is part of
		// the fingerprint if the canonical forms really are equal.
		a, b := decode(t, charge, base), decode(t, other, base)
		require.Equal(t, string(Canonical(a)), string(Canonical(b)))
	})

	t.Run("Stable", func(t *testing.T) {
		t.Parallel()
		fp := Fingerprint(decode(t, charge, base))
		require.Len(t, fp, 64)
		require.Equal(t, strings.ToLower(fp), fp)
		require.Equal(t, fp, Fingerprint(decode(t, charge, base)))
	})
}

func TestRejectError_Is(t *testing.T) {
	t.Parallel()

	err := error(&RejectError{Code: CodeKeyReused, Message: "key bound to another payload"})
	require.ErrorIs(t, err, ErrKeyReused)
	require.NotErrorIs(t, err, ErrInvalidPayload)
	require.NotErrorIs(t, err, errors.New(CodeKeyReused))
	require.Equal(t, "rejected: idempotency_key_reused: key bound to another payload", err.Error())
	require.Equal(t, "rejected: invalid_key", ErrInvalidKey.Error())

	wrapped := errors.Join(errors.New("publish"), err)
	require.ErrorIs(t, wrapped, ErrKeyReused)
}

// TestDecode_RepeatedName: a member name that appears twice is
// invalid_payload (contract v1.2), whatever its values and however it is
// escaped, on the fast path and the careful one alike; the same names once
// each are accepted.
func TestDecode_RepeatedName(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		body string
		dst  func() Command
		name string
	}{
		"Amount":          {`{"account_id":"acct_42","amount":1,"amount":5000,"currency":"EUR"}`, func() Command { return new(ChargeRequest) }, "amount"},
		"SameValue":       {`{"account_id":"acct_42","amount":1,"currency":"EUR","amount":1}`, func() Command { return new(ChargeRequest) }, "amount"},
		"Escaped":         {`{"account_id":"acct_42","amount":1,"\u0061mount":5000,"currency":"EUR"}`, func() Command { return new(ChargeRequest) }, "amount"},
		"NullDescription": {`{"account_id":"acct_42","amount":1,"currency":"EUR","description":"a","description":null}`, func() Command { return new(ChargeRequest) }, "description"},
		"Spaced":          {"{ \"cart_id\" : \"c\" , \"sku\":\"S\", \"quantity\" : 2 ,\n\"cart_id\":\"d\" }", func() Command { return new(CartAddRequest) }, "cart_id"},
		"Quantity":        {`{"cart_id":"c","sku":"S","quantity":1,"quantity":1000}`, func() Command { return new(CartAddRequest) }, "quantity"},
		"ChargeKey":       {`{"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f","amount":5,"charge_key":"0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6e"}`, func() Command { return new(RefundRequest) }, "charge_key"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := Decode([]byte(tt.body), tt.dst())
			requireReject(t, err, ErrInvalidPayload, `field "`+tt.name+`" appears more than once`)
			require.Equal(t, err.Error(), decodeSlow([]byte(tt.body), tt.dst()).Error(), "both paths")
		})
	}
	// Every name once: accepted by the fast path, which tracks what it saw.
	var c ChargeRequest
	body := []byte(`{"account_id":"acct_42","amount":1,"currency":"EUR","description":"d"}`)
	require.True(t, knownKeysOnly(body, fieldSet(&c)))
	require.NoError(t, Decode(body, &c))
	require.False(t, knownKeysOnly([]byte(`{"amount":1,"amount":1}`), fieldSet(&c)))
}
