package p2p

import (
	"context"
	"log/slog"

	"github.com/go-logr/logr"
)

// Verbosities at which the library's messages reach Config.Logger. The library logs a lot at
// Info and Warn (e.g. per piece, per peer), so all of it sits at V(2) and above: an agent at the
// default verbosity sees none of it; errors worth acting on are returned by this package's API.
const (
	LibraryErrorV = 2
	LibraryWarnV  = 3
	LibraryInfoV  = 4
	LibraryDebugV = 6
)

// levelHandler routes slog records to a logr.Logger, rewriting the record's level to a logr
// verbosity chosen from the table above.
type levelHandler struct {
	err, warn, info, debug slog.Handler
}

func newLevelHandler(l logr.Logger) slog.Handler {
	return levelHandler{
		err:   logr.ToSlogHandler(l.V(LibraryErrorV)),
		warn:  logr.ToSlogHandler(l.V(LibraryWarnV)),
		info:  logr.ToSlogHandler(l.V(LibraryInfoV)),
		debug: logr.ToSlogHandler(l.V(LibraryDebugV)),
	}
}

func (h levelHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.err
	case l >= slog.LevelWarn:
		return h.warn
	case l >= slog.LevelInfo:
		return h.info
	default:
		return h.debug
	}
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, slog.LevelInfo)
}

func (h levelHandler) Handle(ctx context.Context, r slog.Record) error {
	target := h.pick(r.Level)
	r = r.Clone()
	r.AddAttrs(slog.String("libLevel", r.Level.String()))
	r.Level = slog.LevelInfo
	return target.Handle(ctx, r)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.err.WithAttrs(as), h.warn.WithAttrs(as), h.info.WithAttrs(as), h.debug.WithAttrs(as)}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.err.WithGroup(name), h.warn.WithGroup(name), h.info.WithGroup(name), h.debug.WithGroup(name)}
}
