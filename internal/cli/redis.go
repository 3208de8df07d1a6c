package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisURLDefault is --redis-url's default, a kong variable
// (${redis_url_default}) so that a program can start without one: the
// demo starts its own redis-server when REDIS_URL is unset.
const RedisURLDefault = "redis://127.0.0.1:6379"

// RedisFlags are the flags of a Redis connection, shared by every program
// that connects to Redis. The URL is in go-redis's own forms, and its form
// chooses the client:
//
//	redis://[user:password@]host:port[/db]     one server (rediss:// for TLS)
//	redis://host1:port?addr=host2:port&addr=host3:port
//	                                           a Redis Cluster (redis.ParseClusterURL)
//	redis://[user:password@]sentinel1:26379?master_name=NAME&addr=sentinel2:26379
//	                                           the master that Sentinel names (redis.ParseFailoverURL)
//
// A one-server URL whose server turns out to be a cluster node is used as
// the cluster's seed. In the Sentinel form, user:password@ are the
// sentinels' own credentials (go-redis's reading); the master's come from
// --redis-user and --redis-password. Secrets come from the flags, their
// variables or a file, and never reach an error or a log: errors name the
// servers with passwords masked.
type RedisFlags struct {
	RedisURL string `name:"redis-url" env:"REDIS_URL" default:"${redis_url_default}" help:"Redis, in go-redis's URL forms: redis://[user:password@]host:port[/db] (rediss:// for TLS) for one server; redis://host1:port?addr=host2:port&addr=host3:port for a Redis Cluster; redis://[user:password@]sentinel1:26379?master_name=NAME&addr=sentinel2:26379 for the master Sentinel names (user:password@ there are the sentinels' own)."`

	RedisUser         string `name:"redis-user" env:"REDIS_USER" group:"Redis authentication" help:"Redis ACL user name (without it, the password is the default user's)."`
	RedisPassword     string `name:"redis-password" env:"REDIS_PASSWORD" group:"Redis authentication" help:"Redis password (of --redis-user, or of the default user)."`
	RedisPasswordFile string `name:"redis-password-file" env:"REDIS_PASSWORD_FILE" type:"path" group:"Redis authentication" help:"File holding the Redis password."`

	RedisCA   string `name:"redis-ca" env:"REDIS_CA" type:"path" group:"Redis TLS" help:"PEM file of the CA(s) that signed the Redis servers' certificates (rediss:// URLs; without it, the system's CAs)."`
	RedisCert string `name:"redis-cert" env:"REDIS_CERT" type:"path" group:"Redis TLS" help:"PEM client certificate, for servers that verify clients (tls-auth-clients; with --redis-key)."`
	RedisKey  string `name:"redis-key" env:"REDIS_KEY" type:"path" group:"Redis TLS" help:"PEM private key of --redis-cert."`
}

// Flag names, as errors print them.
const (
	flagRedisURL      = "--redis-url (REDIS_URL)"
	flagRedisUser     = "--redis-user (REDIS_USER)"
	flagRedisPassword = "--redis-password (REDIS_PASSWORD)"
	flagRedisPwFile   = "--redis-password-file (REDIS_PASSWORD_FILE)"
	flagRedisCA       = "--redis-ca (REDIS_CA)"
	flagRedisCert     = "--redis-cert (REDIS_CERT)"
	flagRedisKey      = "--redis-key (REDIS_KEY)"
)

// redisMode is the kind of deployment a URL names.
type redisMode int

const (
	redisSingle redisMode = iota
	redisCluster
	redisSentinel
)

// mode reads the URL's form: master_name means Sentinel, addr a cluster.
func (f *RedisFlags) mode() (*url.URL, redisMode, error) {
	u, err := url.Parse(f.RedisURL)
	if err != nil {
		// url.Error repeats the URL, password and all: keep only the reason.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, 0, fmt.Errorf("%s %s: %w", flagRedisURL, RedactURLs(f.RedisURL), err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, 0, fmt.Errorf("%s %s: want a redis:// or rediss:// URL", flagRedisURL, RedactURLs(f.RedisURL))
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		return u, redisSentinel, nil
	case q.Has("addr"):
		return u, redisCluster, nil
	}
	return u, redisSingle, nil
}

// Validate checks the flags together, without connecting: an error names
// the flags and variables.
func (f *RedisFlags) Validate() error {
	if f.RedisURL == "" {
		return nil // a program without a default (the demo) starts its own
	}
	u, _, err := f.mode()
	if err != nil {
		return err
	}
	switch {
	case f.RedisPassword != "" && f.RedisPasswordFile != "":
		return fmt.Errorf("%s and %s: one, not both", flagRedisPassword, flagRedisPwFile)
	case f.RedisUser != "" && f.RedisPassword == "" && f.RedisPasswordFile == "":
		return fmt.Errorf("%s needs %s or %s", flagRedisUser, flagRedisPassword, flagRedisPwFile)
	case (f.RedisCert == "") != (f.RedisKey == ""):
		return fmt.Errorf("%s and %s go together", flagRedisCert, flagRedisKey)
	case u.Scheme != "rediss" && (f.RedisCA != "" || f.RedisCert != ""):
		return fmt.Errorf("%s and %s are for TLS: %s must then be a rediss:// URL, not %s", flagRedisCA, flagRedisCert, flagRedisURL, RedactURLs(f.RedisURL))
	}
	for flag, path := range map[string]string{flagRedisPwFile: f.RedisPasswordFile, flagRedisCA: f.RedisCA,
		flagRedisCert: f.RedisCert, flagRedisKey: f.RedisKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return nil
}

// redisConnectTimeout bounds Connect's first round trip.
const redisConnectTimeout = 5 * time.Second

// Connect returns a client for the flags' Redis, once it has answered a
// PING: a *redis.Client for one server or for the master Sentinel names
// (go-redis's failover client), a *redis.ClusterClient for a cluster. where
// says what it reaches, for logs, without secrets. An error names the flag
// or the servers, never a secret; one the server gave for the credentials
// names the flags that carry them.
func (f *RedisFlags) Connect(ctx context.Context) (rdb redis.UniversalClient, where string, err error) {
	if err := f.Validate(); err != nil { // kong has run it; a caller that built the flags itself may not have
		return nil, "", err
	}
	_, mode, err := f.mode()
	if err != nil {
		return nil, "", err
	}
	password, err := f.password()
	if err != nil {
		return nil, "", err
	}
	badURL := func(err error) error {
		return fmt.Errorf("%s %s: %w", flagRedisURL, RedactURLs(f.RedisURL), err)
	}
	var urlPassword string
	switch mode {
	case redisSentinel:
		o, err := redis.ParseFailoverURL(f.RedisURL)
		if err != nil {
			return nil, "", badURL(err)
		}
		if urlPassword, err = f.secure(&o.Username, &o.Password, &o.TLSConfig, password); err != nil {
			return nil, "", err
		}
		where = fmt.Sprintf("master %s via sentinels %s", o.MasterName, strings.Join(o.SentinelAddrs, ","))
		rdb = redis.NewFailoverClient(o)
	case redisCluster:
		o, err := redis.ParseClusterURL(f.RedisURL)
		if err != nil {
			return nil, "", badURL(err)
		}
		if urlPassword, err = f.secure(&o.Username, &o.Password, &o.TLSConfig, password); err != nil {
			return nil, "", err
		}
		where = "cluster via " + strings.Join(o.Addrs, ",")
		rdb = redis.NewClusterClient(o)
	default:
		o, err := redis.ParseURL(f.RedisURL)
		if err != nil {
			return nil, "", badURL(err)
		}
		if urlPassword, err = f.secure(&o.Username, &o.Password, &o.TLSConfig, password); err != nil {
			return nil, "", err
		}
		where = o.Addr
		rdb = redis.NewClient(o)
	}
	pctx, cancel := context.WithTimeout(ctx, redisConnectTimeout)
	defer cancel()
	redisConnecting.Add(1)
	defer redisConnecting.Add(-1)
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, "", f.reachError(where, err, urlPassword != "")
	}
	if mode == redisSingle {
		if seed, ok := rdb.(*redis.Client); ok && clusterEnabled(pctx, seed) {
			// A cluster node given as one server: go-redis's cluster client
			// finds the others from it.
			o := seed.Options()
			_ = seed.Close()
			rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{o.Addr}, Username: o.Username,
				Password: o.Password, TLSConfig: o.TLSConfig})
			where = "cluster via " + o.Addr
			if err := rdb.Ping(pctx).Err(); err != nil {
				_ = rdb.Close()
				return nil, "", f.reachError(where, err, urlPassword != "")
			}
		}
	}
	return rdb, where, nil
}

// clusterEnabled reports whether a server says it is a cluster node. A
// server that will not tell (an ACL without INFO) is taken as one server.
func clusterEnabled(ctx context.Context, rdb *redis.Client) bool {
	info, err := rdb.Info(ctx, "cluster").Result()
	return err == nil && strings.Contains(info, "cluster_enabled:1")
}

// reachError is Connect's error for a server that did not answer PING.
func (f *RedisFlags) reachError(where string, err error, urlPassword bool) error {
	msg := err.Error()
	if strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "NOAUTH") || strings.Contains(msg, "NOPERM") {
		who := "the default user"
		if f.RedisUser != "" {
			who = "user " + f.RedisUser
		}
		hint := flagRedisUser + " and " + flagRedisPassword + " or " + flagRedisPwFile
		if urlPassword {
			hint = "the credentials in " + flagRedisURL
		}
		return fmt.Errorf("cannot reach Redis at %s as %s: %w (check %s)", where, who, err, hint)
	}
	return fmt.Errorf("cannot reach Redis at %s: %w", where, err)
}

// password returns the password of the flags, from the file if one is named.
func (f *RedisFlags) password() (string, error) {
	if f.RedisPasswordFile != "" {
		return readSecret(flagRedisPwFile, f.RedisPasswordFile)
	}
	return f.RedisPassword, nil
}

// secure applies the flags' credentials and TLS settings to the fields of
// the options go-redis parsed from the URL (one type for each mode), and
// returns the password the URL itself carried.
func (f *RedisFlags) secure(user, pw *string, tc **tls.Config, password string) (urlPassword string, err error) {
	urlPassword = *pw
	if *user, *pw, err = f.credentials(*user, *pw, password); err != nil {
		return "", err
	}
	if *tc, err = f.tls(*tc); err != nil {
		return "", err
	}
	return urlPassword, nil
}

// credentials merges the URL's user and password with the flags': one
// place for each, so that nobody wonders which one won.
func (f *RedisFlags) credentials(urlUser, urlPassword, password string) (user, pw string, err error) {
	switch {
	case urlPassword != "" && password != "":
		return "", "", fmt.Errorf("a password in %s and %s or %s: one, not both", flagRedisURL, flagRedisPassword, flagRedisPwFile)
	case urlUser != "" && f.RedisUser != "":
		return "", "", fmt.Errorf("a user in %s and %s: one, not both", flagRedisURL, flagRedisUser)
	}
	return urlUser + f.RedisUser, urlPassword + password, nil
}

// tls adds the CA and the client certificate to c, the TLS configuration
// go-redis made of a rediss:// URL (nil for redis://, which Validate keeps
// without TLS flags).
func (f *RedisFlags) tls(c *tls.Config) (*tls.Config, error) {
	if c == nil {
		return nil, nil //nolint:nilnil // no TLS
	}
	c = c.Clone()
	c.MinVersion = tls.VersionTLS12
	if f.RedisCA != "" {
		pem, err := os.ReadFile(f.RedisCA)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagRedisCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", flagRedisCA, f.RedisCA)
		}
		c.RootCAs = pool
	}
	if f.RedisCert != "" {
		cert, err := tls.LoadX509KeyPair(f.RedisCert, f.RedisKey)
		if err != nil {
			return nil, fmt.Errorf("%s and %s: %w", flagRedisCert, flagRedisKey, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
