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
// field, a wrongly typed value, a number with a fraction or exponent, a rule
// of dst's Validate).
func Decode(body []byte, dst Command) error {
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
	allowed := jsonFields(dst)
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

// jsonFields returns the JSON names of the struct behind c.
func jsonFields(c Command) map[string]struct{} {
	t := reflect.TypeOf(c)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := make(map[string]struct{}, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = struct{}{}
		}
	}
	return names
}
