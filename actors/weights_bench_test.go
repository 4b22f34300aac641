package actors

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkWeightsBroadcast times one version of 32 Mi values (128 MiB)
// from Publish to 4 subscribers holding it, for profiling
// (go test -run - -bench WeightsBroadcast -cpuprofile cpu.out ./actors/).
func BenchmarkWeightsBroadcast(b *testing.B) {
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		b.Run(dtype, func(b *testing.B) {
			srv, url, err := StartEmbeddedNATS(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer ShutdownNATS(srv)
			pc, err := Connect(url)
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			pub, err := NewWeightPublisher(context.Background(), pc, "bench", WithWeightsDType(dtype))
			if err != nil {
				b.Fatal(err)
			}
			const subs = 4
			got := make(chan int64, 16*subs)
			for i := 0; i < subs; i++ {
				nc, err := Connect(url)
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				s, err := SubscribeWeights(nc, "bench", zerolog.Nop(), func(w Weights) { got <- w.Version })
				if err != nil {
					b.Fatal(err)
				}
				defer s.Stop()
			}
			w := randomWeights(32<<20, 1)
			b.SetBytes(int64(4 * len(w)))
			var total time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				a, err := pub.Publish(context.Background(), i, false, w)
				if err != nil {
					b.Fatal(err)
				}
				for k := 0; k < subs; k++ {
					if v := <-got; v != a.Version {
						b.Fatalf("got version %d, want %d", v, a.Version)
					}
				}
				total += time.Since(t0)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/version")
		})
	}
}
