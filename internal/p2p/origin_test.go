package p2p

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// A swarm of four rate-limited downloaders takes about one copy of the file from its origin (the
// seeder marked Origin plus the web seed), and a fifth that joins once they are complete takes
// nothing from it. A functional check of where bytes come from, not a timing (the benchmark,
// make bench-distribution, measures time).
func TestOriginServesAboutOneCopy(t *testing.T) {
	const (
		size = 8 << 20
		rate = 4 << 20
		n    = 4
	)
	dir := t.TempDir()
	file, sum := writeRandomFile(t, dir, "artifact.bin", size)
	var webBytes atomic.Int64
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		http.ServeContent(countingWriter{w, &webBytes}, r, "artifact.bin", time.Time{}, f)
	}))
	defer web.Close()
	mi := buildMI(t, file, "artifact.bin", web.URL+"/artifact.bin")

	seeder := newTestClient(t, "seeder", "127.0.0.1", func(c *Config) { c.UploadRate, c.OriginSeeding = rate, true })
	st := seed(t, seeder, mi, file)
	clients := map[string]*Client{"seeder": seeder}
	defer statusOnFailure(t, clients)

	join := func(i int) (*Client, *Torrent) {
		name := "node-" + strconv.Itoa(i)
		c := newTestClient(t, name, fmt.Sprintf("127.0.0.%d", i+2), func(c *Config) {
			c.UploadRate, c.DownloadRate = rate, rate
			// A stall must not be hidden by the web seed (it would show as bytes from it).
			c.WebSeedAfter = time.Minute
		})
		clients[name] = c
		tor, err := c.Download(context.Background(), mi, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return c, tor
	}
	cls := make([]*Client, n+1)
	tors := make([]*Torrent, n+1)
	for i := range n {
		cls[i], tors[i] = join(i)
	}
	peers := func(upto int, complete bool) []Peer {
		ps := []Peer{{Addr: seeder.Addr(), Origin: true}}
		for _, c := range cls[:upto] {
			ps = append(ps, Peer{Addr: c.Addr(), Complete: complete})
		}
		return ps
	}
	for i := range n {
		if err := tors[i].AddPeers(peers(n, false)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		wait(t, tors[i], 2*time.Minute)
		if got := fileSHA256(t, tors[i].Path()); got != sum {
			t.Fatalf("node-%d: sha256 %s, want %s", i, got, sum)
		}
	}
	origin := st.Stats().BytesWrittenData + webBytes.Load()
	t.Logf("%d downloaders: the origin sent %.2f copies (seeder %d bytes, web seed %d)", n, float64(origin)/size, st.Stats().BytesWrittenData, webBytes.Load())
	// About one copy: what a collision of two downloaders on one piece, or a chunk in flight
	// when its piece turned up elsewhere, adds is well under a quarter.
	if origin > size*5/4 {
		t.Errorf("the origin sent %d bytes for a %d-byte file (%.2f copies), want about one", origin, size, float64(origin)/size)
	}

	before := st.Stats().BytesWrittenData + webBytes.Load()
	cls[n], tors[n] = join(n)
	if err := tors[n].AddPeers(peers(n, true)); err != nil {
		t.Fatal(err)
	}
	wait(t, tors[n], 2*time.Minute)
	late := st.Stats().BytesWrittenData + webBytes.Load() - before
	tr := tors[n].Trace()
	t.Logf("late joiner: %d bytes from the origin, %v from peers", late, tr.FromPeers)
	// Zero, but for a chunk or two the origin may send before the joiner has its peers'
	// bitfields (it connects to the origin and asks before it knows they hold everything).
	if late > mi.PieceLength {
		t.Errorf("a node joining a complete swarm took %d bytes from the origin, want none (at most one piece, %d)", late, mi.PieceLength)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}
