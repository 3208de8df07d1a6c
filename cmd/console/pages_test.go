package main

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// login logs c in as the operator and returns the session's CSRF token.
func login(t *testing.T, c *http.Client, p *consoleProc, operator string) string {
	t.Helper()
	code, _, _ := do(t, c, http.MethodPost, p.url+"/login", url.Values{"credential": {operator}, "next": {"/"}})
	require.Equal(t, http.StatusSeeOther, code)
	_, body, _ := do(t, c, http.MethodGet, p.url+"/audit", nil)
	m := csrfField.FindStringSubmatch(body)
	require.NotNil(t, m)
	return m[1]
}

// TestConsole_Evict evicts a completed record through the console's
// pages: the confirmation says what it means; a post without the box
// ticked, or for a record that changed since it was shown, evicts
// nothing; the eviction is in the audit log with the operator's name and
// what the record held; a dead-lettered key's page refuses it.
func TestConsole_Evict(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	keys, operator, _ := operatorKeys(t)
	p := startConsole(t, env, "CONSOLE_API_KEYS_FILE="+keys)
	c := browser(t)
	csrf := login(t, c, p, operator)
	key := client.NewKey()
	_, err := env.MustClient(t, nil).Charge(context.Background(), key, messages.ChargeRequest{AccountID: "acct_evict", Amount: 100, Currency: "EUR"})
	require.NoError(t, err)

	code, body, _ := do(t, c, http.MethodGet, p.url+"/keys/"+key+"/evict", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "RUNS THE OPERATION AGAIN")
	evict := func(form url.Values) (int, string) {
		form.Set("csrf", csrf)
		code, body, _ := do(t, c, http.MethodPost, p.url+"/keys/"+key+"/evict", form)
		return code, body
	}
	code, body = evict(url.Values{"state": {"completed"}, "tries": {"0"}})
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = evict(url.Values{"state": {"idle"}, "tries": {"1"}, "understood": {"1"}})
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, body, "changed since it was shown")
	code, body = evict(url.Values{"state": {"completed"}, "tries": {"0"}, "understood": {"1"}})
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "Evicted the completed record")
	_, body, _ = do(t, c, http.MethodGet, p.url+"/audit", nil)
	require.Contains(t, body, "console:ops (api key)")
	require.Contains(t, body, "state=completed")
	code, body = evict(url.Values{"state": {"completed"}, "tries": {"0"}, "understood": {"1"}})
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, body, "no record")

	// A dead-unknown key waiting for the provider: on the unknown page,
	// and not evictable.
	store, err := dedupe.New(env.RDB, &dedupe.Config{Namespace: env.Config.KeyPrefix})
	require.NoError(t, err)
	unknown := client.NewKey()
	lease, _, err := store.AcquireBegin(context.Background(), unknown, dedupe.Try{Kind: messages.KindPaymentCharge,
		Fingerprint: "f", Published: time.Now(), MaxTries: 1})
	require.NoError(t, err)
	require.NoError(t, store.Schedule(context.Background(), unknown, time.Now().Add(time.Hour)))
	_, err = store.DeadLetter(context.Background(), lease, dedupe.DeadLetter{Published: time.Now(), Effect: dedupe.EffectUnknown,
		Body: []byte(`{}`), Kind: messages.KindPaymentCharge, Fingerprint: "f"})
	require.NoError(t, err)
	code, body, _ = do(t, c, http.MethodGet, p.url+"/unknown", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "On the resolution schedule: 1")
	require.Contains(t, body, unknown)
	require.Contains(t, body, "waiting: the provider has not answered yet")
	_, body, _ = do(t, c, http.MethodGet, p.url+"/keys/"+unknown+"/evict", nil)
	require.Contains(t, body, "Not evictable: the key is dead-lettered")
	_, body, _ = do(t, c, http.MethodGet, p.url+"/keys/"+unknown, nil)
	require.Contains(t, body, "the resolver asks the provider")
	require.Contains(t, body, "dead, outcome unknown")
}
