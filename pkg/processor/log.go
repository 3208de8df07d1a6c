package processor

import (
	"context"
	"log/slog"
)

// Attribute keys of the processor's logs.
const (
	attrKey      = "key"
	attrKind     = "kind"
	attrAttempt  = "attempt"
	attrStatus   = "status"
	attrCode     = "code"
	attrError    = "error"
	attrReplayed = "replayed"
)

type logger struct{ l *slog.Logger }

func (l logger) debug(ctx context.Context, msg string, args ...any) {
	l.l.DebugContext(ctx, msg, args...)
}
func (l logger) info(ctx context.Context, msg string, args ...any) {
	l.l.InfoContext(ctx, msg, args...)
}
func (l logger) warn(ctx context.Context, msg string, args ...any) {
	l.l.WarnContext(ctx, msg, args...)
}
func (l logger) error(ctx context.Context, msg string, args ...any) {
	l.l.ErrorContext(ctx, msg, args...)
}

func (l logger) enabled(ctx context.Context, level slog.Level) bool { return l.l.Enabled(ctx, level) }
