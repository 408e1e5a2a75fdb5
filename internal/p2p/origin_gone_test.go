package p2p

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// The origin (web seed) starts failing and the first seeder leaves once one downloader has
// the file, while the others are mid-flight at a limited rate: they finish from each other
// (the e2e TestOriginDownNodesFinishFromPeers, without ZooKeeper around it).
func TestOriginGoneMidFlight(t *testing.T) {
	const size = 3 * MiB
	dir := t.TempDir()
	src, sum := writeRandomFile(t, dir, "artifact.bin", size)
	var down atomic.Bool
	srv := httptest.NewServer(http.StripPrefix("/files/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "origin down", http.StatusServiceUnavailable)
			return
		}
		http.ServeFile(w, r, filepath.Join(dir, filepath.Base(r.URL.Path)))
	})))
	defer srv.Close()
	mi := buildMI(t, src, "artifact.bin", srv.URL+"/files/")

	listed := func(c *Config) { c.OnlyListedPeers = true }
	seeder := newTestClient(t, "seeder", "127.0.0.1", listed)
	seeded := seed(t, seeder, mi, src)
	const n = 5
	clients := map[string]*Client{"seeder": seeder}
	var peers []*Client
	for i := range n {
		c := newTestClient(t, fmt.Sprintf("node-%d", i+1), fmt.Sprintf("127.0.0.%d", i+2), func(c *Config) {
			c.OnlyListedPeers = true
			c.DownloadRate = 1 << 20
		})
		clients[fmt.Sprintf("node-%d", i+1)] = c
		peers = append(peers, c)
	}
	statusOnFailure(t, clients)
	var tors []*Torrent
	for i, c := range peers {
		others := []*Client{seeder}
		for j, p := range peers {
			if j != i {
				others = append(others, p)
			}
		}
		tors = append(tors, download(t, c, mi, t.TempDir(), others...))
	}
	if err := seeded.AllowPeers(func() []Peer {
		var ps []Peer
		for _, p := range peers {
			ps = append(ps, Peer{Addr: p.Addr()})
		}
		return ps
	}()); err != nil {
		t.Fatal(err)
	}
	first := make(chan int, n)
	for i, tor := range tors {
		go func() {
			<-tor.t.Complete().On()
			first <- i
		}()
	}
	select {
	case i := <-first:
		t.Logf("node-%d has the file; the origin fails and the seeder leaves", i+1)
	case <-time.After(time.Minute):
		t.Fatal("no downloader finished within a minute")
	}
	down.Store(true)
	seeded.Drop()
	if err := seeder.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tor := range tors {
		wait(t, tor, time.Minute)
		if got := fileSHA256(t, tor.Path()); got != sum {
			t.Fatalf("sha256 %s, want %s", got, sum)
		}
	}
}
