package kernels

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkMatmulGelu A/B-compares, in one process, the MLP's first product
// of a small step (2048 x 384 x 1536) with bias and with bias and the GELU
// epilogue (MatmulGeluForward: the pre-activation and its GELU stored from
// the same registers), alternating; it reports each one's median and best.
//
//	go test -run '^$' -bench MatmulGelu -benchtime 100x ./kernels/
func BenchmarkMatmulGelu(b *testing.B) {
	restoreSpareP(b)
	SpareP(2)
	const N, C, OC = 2048, 384, 1536
	d := NewCPU(2)
	rng := newRNG(3)
	inp, w, bias := Host(randn(rng, N*C, 1)), Host(randn(rng, OC*C, 0.05)), Host(randn(rng, OC, 0.1))
	out, outg := d.Alloc(N*OC), d.Alloc(N*OC)
	var ts [2][]time.Duration
	for range b.N {
		for v := range 2 {
			t0 := time.Now()
			if v == 0 {
				MatmulForward(d, out, inp, w, bias, N, C, OC)
			} else {
				MatmulGeluForward(d, out, outg, inp, w, bias, N, C, OC)
			}
			ts[v] = append(ts[v], time.Since(t0))
		}
	}
	for v, name := range []string{"plain", "gelu"} {
		slices.Sort(ts[v])
		b.ReportMetric(float64(ts[v][len(ts[v])/2].Microseconds())/1000, name+"_med_ms")
		b.ReportMetric(float64(ts[v][0].Microseconds())/1000, name+"_best_ms")
	}
}
