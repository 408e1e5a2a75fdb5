package rollout

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkReadQueueDrain is what one agent's reads of the staging queue cost while a rollout
// drains it: n nodes queued, then waves of n/10 leave (the quorum's batches), each followed by
// one read of the last node in the queue (it lists the queue, as every agent does on every
// step). A reader notes who left between two listings of current/<svc>; that bookkeeping must
// stay linear in the queue: per read it once grew with the nodes that left, so 5,000 agents in
// one process spent more than a third of their CPU there. Prints ns per read (over the
// in-memory model, whose own listing is part of it).
func BenchmarkReadQueueDrain(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ctx := context.Background()
			reads := 0
			b.StopTimer()
			for range b.N {
				f := newZK(b, true)
				f.plan(testPlan("v2"))
				children := make([]string, n)
				for i := range children {
					children[i] = f.stage(fmt.Sprintf("n%05d", i), "v2", ready)
				}
				r := f.reader(fmt.Sprintf("n%05d", n-1))
				wave := n / 10
				for left := 0; left < n-1; left += wave {
					for _, c := range children[left:min(left+wave, n-1)] {
						f.delete(tLay.StagingChild(tSvc, c))
					}
					b.StartTimer()
					if _, err := r.Read(ctx, 0); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					reads++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(reads), "ns/read")
		})
	}
}
