// Package deploy holds what an operator deploys beside the binaries: the
// NATS and Redis configurations of the compose file, a Grafana dashboard
// (grafana/idempay.json) and example Prometheus alerting rules
// (prometheus/alerts.yml). Its test keeps the last two in step with the
// metrics the code exports.
package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// metricSources are the files that name the metrics idempay exports.
var metricSources = []string{
	"../pkg/processor/metrics.go",
	"../pkg/ops/instrument.go",
	"../pkg/gateway/metrics.go",
}

var metricName = regexp.MustCompile(`\bidempay_[a-z_]+`)

// exported returns the idempay_ metric names the code registers.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range metricSources {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(idempay_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in %v: has the code moved?", len(names), metricSources)
	}
	return names
}

// checkExpr fails for an idempay_ metric in expr that the code does not
// export (histograms are queried by their _bucket, _sum and _count series).
func checkExpr(t *testing.T, where, expr string, names map[string]bool, used map[string]bool) {
	t.Helper()
	for _, n := range metricName.FindAllString(expr, -1) {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(n, suffix) && names[strings.TrimSuffix(n, suffix)] {
				base = strings.TrimSuffix(n, suffix)
			}
		}
		if !names[base] {
			t.Errorf("%s: %s is not a metric idempay exports", where, n)
		}
		used[base] = true
	}
}

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

func TestAlerts_UseExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	raw, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	used := map[string]bool{}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: wants alert, expr, a severity label and a summary", r.Alert)
			}
			alerts[r.Alert] = true
			checkExpr(t, "alert "+r.Alert, r.Expr, names, used)
		}
	}
	// The three: a dead letter, a refused fenced commit, pending growing.
	for _, want := range []string{"IdempayDeadLetter", "IdempayOutcomeUnknown", "IdempayFencedCommitRefused", "IdempayPendingGrowing"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
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
