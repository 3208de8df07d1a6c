package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
)

// NewLogger returns the programs' logger: text or JSON on w at level (one
// of debug, info, warn, error). Durations are written as Go durations
// ("1.5s"), not nanoseconds, in JSON too.
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // kong checked the enum
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		return a
	}}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// RedisLogger adapts log for go-redis's own messages (redis.SetLogger), so
// that its connection-pool warnings arrive in the program's format and
// level instead of raw on stderr, once each, with one "redis:" before them.
// Its messages are warnings: go-redis logs only what went wrong. While a
// RedisFlags.Connect is under way it drops them: go-redis would log every
// failed dial of the first PING, and Connect's error says it once.
type RedisLogger struct{ Log *slog.Logger }

// redisConnecting counts the Connects under way; go-redis's logger is one
// for the whole process, so this is too.
var redisConnecting atomic.Int32

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	if redisConnecting.Load() > 0 {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.Log.WarnContext(ctx, "redis: "+strings.TrimPrefix(msg, "redis: "))
}
