package messages

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Canonical returns the canonical JSON of a validated command, as RFC 8785
// (the JSON Canonicalization Scheme) defines it for the flat objects of the
// contract: members sorted by name, no white space, strings escaped as
// ECMAScript's JSON.stringify does (only '"', '\' and control characters;
// everything else as literal UTF-8), integers in decimal. Optional fields
// (those tagged omitempty) that are empty are left out, so an absent
// description and an empty one are the same command.
//
// A command is a struct of string and integer fields with json tags; any
// other field type panics, which the tests of each command type catch.
func Canonical(c Command) []byte {
	return appendCanonical(make([]byte, 0, 128), c)
}

// Fingerprint returns the payload fingerprint of a validated command: the
// lower-case hex SHA-256 of its kind, a newline, and Canonical. Field order
// and white space in what the client sent do not change it, and a client in
// any language computes the same value (contract v1.1).
func Fingerprint(c Command) string {
	buf := make([]byte, 0, 160)
	buf = append(buf, c.Kind()...)
	buf = append(buf, '\n')
	buf = appendCanonical(buf, c)
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

// canonField is one member of a command's canonical form.
type canonField struct {
	name      string // the JSON name, already encoded as a JSON string
	index     int
	kind      reflect.Kind
	omitEmpty bool
}

var canonFields sync.Map // reflect.Type -> []canonField, sorted by name

func fieldsOf(t reflect.Type) []canonField {
	if f, ok := canonFields.Load(t); ok {
		return f.([]canonField) //nolint:errcheck,forcetypeassert // only this function stores
	}
	var fields []canonField
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		switch k := sf.Type.Kind(); k {
		case reflect.String, reflect.Int, reflect.Int64, reflect.Int32:
			fields = append(fields, canonField{name: string(appendJSONString(nil, name)), index: i, kind: k,
				omitEmpty: slices.Contains(strings.Split(opts, ","), "omitempty")})
		default:
			panic("messages: canonical form: field " + t.Name() + "." + sf.Name + " is neither a string nor an integer")
		}
	}
	// RFC 8785 sorts by UTF-16 code units; the contract's names are ASCII,
	// where that is byte order.
	slices.SortFunc(fields, func(a, b canonField) int { return strings.Compare(a.name, b.name) })
	canonFields.Store(t, fields)
	return fields
}

func appendCanonical(buf []byte, c Command) []byte {
	v := reflect.ValueOf(c)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	buf = append(buf, '{')
	first := true
	for _, f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		if f.omitEmpty && fv.IsZero() {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, f.name...)
		buf = append(buf, ':')
		if f.kind == reflect.String {
			buf = appendJSONString(buf, fv.String())
		} else {
			buf = strconv.AppendInt(buf, fv.Int(), 10)
		}
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string the way RFC 8785 (ECMAScript
// JSON.stringify) writes it: '"' and '\' escaped, the control characters
// U+0000-U+001F as \b \t \n \f \r or \u00xx in lower-case hex, and every
// other character as itself. Invalid UTF-8 (never in a decoded command) is
// written as U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			buf = utf8.AppendRune(buf, r)
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c == '\b':
			buf = append(buf, '\\', 'b')
		case c == '\t':
			buf = append(buf, '\\', 't')
		case c == '\n':
			buf = append(buf, '\\', 'n')
		case c == '\f':
			buf = append(buf, '\\', 'f')
		case c == '\r':
			buf = append(buf, '\\', 'r')
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			buf = append(buf, c)
		}
		i++
	}
	return append(buf, '"')
}
