// Package deploy holds what an operator deploys beside the binaries: the
// NATS and Redis configurations of the compose file, a Grafana dashboard
// (grafana/idempay.json) and Prometheus alerting rules
// (prometheus/alerts.yml, with their unit tests in
// prometheus/alerts_test.yml). Its tests keep the last two in step with
// the metrics and labels the programs register, and run promtool on the
// rules.
package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// exported returns the idempay_ metrics the programs register, with
// their label names: the registries of a worker (the engine's metrics,
// its consumer's, the instrumented provider's), of a gateway and of
// idempay_build_info, built as the programs build them and asked for
// their descriptors, so that no series has to exist yet.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	env, err := testenv.Shared()
	require.NoError(t, err)
	nc, err := testenv.ConnectNATS(env.NATSURL, t.Name())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: nothing here does I/O
	t.Cleanup(func() { _ = rdb.Close() })

	reg := telemetry.NewRegistry()
	reg.MustRegister(telemetry.BuildInfo("test"))
	metrics, err := processor.NewMetrics(reg)
	require.NoError(t, err)
	provider, err := sim.New(rdb, &sim.Config{})
	require.NoError(t, err)
	instrumented, err := ops.Instrument(provider, reg, nil)
	require.NoError(t, err)
	mux := processor.NewMux()
	ops.Register(mux, instrumented, "")
	p, err := processor.New(nc, rdb, mux, &processor.Config{Metrics: metrics})
	require.NoError(t, err)
	reg.MustRegister(p.ConsumerCollector())
	_, err = gateway.New(nc, &gateway.Config{Auth: gateway.NoAuth(), Registry: reg})
	require.NoError(t, err)

	descs := make(chan *prometheus.Desc, 256)
	go func() { reg.Describe(descs); close(descs) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	labels := regexp.MustCompile(`(?:variableLabels|constLabels): \{([^}]*)\}`)
	out := map[string]map[string]bool{}
	for d := range descs {
		m := fqName.FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		if !strings.HasPrefix(m[1], "idempay_") {
			continue
		}
		ls := map[string]bool{}
		for _, l := range labels.FindAllStringSubmatch(d.String(), -1) {
			for name := range strings.SplitSeq(l[1], ",") {
				name, _, _ = strings.Cut(strings.TrimSpace(name), "=")
				if name != "" {
					ls[name] = true
				}
			}
		}
		out[m[1]] = ls
	}
	if len(out) < 20 {
		t.Fatalf("found only %d idempay_ metrics in the programs' registries: %v", len(out), out)
	}
	return out
}

var (
	metricName = regexp.MustCompile(`\bidempay_[a-z_]+`)
	// matcher is a label matcher inside {...}: name="...", name=~"...", ...
	matcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	// grouping is a by (...) or without (...) clause.
	grouping = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	braces   = regexp.MustCompile(`\{[^}]*\}`)
)

// labelsEverywhere are labels every series has or that queries add:
// Prometheus' target labels and a histogram's bucket bound.
var labelsEverywhere = map[string]bool{"instance": true, "job": true, "le": true}

// checkExpr fails for an idempay_ metric in expr that the programs do not
// export (histograms are queried by their _bucket, _sum and _count
// series), and for a label the expression matches or groups by that none
// of its metrics has.
func checkExpr(t *testing.T, where, expr string, names map[string]map[string]bool, used map[string]bool) {
	t.Helper()
	have := map[string]bool{}
	for _, n := range metricName.FindAllString(expr, -1) {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(n, suffix) && names[strings.TrimSuffix(n, suffix)] != nil {
				base = strings.TrimSuffix(n, suffix)
			}
		}
		if names[base] == nil {
			t.Errorf("%s: %s is not a metric idempay exports", where, n)
			continue
		}
		used[base] = true
		for l := range names[base] {
			have[l] = true
		}
	}
	var labels []string
	for _, b := range braces.FindAllString(expr, -1) {
		for _, m := range matcher.FindAllStringSubmatch(b, -1) {
			labels = append(labels, m[1])
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	for _, l := range labels {
		if !have[l] && !labelsEverywhere[l] && len(have) > 0 {
			t.Errorf("%s: no metric of %q has the label %q", where, expr, l)
		}
	}
}

// TestDashboard_QueriesExportedMetrics: every query of the Grafana
// dashboard names metrics and labels the programs export, and every
// idempay_ metric is on some panel.
func TestDashboard_QueriesExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	raw, err := os.ReadFile("grafana/idempay.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana/idempay.json: %v", err)
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkExpr(t, "panel "+p.Title, tg.Expr, names, used)
		}
	}
	for n := range names {
		if !used[n] {
			t.Errorf("the dashboard shows nothing of %s", n)
		}
	}
}

// alertRules reads prometheus/alerts.yml.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	raw, err := os.ReadFile("prometheus/alerts.yml")
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules), "prometheus/alerts.yml")
	var out []alertRule
	for _, g := range rules.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// TestAlerts_UseExportedMetrics: every alert names metrics and labels the
// programs export, has a severity and a summary, and the alerts the
// operators' issues asked for are there.
func TestAlerts_UseExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	used := map[string]bool{}
	alerts := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("rule %q: wants alert, expr, a severity label and a summary", r.Alert)
		}
		alerts[r.Alert] = true
		checkExpr(t, "alert "+r.Alert, r.Expr, names, used)
	}
	for _, want := range []string{
		"IdempayDeadLetter", "IdempayOutcomeUnknown", "IdempayFencedCommitRefused", "IdempayPendingGrowing", // issue 12
		"IdempayUnknownOutcomesWaiting", "IdempayResolutionUnresolved", "IdempayRedeliveryStorm", "IdempayLatencyP99", // issue 18
	} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// promtoolInCI reports whether .ci/run installs promtool: the rules test
// then fails without it, as the browser test fails without chromium;
// otherwise it skips, saying how to get it.
func promtoolInCI(t *testing.T) bool {
	t.Helper()
	ci, err := os.ReadFile("../.ci/run")
	require.NoError(t, err)
	return strings.Contains(string(ci), "promtool")
}

// TestAlerts_Promtool checks the rules with Prometheus' own promtool
// (Debian's package prometheus): they parse and their expressions are
// valid PromQL (promtool check rules), and the unit tests of
// prometheus/alerts_test.yml, series given and alerts expected, pass
// (promtool test rules).
func TestAlerts_Promtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool not found: install Debian's package (sudo apt-get install -y prometheus)"
		if promtoolInCI(t) {
			t.Fatal(msg + "; .ci/run installs it")
		}
		t.Skip(msg + "; skipped, since .ci/run does not install it yet")
	}
	for _, args := range [][]string{{"check", "rules", "prometheus/alerts.yml"}, {"test", "rules", "prometheus/alerts_test.yml"}} {
		out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// composeFile is what the tests read of docker-compose.yml.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Networks    []string          `yaml:"networks"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Build *struct {
			Context string            `yaml:"context"`
			Args    map[string]string `yaml:"args"`
		} `yaml:"build"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// required is Compose's ${NAME:?message}: no default, an error when unset.
var required = regexp.MustCompile(`^\$\{([A-Z_]+):\?[^}]+\}$`)

// TestCompose_NATSUsers: every password deploy/nats.conf reads from the
// environment is given to the nats service without a default (an unset
// one stops docker compose, and nats.conf's own "an unset variable stops
// the server" holds), and each program connects as a user of nats.conf
// with that user's variable and its own inbox prefix, which nats.conf
// lets that user alone subscribe to.
func TestCompose_NATSUsers(t *testing.T) {
	t.Parallel()
	conf, err := os.ReadFile("nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{} // user -> password variable
	for _, m := range regexp.MustCompile(`user: (\w+), password: \$(\w+)`).FindAllStringSubmatch(string(conf), -1) {
		users[m[1]] = m[2]
	}
	for _, want := range []string{"worker", "producer", "gateway", "operator"} {
		if users[want] == "" {
			t.Fatalf("nats.conf has no user %s with a password from the environment (found %v)", want, users)
		}
	}
	c := readCompose(t)
	for _, v := range users {
		if m := required.FindStringSubmatch(c.Services["nats"].Environment[v]); m == nil || m[1] != v {
			t.Errorf("the nats service sets %s to %q, want ${%s:?...} (no default)", v, c.Services["nats"].Environment[v], v)
		}
	}
	for svc, user := range map[string]string{"worker": "worker", "gateway": "gateway", "producer": "producer"} {
		env := c.Services[svc].Environment
		if env["NATS_USER"] != user {
			t.Errorf("%s: NATS_USER is %q, want %q", svc, env["NATS_USER"], user)
		}
		if m := required.FindStringSubmatch(env["NATS_PASSWORD"]); m == nil || m[1] != users[user] {
			t.Errorf("%s: NATS_PASSWORD is %q, want ${%s:?...}", svc, env["NATS_PASSWORD"], users[user])
		}
		prefix := "_INBOX_" + user
		if env["NATS_INBOX_PREFIX"] != prefix {
			t.Errorf("%s: NATS_INBOX_PREFIX is %q, want %q", svc, env["NATS_INBOX_PREFIX"], prefix)
		}
		if !strings.Contains(string(conf), `subscribe: { allow: [`) || !regexp.MustCompile(`subscribe: \{ allow: \[[^\]]*"`+prefix+`\.>"`).Match(conf) {
			t.Errorf("nats.conf does not let %s subscribe to %s.>", user, prefix)
		}
	}
	for _, m := range regexp.MustCompile(`subscribe: \{ allow: \[([^\]]*)\]`).FindAllStringSubmatch(string(conf), -1) {
		if strings.Contains(m[1], `"_INBOX.>"`) || strings.Contains(m[1], `"_INBOX_*`) || strings.Contains(m[1], `">"`) {
			t.Errorf("nats.conf lets a role subscribe to every inbox: %s", m[1])
		}
	}
	if strings.Contains(string(conf), `"$JS.API.STREAM.MSG.GET.>"`) || strings.Contains(string(conf), `"$JS.API.DIRECT.GET.>"`) {
		t.Error("nats.conf lets a role read every stream's messages")
	}
}

// TestCompose_Redis: Redis takes its users' passwords from the environment
// without defaults; the workers and the producer connect as their ACL
// users; the gateway has no Redis settings and is on no network Redis is
// on; redis.conf no longer turns protected mode off.
func TestCompose_Redis(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	redisSvc := c.Services["redis"]
	for _, v := range []string{"IDEMPAY_REDIS_WORKER_PASSWORD", "IDEMPAY_REDIS_PRODUCER_PASSWORD", "IDEMPAY_REDIS_OPERATOR_PASSWORD"} {
		if m := required.FindStringSubmatch(redisSvc.Environment[v]); m == nil || m[1] != v {
			t.Errorf("redis: %s is %q, want ${%s:?...}", v, redisSvc.Environment[v], v)
		}
	}
	if strings.Join(redisSvc.Entrypoint, " ") != "sh /usr/local/etc/redis/redis-users.sh" {
		t.Errorf("redis: entrypoint %q, want deploy/redis-users.sh", redisSvc.Entrypoint)
	}
	for svc, user := range map[string]string{"worker": "worker", "producer": "producer"} {
		env := c.Services[svc].Environment
		if env["REDIS_USER"] != user {
			t.Errorf("%s: REDIS_USER %q, want %q", svc, env["REDIS_USER"], user)
		}
		if m := required.FindStringSubmatch(env["REDIS_PASSWORD"]); m == nil || m[1] != "IDEMPAY_REDIS_"+strings.ToUpper(user)+"_PASSWORD" {
			t.Errorf("%s: REDIS_PASSWORD %q", svc, env["REDIS_PASSWORD"])
		}
	}
	gw := c.Services["gateway"]
	for k := range gw.Environment {
		if strings.HasPrefix(k, "REDIS") {
			t.Errorf("gateway: %s: the gateway never talks to Redis", k)
		}
	}
	if len(gw.Networks) == 0 || len(redisSvc.Networks) == 0 {
		t.Fatalf("gateway %v and redis %v must name their networks", gw.Networks, redisSvc.Networks)
	}
	for _, n := range gw.Networks {
		if slices.Contains(redisSvc.Networks, n) {
			t.Errorf("the gateway shares network %q with Redis", n)
		}
	}
	conf, err := os.ReadFile("redis.conf")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^protected-mode no`).Match(conf) {
		t.Error("redis.conf turns protected mode off")
	}
}

// TestSecretsStayHome: .env, which make env fills with the stack's
// passwords, and .idempay/ (the API-key file) are neither committed nor
// sent to the image's build context (COPY . .).
func TestSecretsStayHome(t *testing.T) {
	t.Parallel()
	for file, wants := range map[string][]string{"../.gitignore": {".env", "/.idempay/"}, "../.dockerignore": {".env", ".idempay"}} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(raw), "\n")
		for _, w := range wants {
			if !slices.Contains(lines, w) {
				t.Errorf("%s does not list %s", file, w)
			}
		}
	}
	raw, err := os.ReadFile("make-env.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "umask 077") {
		t.Error("make-env.sh must write .env for its owner only")
	}
}

// TestCompose_HealthChecks: the worker and the gateway serve their
// endpoints on METRICS_ADDR and their health checks are the programs' own
// --healthcheck (the distroless image has no curl or wget), which reads
// that same variable.
func TestCompose_HealthChecks(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	for _, svc := range []string{"worker", "gateway"} {
		s := c.Services[svc]
		if s.Environment["METRICS_ADDR"] == "" {
			t.Errorf("%s: no METRICS_ADDR", svc)
		}
		if s.Healthcheck == nil {
			t.Errorf("%s: no health check", svc)
			continue
		}
		if want := []string{"CMD", "/usr/local/bin/" + svc, "--healthcheck"}; strings.Join(s.Healthcheck.Test, " ") != strings.Join(want, " ") {
			t.Errorf("%s: health check %q, want %q", svc, s.Healthcheck.Test, want)
		}
	}
}

// TestDockerfile_StampsVersion: the image's programs print the version
// they were built from, as make build's do: the Dockerfile takes a VERSION
// build argument into the same -X flag, and compose passes it.
func TestDockerfile_StampsVersion(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	const stamp = "-X github.com/idempay/idempay/internal/cli.Version="
	if !strings.Contains(string(mk), stamp+"$(VERSION)") {
		t.Fatalf("the Makefile no longer stamps %s$(VERSION): has the variable moved?", stamp)
	}
	for _, want := range []string{"ARG VERSION=", stamp + "${VERSION}"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
	c := readCompose(t)
	for _, svc := range []string{"worker", "gateway", "producer"} {
		if b := c.Services[svc].Build; b == nil || b.Args["VERSION"] != "${VERSION:-dev}" {
			t.Errorf("%s: the build does not pass VERSION", svc)
		}
	}
}
