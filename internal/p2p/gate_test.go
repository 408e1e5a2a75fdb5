package p2p

import (
	"context"
	"testing"
	"time"
)

// waitRefused waits (at most 20s) until c has refused more than n connections.
func waitRefused(t *testing.T, c *Client, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitRefused(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// With OnlyListedPeers, a seeder serves a torrent only to the addresses listed for it: a
// registered peer downloads; a peer listed nowhere is refused at accept; a peer listed for
// another torrent only is refused after the handshake; once listed, the same peer downloads.
// The seeder never dials (AllowPeers, not AddPeers), so every transfer goes through its
// listener.
func TestOnlyListedPeers(t *testing.T) {
	const size = 2 * MiB
	src, sum := writeRandomFile(t, t.TempDir(), "a.bin", size)
	mi := buildMI(t, src, "a.bin")
	other, _ := writeRandomFile(t, t.TempDir(), "b.bin", 64<<10)
	miOther := buildMI(t, other, "b.bin")

	seeder := newTestClient(t, "seeder", "127.0.0.1", func(c *Config) { c.OnlyListedPeers = true })
	seedT := seed(t, seeder, mi, src)
	seedOther := seed(t, seeder, miOther, other)
	registered := newTestClient(t, "registered", "127.0.0.2", nil)
	stranger := newTestClient(t, "stranger", "127.0.0.3", nil)
	elsewhere := newTestClient(t, "elsewhere", "127.0.0.4", nil)
	if err := seedT.AllowPeers([]Peer{{Addr: registered.Addr()}}); err != nil {
		t.Fatal(err)
	}
	if err := seedOther.AllowPeers([]Peer{{Addr: elsewhere.Addr()}}); err != nil {
		t.Fatal(err)
	}

	tor := download(t, registered, mi, t.TempDir(), seeder)
	wait(t, tor, 30*time.Second)
	if got := fileSHA256(t, tor.Path()); got != sum {
		t.Fatalf("registered peer: sha256 %s, want %s", got, sum)
	}

	for _, c := range []*Client{stranger, elsewhere} {
		refused := seeder.RefusedConns()
		tor := download(t, c, mi, t.TempDir(), seeder)
		waitRefused(t, seeder, refused)
		// The refused connection was closed before any piece: nothing was received, and the
		// library does not redial an address whose connection failed.
		if st := tor.Stats(); st.BytesReadData != 0 || st.PiecesDone != 0 {
			t.Fatalf("%s: received data from a seeder that refused it: %+v", c.Addr(), st)
		}
		if tor.Complete() {
			t.Fatalf("%s: download complete", c.Addr())
		}
		tor.Drop()
	}

	// Listed, the stranger downloads (a fresh torrent: the dropped one gave up on the seeder).
	if err := seedT.AllowPeers([]Peer{{Addr: stranger.Addr()}}); err != nil {
		t.Fatal(err)
	}
	tor = download(t, stranger, mi, t.TempDir(), seeder)
	wait(t, tor, 30*time.Second)
	if got := fileSHA256(t, tor.Path()); got != sum {
		t.Fatalf("stranger once listed: sha256 %s, want %s", got, sum)
	}
}

// Without OnlyListedPeers anyone may download (the default, kept for the operator's seeder).
func TestUnlistedPeersWhenOpen(t *testing.T) {
	src, sum := writeRandomFile(t, t.TempDir(), "a.bin", 256<<10)
	mi := buildMI(t, src, "a.bin")
	seeder := newTestClient(t, "seeder", "127.0.0.1", nil)
	seed(t, seeder, mi, src)
	c := newTestClient(t, "peer", "127.0.0.2", nil)
	tor := download(t, c, mi, t.TempDir(), seeder)
	wait(t, tor, 30*time.Second)
	if got := fileSHA256(t, tor.Path()); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
}

// AllowPeers replaces the torrent's list: an address left out is refused from then on, and the
// connection it opened to us for the torrent is closed mid-download.
func TestAllowPeersReplacesTheList(t *testing.T) {
	const size = 4 * MiB
	src, sum := writeRandomFile(t, t.TempDir(), "a.bin", size)
	mi := buildMI(t, src, "a.bin")
	// 512 KiB/s: the first download takes about 8s, time enough to drop it midway.
	seeder := newTestClient(t, "seeder", "127.0.0.1", func(c *Config) { c.OnlyListedPeers = true; c.UploadRate = 512 << 10 })
	seedT := seed(t, seeder, mi, src)
	leaving := newTestClient(t, "leaving", "127.0.0.2", nil)
	staying := newTestClient(t, "staying", "127.0.0.3", nil)
	if err := seedT.AllowPeers([]Peer{{Addr: leaving.Addr()}}); err != nil {
		t.Fatal(err)
	}
	tor := download(t, leaving, mi, t.TempDir(), seeder)
	deadline := time.Now().Add(20 * time.Second)
	for tor.Stats().BytesReadData == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the listed peer received nothing in 20s")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline: no signal for the first bytes
	}
	refused := seeder.RefusedConns()
	if err := seedT.AllowPeers([]Peer{{Addr: staying.Addr()}}); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, seeder, refused)
	if tor.Complete() {
		t.Fatal("the peer left out completed its download")
	}
	tor.Drop()
	// A fresh attempt from the address left out is refused too.
	refused = seeder.RefusedConns()
	again := download(t, leaving, mi, t.TempDir(), seeder)
	waitRefused(t, seeder, refused)
	if st := again.Stats(); st.BytesReadData != 0 {
		t.Fatalf("the peer left out received data again: %+v", st)
	}
	// The peer listed now downloads.
	tor = download(t, staying, mi, t.TempDir(), seeder)
	wait(t, tor, 60*time.Second)
	if got := fileSHA256(t, tor.Path()); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
}
