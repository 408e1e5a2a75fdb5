package p2p

import (
	"testing"
	"time"
)

// A rate-limited downloader whose limiter is in debt when it learns of a peer still connects
// to it once the debt is paid. v1.61.0 refused new connections, both ways, while the limiter
// had no tokens, and tried again only on a later event (a piece done, a connection dropped, a
// peer added): a node downloading at its cap when its last source left (the origin down, the
// operator's seeder stopped) never dialed the peers it already knew, nor accepted theirs, and
// waited for ever (e2e TestOriginDownNodesFinishFromPeers failed so in CI). See
// third_party/forked/anacrolix-torrent/PATCHES.md.
func TestRateLimitedDownloaderConnectsAfterDebt(t *testing.T) {
	const size = 256 << 10
	dir := t.TempDir()
	src, sum := writeRandomFile(t, dir, "artifact.bin", size)
	mi := buildMI(t, src, "artifact.bin")
	seeder := newTestClient(t, "seeder", "127.0.0.1", nil)
	seed(t, seeder, mi, src)
	d := newTestClient(t, "downloader", "127.0.0.2", func(c *Config) { c.DownloadRate = 1 << 20 })
	statusOnFailure(t, map[string]*Client{"seeder": seeder, "downloader": d})
	// The limiter's state right after reading at the cap from peers that then left: in debt
	// (here about two seconds' worth).
	burst := d.download.Burst()
	for range 3 {
		if r := d.download.ReserveN(time.Now(), burst); !r.OK() {
			t.Fatalf("reserve %d of burst %d", burst, burst)
		}
	}
	if tokens := d.download.Tokens(); tokens > 0 {
		t.Fatalf("limiter has %.0f tokens after the reservations, want none", tokens)
	}
	tor := download(t, d, mi, t.TempDir(), seeder)
	wait(t, tor, time.Minute)
	if got := fileSHA256(t, tor.Path()); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
}
