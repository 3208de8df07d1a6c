package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// APIKeys authenticates callers by API key (GATEWAY_AUTH=apikeys): the
// caller sends Authorization: Bearer <secret>, and the gateway compares
// the secret's SHA-256 with those of the file GATEWAY_API_KEYS_FILE, one
// tenant per line:
//
//	# tenant_id  sha256 hex of the secret                                 limits (optional)
//	acme         5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 rate=50 burst=100 concurrency=20
//	acme         0b14d501a594442a01c6859541bcb3e8164d183d32937b851835442f69d5c94e
//	globex       6cf615d5bcaac778352a8f1f3360d23f02f34ec182e259897fd6ce485d7870d4
//	ops          9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 role=operator
//
// A tenant may have several lines, one per secret (to rotate a secret:
// add the new line, reload, retire the old one); its limits and role are
// those of its lines, which must agree. role=<name> gives the tenant's
// callers that role (Caller.Roles): role=operator admits them to the
// operators' console; the gateway gives a role no power. '#' starts a comment. The file holds no
// secret in clear, and the comparison takes the same time whichever
// entry, if any, matches: every entry is compared, in constant time.
// Reload reads the file again (the gateway does on SIGHUP); a file with
// an error keeps the keys loaded before.
type APIKeys struct {
	path string

	mu      sync.RWMutex
	entries []apiKey
	tenants []string // sorted, one per tenant
}

type apiKey struct {
	tenant string
	hash   [sha256.Size]byte
	limits Limits
	role   string // "" for none
}

// LoadAPIKeys reads the API-key file at path. Its errors name the file
// and the line.
func LoadAPIKeys(path string) (*APIKeys, error) {
	a := &APIKeys{path: path}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload reads the file again and, if it is valid, serves its keys from
// now on; otherwise it returns why and keeps the keys it had.
func (a *APIKeys) Reload() error {
	f, err := os.Open(a.path)
	if err != nil {
		return fmt.Errorf("gateway: API keys: %w", err)
	}
	defer f.Close()
	entries, err := parseAPIKeys(f)
	if err != nil {
		return fmt.Errorf("gateway: API keys %s: %w", a.path, err)
	}
	tenants := make([]string, 0, len(entries))
	for _, e := range entries {
		tenants = append(tenants, e.tenant)
	}
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	a.mu.Lock()
	a.entries, a.tenants = entries, tenants
	a.mu.Unlock()
	return nil
}

// Tenants returns the tenants of the file, sorted.
func (a *APIKeys) Tenants() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Clone(a.tenants)
}

// Path returns the file's path.
func (a *APIKeys) Path() string { return a.path }

// parseAPIKeys reads an API-key file (see APIKeys). Its errors name the
// line.
func parseAPIKeys(r io.Reader) ([]apiKey, error) {
	var entries []apiKey
	byTenant := map[string]apiKey{} // the tenant's first line, for its limits and role
	byHash := map[[sha256.Size]byte]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		e, err := parseAPIKeyLine(fields)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if other, dup := byHash[e.hash]; dup {
			return nil, fmt.Errorf("line %d: this secret's hash is already on a line of tenant %q: one secret, one tenant", n, other)
		}
		byHash[e.hash] = e.tenant
		if first, seen := byTenant[e.tenant]; seen && first.limits != e.limits {
			return nil, fmt.Errorf("line %d: tenant %q has other limits on an earlier line; give every line of a tenant the same", n, e.tenant)
		} else if seen && first.role != e.role {
			return nil, fmt.Errorf("line %d: tenant %q has another role on an earlier line; give every line of a tenant the same", n, e.tenant)
		} else if !seen {
			byTenant[e.tenant] = e
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return entries, nil
}

func parseAPIKeyLine(fields []string) (apiKey, error) {
	var e apiKey
	if len(fields) < 2 {
		return e, errors.New("want <tenant_id> <sha256 hex of the secret> [rate=<per second>] [burst=<n>] [concurrency=<n>] [role=<name>]")
	}
	e.tenant = fields[0]
	if !validTenant(e.tenant) {
		return e, fmt.Errorf("tenant %q: want 1-64 characters of [A-Za-z0-9_.-]", truncate(e.tenant, 80))
	}
	h, err := hex.DecodeString(fields[1])
	if err != nil || len(h) != sha256.Size {
		return e, fmt.Errorf("tenant %s: the second field must be the SHA-256 of the secret, 64 hex digits (e.g. printf %%s \"$SECRET\" | sha256sum), not the secret", e.tenant)
	}
	copy(e.hash[:], h)
	for _, opt := range fields[2:] {
		name, value, ok := strings.Cut(opt, "=")
		if !ok {
			return e, fmt.Errorf("tenant %s: %q: want name=value (rate, burst, concurrency, role)", e.tenant, truncate(opt, 40))
		}
		switch name {
		case "role":
			if !validTenant(value) { // the same alphabet: 1-64 of [A-Za-z0-9_.-]
				return e, fmt.Errorf("tenant %s: role=%s: want 1-64 characters of [A-Za-z0-9_.-], e.g. role=operator", e.tenant, truncate(value, 40))
			}
			e.role = value
		case "rate":
			f, err := strconv.ParseFloat(value, 64)
			if err != nil || !(f > 0) || f > 1e9 {
				return e, fmt.Errorf("tenant %s: rate=%s: want requests per second, above 0", e.tenant, truncate(value, 40))
			}
			e.limits.Rate = f
		case "burst", "concurrency":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > 1e9 {
				return e, fmt.Errorf("tenant %s: %s=%s: want a whole number, at least 1", e.tenant, name, truncate(value, 40))
			}
			if name == "burst" {
				e.limits.Burst = n
			} else {
				e.limits.Concurrency = n
			}
		default:
			return e, fmt.Errorf("tenant %s: unknown option %q (rate, burst, concurrency, role)", e.tenant, truncate(name, 40))
		}
	}
	return e, nil
}

// Authenticate implements Authenticator. A secret that matches no entry
// is errNotMine when it may be a JWT (Chain then asks the JWT method),
// else unauthenticated.
func (a *APIKeys) Authenticate(r *http.Request) (*Caller, error) {
	cred, err := bearer(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(cred))
	a.mu.RLock()
	defer a.mu.RUnlock()
	match := -1
	for i := range a.entries {
		// Every entry, in constant time: how long this takes says nothing
		// about which entry matched, or how close a guess came.
		if subtle.ConstantTimeCompare(sum[:], a.entries[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		if looksLikeJWT(cred) {
			return nil, errNotMine
		}
		return nil, unauthenticated(reasonUnknown, "unknown API key", nil)
	}
	e := a.entries[match]
	c := &Caller{Tenant: e.tenant, Method: MethodAPIKeys, Limits: e.limits, scoped: true, label: e.tenant}
	if e.role != "" {
		c.Roles = []string{e.role}
	}
	return c, nil
}

// looksLikeJWT reports whether cred has a JWS compact serialization's
// shape: three base64url parts.
func looksLikeJWT(cred string) bool {
	return bytes.Count([]byte(cred), []byte{'.'}) == 2
}

// HashAPIKey returns the line of an API-key file for tenant and secret:
// what an operator adds to hand the secret to the tenant.
func HashAPIKey(tenant, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return tenant + " " + hex.EncodeToString(sum[:])
}

// ReloadOnSIGHUP reloads keys from their file on every SIGHUP until ctx is
// done: a file that does not load is logged and the keys loaded before
// stay in force. With no keys (nil: no API-key authentication) a SIGHUP is
// logged and ignored, rather than ending the process. The gateway and the
// console serve it alike.
func ReloadOnSIGHUP(ctx context.Context, keys *APIKeys, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if keys == nil {
					log.Info("SIGHUP: no API-key file to reload")
					continue
				}
				if err := keys.Reload(); err != nil {
					log.Error("SIGHUP: API keys not reloaded; the keys loaded before stay in force", "error", err)
					continue
				}
				log.Info("SIGHUP: API keys reloaded", "file", keys.Path(), "tenants", len(keys.Tenants()))
			}
		}
	}()
}
