package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// ValidKey reports whether key is a UUID in canonical form: 36 characters,
// lower-case hex, hyphens at positions 8, 13, 18 and 23. Any version is
// accepted, including the nil and max UUIDs of RFC 9562.
func ValidKey(key string) bool {
	if len(key) != 36 {
		return false
	}
	for i := range len(key) {
		c := key[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// Decode parses body strictly into dst and validates it. Every error is a
// *RejectError: CodePayloadTooLarge above MaxBodySize, CodeInvalidPayload for
// anything else (not UTF-8, not one JSON object, an unknown or mis-cased
// field, a member name that appears twice, a wrongly typed value, a number
// with a fraction or exponent, a rule of dst's Validate).
//
// A repeated member name is refused (contract v1.2; I-JSON, RFC 7493)
// because JSON parsers disagree on it: encoding/json keeps the last
// value, others the first, so a proxy in front of the workers could check
// {"amount":1,"amount":5000} as one charge while the workers run another.
func Decode(body []byte, dst Command) error {
	// The fast path decodes a well-formed body in one pass; anything it does
	// not accept gets the slow path, which names what is wrong.
	if len(body) <= MaxBodySize && utf8.Valid(body) && knownKeysOnly(body, fieldSet(dst)) &&
		json.Unmarshal(body, dst) == nil {
		return dst.Validate()
	}
	return decodeSlow(body, dst)
}

// decodeSlow is Decode's careful path: every check in turn, each with its
// own message.
func decodeSlow(body []byte, dst Command) error {
	if len(body) > MaxBodySize {
		return &RejectError{Code: CodePayloadTooLarge,
			Message: fmt.Sprintf("body is %d bytes; at most %d are accepted", len(body), MaxBodySize)}
	}
	if !utf8.Valid(body) {
		return invalidPayload("body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return invalidPayload("body must be one JSON object")
	}

	// encoding/json matches field names case-insensitively; the contract
	// does not, so check the exact names first.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return invalidPayload("body is not valid JSON: " + jsonReason(err))
	}
	// The map kept one value per name; the body may have had more.
	if name, ok := repeatedName(body); ok {
		return invalidPayload(fmt.Sprintf("field %q appears more than once", name))
	}
	allowed := fieldSet(dst)
	// Sorted, so that a body with several unknown fields always gets the
	// same message (map order would pick one at random).
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if _, ok := allowed[name]; !ok {
			return invalidPayload(fmt.Sprintf("unknown field %q", name))
		}
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return invalidPayload(jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidPayload("body must hold exactly one JSON object")
	}
	return dst.Validate()
}

// repeatedName returns the first top-level member name of body, a valid
// JSON object, that appears a second time, compared after unescaping
// ("amount" and "\u0061mount" are one name).
func repeatedName(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	seen := make(map[string]struct{}, 8)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		name, _ := tok.(string) // a member name is a string token
		if _, dup := seen[name]; dup {
			return name, true
		}
		seen[name] = struct{}{}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// jsonReason turns an encoding/json error into a message that names the field
// and says what was wrong, without Go type names.
func jsonReason(err error) string {
	if typeErr, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		var want string
		switch typeErr.Type.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32:
			want = "an integer (no fraction, no exponent)"
		default:
			want = "a string"
		}
		if typeErr.Field == "" {
			return "body must be one JSON object"
		}
		return fmt.Sprintf("%s must be %s, got %s", typeErr.Field, want, typeErr.Value)
	}
	if syntaxErr, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("invalid JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error())
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

var fieldSets sync.Map // reflect.Type -> map[string]struct{}

// fieldSet returns the JSON names of the struct behind c, computed once per
// type.
func fieldSet(c Command) map[string]struct{} {
	t := reflect.TypeOf(c)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if names, ok := fieldSets.Load(t); ok {
		return names.(map[string]struct{}) //nolint:errcheck,forcetypeassert // only this function stores
	}
	names := make(map[string]struct{}, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = struct{}{}
		}
	}
	fieldSets.Store(t, names)
	return names
}

// knownKeysOnly reports whether body is one JSON object, with nothing but
// white space after it, whose top-level member names are all in allowed,
// written without escapes, and each there once. It allocates nothing; it
// does not check the values (json.Unmarshal does). False sends the body to
// the slow path.
func knownKeysOnly(body []byte, allowed map[string]struct{}) bool {
	// The names seen so far, as offsets into body. Every name is one of
	// allowed's few, so more members than that means a repeated one.
	var seen [8][2]int
	n := 0
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return skipSpace(body, i+1) == len(body)
	}
	for {
		// A member name, without escapes.
		if i >= len(body) || body[i] != '"' {
			return false
		}
		start := i + 1
		end := start
		for end < len(body) && body[end] != '"' {
			if body[end] == '\\' {
				return false
			}
			end++
		}
		if end >= len(body) {
			return false
		}
		if _, ok := allowed[string(body[start:end])]; !ok { // no allocation: the compiler looks the bytes up
			return false
		}
		if n == len(seen) {
			return false
		}
		for _, s := range seen[:n] {
			if bytes.Equal(body[s[0]:s[1]], body[start:end]) {
				return false
			}
		}
		seen[n] = [2]int{start, end}
		n++
		i = skipSpace(body, end+1)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		if i = skipValue(body, skipSpace(body, i+1)); i < 0 {
			return false
		}
		i = skipSpace(body, i)
		switch {
		case i >= len(body):
			return false
		case body[i] == ',':
			i = skipSpace(body, i+1)
		case body[i] == '}':
			return skipSpace(body, i+1) == len(body)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value at b[i:], or -1.
// It balances brackets and skips strings; the value's own validity is
// json.Unmarshal's to check.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; {
		case c == '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++ // the escaped character
				}
			}
			if i >= len(b) {
				return -1
			}
			i++ // the closing quote
			if depth == 0 {
				return i
			}
		case c == '{' || c == '[':
			depth++
			i++
		case c == '}' || c == ']':
			if depth == 0 {
				return i // the enclosing object ends here
			}
			depth--
			i++
			if depth == 0 {
				return i
			}
		case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return i // the end of a number or literal
		default:
			i++
		}
	}
	if depth != 0 {
		return -1
	}
	return i
}
