// Taken from anacrolix/torrent v1.62.0 (peer-conn-msg-writer_test.go, MPL-2.0): the
// regression tests of the two writer fixes carried by this fork (#1078, #1071).

package torrent

import (
	"bytes"
	"io"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/chansync"
	"github.com/anacrolix/log"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// Collects writer output and signals each write.
type msgWriterSink struct {
	mu    stdsync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func newMsgWriterSink() *msgWriterSink {
	return &msgWriterSink{wrote: make(chan struct{}, 1)}
}

func (me *msgWriterSink) Write(b []byte) (int, error) {
	me.mu.Lock()
	me.buf.Write(b)
	me.mu.Unlock()
	select {
	case me.wrote <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (me *msgWriterSink) bytes() []byte {
	me.mu.Lock()
	defer me.mu.Unlock()
	return append([]byte(nil), me.buf.Bytes()...)
}

// Runs the writer and returns an idempotent stop func that joins it. Also registered as cleanup.
func startMsgWriter(t *testing.T, w *peerConnMsgWriter, closed *chansync.SetOnce, keepAliveTimeout time.Duration) func() {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(keepAliveTimeout)
	}()
	var stopOnce stdsync.Once
	stop := func() {
		stopOnce.Do(func() {
			closed.Set()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Error("message writer did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// After the keepalive timer fires without anything to write, it must be armed again: a connection
// that later becomes useful gets its keepalive from the next expiration, with no tickle involved.
func TestMsgWriterKeepAliveTimerRearmed(t *testing.T) {
	const keepAliveTimeout = 20 * time.Millisecond
	var (
		closed          chansync.SetOnce
		keepAliveChecks atomic.Int32
		keepAliveNow    atomic.Bool
	)
	sink := newMsgWriterSink()
	firstExpiredCheck := make(chan struct{})
	w := &peerConnMsgWriter{
		fillWriteBuffer: func() {},
		closed:          &closed,
		logger:          log.Default,
		w:               sink,
		keepAlive: func() bool {
			// Capture before signaling, so the check following the first timer expiration is
			// guaranteed to have observed false. Consuming the flag caps output at one keepalive,
			// keeping the final output assertion exact regardless of scheduling.
			check := keepAliveChecks.Add(1)
			useful := keepAliveNow.CompareAndSwap(true, false)
			if check == 2 {
				close(firstExpiredCheck)
			}
			return useful
		},
		writeBuffer: new(peerConnMsgWriterBuffer),
	}
	stop := startMsgWriter(t, w, &closed, keepAliveTimeout)
	// The check following the first timer expiration has run and returned false: the single-shot
	// timer has been consumed while the connection wasn't useful.
	select {
	case <-firstExpiredCheck:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the first timer expiration")
	}
	keepAliveNow.Store(true)
	select {
	case <-sink.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("keepalive never written: timer was not rearmed after firing")
	}
	stop()
	if got, want := sink.bytes(), (pp.Message{Keepalive: true}).MustMarshalBinary(); !bytes.Equal(got, want) {
		t.Fatalf("unexpected writer output: got %x, want %x", got, want)
	}
}

// A broadcast that lands while fillWriteBuffer is running must not be
// lost. The writer has to install its wakeup channel before filling, so
// that a concurrent Broadcast closes a channel the subsequent select
// observes. See #1070.
func TestMsgWriterBroadcastDuringFillWakesWriter(t *testing.T) {
	var w *peerConnMsgWriter
	var fills atomic.Int32
	secondFill := make(chan struct{})
	w = &peerConnMsgWriter{
		fillWriteBuffer: func() {
			switch fills.Add(1) {
			case 1:
				w.writeCond.Broadcast()
			case 2:
				close(secondFill)
			}
		},
		closed:      new(chansync.SetOnce),
		logger:      log.Default,
		w:           io.Discard,
		keepAlive:   func() bool { return false },
		writeBuffer: new(peerConnMsgWriterBuffer),
	}
	done := make(chan struct{})
	go func() {
		w.run(time.Hour)
		close(done)
	}()
	// The keepalive timer is an hour: only the broadcast made during the first fill can bring
	// the second one.
	select {
	case <-secondFill:
	case <-time.After(5 * time.Second):
		w.closed.Set()
		w.writeCond.Broadcast()
		t.Fatal("writer never woke after a broadcast during fill: wakeup lost")
	}
	w.closed.Set()
	w.writeCond.Broadcast()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writer run did not return after close")
	}
}
