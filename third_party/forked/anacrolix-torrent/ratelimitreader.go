package torrent

import (
	"io"
	"time"

	"github.com/anacrolix/missinggo/v2/panicif"
	"golang.org/x/time/rate"
)

func newRateLimitedReader(r io.Reader, l *rate.Limiter) io.Reader {
	if l == nil {
		// Avoids taking Limiter lock to check limit, and allows type assertions to bypass Read.
		return r
	}
	return rateLimitedReader{
		l: l,
		r: r,
	}
}

type rateLimitedReader struct {
	l *rate.Limiter
	r io.Reader
	// priority, when it reports true, takes the tokens without waiting for them: the other
	// readers wait off the debt (rollkeeper patch, origin-peers.go).
	priority func() bool
}

func (me rateLimitedReader) Read(b []byte) (n int, err error) {
	// Avoid truncating the read if everything is permitted anyway.
	if me.l.Limit() == rate.Inf {
		return me.r.Read(b)
	}
	// If the burst is zero, let the limiter method handle errors.
	if me.l.Burst() != 0 {
		b = b[:min(len(b), me.l.Burst())]
	}
	n, err = me.r.Read(b)
	// golang.org/x/time/rate is completely fucking busted. TODO: Write my own rate limiter.
	r := me.l.ReserveN(time.Now(), n)
	panicif.False(r.OK())
	if me.priority != nil && me.priority() {
		return
	}
	time.Sleep(r.Delay())
	return
}
