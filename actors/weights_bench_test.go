package actors

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkWeightsBroadcast times one version of 32 Mi values (128 MiB; set
// TROUPE_BENCH_PARAMS for another size, e.g. 124439808 for GPT-2 124M) from
// Publish to 4 subscribers holding it, for profiling
// (go test -run - -bench WeightsBroadcast/fp32 -cpuprofile cpu.out ./actors/).
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
				s, err := SubscribeWeights(nc, "bench", zerolog.Nop(), func(w Weights) { w.Release(); got <- w.Version })
				if err != nil {
					b.Fatal(err)
				}
				defer s.Stop()
			}
			n := 32 << 20
			if e := os.Getenv("TROUPE_BENCH_PARAMS"); e != "" {
				if n, err = strconv.Atoi(e); err != nil || n < 1 {
					b.Fatalf("TROUPE_BENCH_PARAMS=%q: want a positive number of values", e)
				}
			}
			w := randomWeights(n, 1)
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

// BenchmarkBF16 times the publisher's bf16 encoding and a subscriber's
// decoding of 4 Mi values.
func BenchmarkBF16(b *testing.B) {
	w := randomWeights(4<<20, 1)
	blob := encodeBlob(w, DTypeBF16, nil)
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(4 * len(w)))
		for i := 0; i < b.N; i++ {
			blob = encodeBlob(w, DTypeBF16, blob)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(4 * len(w)))
		for i := 0; i < b.N; i++ {
			decodeInto(w, blob, DTypeBF16)
		}
	})
}
