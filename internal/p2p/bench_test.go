package p2p

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLoopbackThroughput measures one seeder and N downloaders on loopback, unthrottled
// (CPU-bound), and reports the aggregate received MiB/s. Run without -race:
//
//	go test -run '^$' -bench LoopbackThroughput -benchtime 3x ./internal/p2p/
func BenchmarkLoopbackThroughput(b *testing.B) {
	for _, peers := range []int{1, 3} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			const size = 64 * MiB
			src, _ := writeRandomFile(b, b.TempDir(), "bench.bin", size)
			mi := buildMI(b, src, "bench.bin")
			seeder := newTestClient(b, "seeder", "127.0.0.1", nil)
			seed(b, seeder, mi, src)
			b.SetBytes(size * int64(peers))
			b.ResetTimer()
			var total time.Duration
			for range b.N {
				b.StopTimer()
				clients := make([]*Client, peers)
				for i := range clients {
					clients[i] = newTestClient(b, fmt.Sprintf("peer%d", i), "127.0.0.1", nil)
				}
				b.StartTimer()
				start := time.Now()
				torrents := make([]*Torrent, peers)
				for i, c := range clients {
					others := []*Client{seeder}
					for j, o := range clients {
						if j != i {
							others = append(others, o)
						}
					}
					torrents[i] = download(b, c, mi, b.TempDir(), others...)
				}
				for _, tor := range torrents {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					err := tor.Wait(ctx)
					cancel()
					if err != nil {
						b.Fatal(err)
					}
				}
				total += time.Since(start)
				b.StopTimer()
				for _, c := range clients {
					_ = c.Close()
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(size*int64(peers)*int64(b.N))/MiB/total.Seconds(), "MiB/s")
		})
	}
}
