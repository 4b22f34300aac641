package kernels

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkInferHeadGPT2 alternates, in one process, the gpt2 LM head's
// log-probs for 640 rows (C=768, V=50257) composed (the (N,V) logits from Gemm,
// then InferLogProb) and InferHeadLogProb under several block sizes
// (rows, floats), and reports each median in rows/s.
func BenchmarkInferHeadGPT2(b *testing.B) {
	N, C, V := 640, 768, 50257
	rng := newRNG(7)
	x, wte := randn(rng, N*C, 1), randn(rng, V*C, 0.02)
	targets := randTokens(rng, N, V)
	d := NewCPU(0)
	logp, logits := make([]float32, N), make([]float32, N*V)
	defer func(r, f int) { inferHeadRows, inferHeadFloats = r, f }(inferHeadRows, inferHeadFloats)
	blocks := [][2]int{{0, 0}, {512, 1 << 20}, {1024, 1 << 19}, {1024, 1 << 20}, {1024, 1 << 21}}
	ts := make([][]float64, len(blocks))
	for i := 0; i < b.N+1; i++ {
		for k, blk := range blocks {
			t0 := time.Now()
			if blk[0] == 0 {
				InferHeadLogProb(plainDevice{d}, Host(logp), Host(logits), Host(x), Host(wte), targets, N, C, V, 1)
			} else {
				inferHeadRows, inferHeadFloats = blk[0], blk[1]
				InferHeadLogProb(d, Host(logp), Tensor{}, Host(x), Host(wte), targets, N, C, V, 1)
			}
			if i > 0 {
				ts[k] = append(ts[k], time.Since(t0).Seconds())
			}
		}
	}
	for k, blk := range blocks {
		slices.Sort(ts[k])
		name := "composed_rows/s"
		if blk[0] != 0 {
			name = fmt.Sprintf("r%d_f%d_rows/s", blk[0], blk[1])
		}
		b.ReportMetric(float64(N)/ts[k][len(ts[k])/2], name)
	}
}
