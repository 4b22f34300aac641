//go:build cgo && !purego

package kernels

import (
	"fmt"
	"testing"
	"time"
)

// TestGemmPacked compares the packed AVX-512 sgemm with refGemm over shapes that
// are not multiples of the 12x32 tile or of the depth/column blocks, all four
// transposes, beta 0 and 1 (and 0.5), alpha != 1 and strides wider than the rows.
func TestGemmPacked(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512F")
	}
	type tc struct {
		m, n, k, pad int
		alpha, beta  float32
	}
	cases := []tc{
		{1, 1, 1, 0, 1, 0},
		{13, 33, 7, 1, 1, 0},       // one row and one column past a tile
		{11, 31, 5, 3, 1, 1},       // less than one tile
		{25, 65, 513, 2, 0.5, 1},   // two depth blocks (KC 257)
		{37, 100, 1100, 1, 1, 0.5}, // three depth blocks
		{24, 700, 500, 4, -1, 0},   // two column blocks (NC 352)
		{50, 1500, 600, 0, 1, 1},   // column and depth blocks, ragged
		{12, 32, 384, 0, 1, 0},     // exact tile
		{130, 17, 40, 5, 2, 1},     // narrow
	}
	rng := newRNG(11)
	for _, c := range cases {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				ldc := c.n + c.pad + 2
				a, lda, b, ldb, c0 := gemmOperands(rng, c.m, c.n, c.k, ta, tb, c.pad, ldc)
				if c.beta == 0 {
					// beta == 0 must not read C: NaN there must not leak.
					for i := range c0 {
						if i%3 == 0 {
							c0[i] = nanF32()
						}
					}
				}
				got, want := clone(c0), clone(c0)
				if !gemmPacked(ta, tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, got, ldc) {
					t.Fatalf("gemmPacked refused %+v", c)
				}
				refGemm(ta, tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, want, ldc)
				what := fmt.Sprintf("gemmPacked(%v,%v,%+v)", ta, tb, c)
				// Outside the product (the stride padding) C must be untouched,
				// NaN included: compare it bit for bit, then leave it out.
				for i := 0; i < c.m; i++ {
					for j := c.n; j < ldc && i*ldc+j < len(got); j++ {
						g, w := got[i*ldc+j], c0[i*ldc+j]
						if g != w && !(g != g && w != w) {
							t.Fatalf("%s: wrote padding C[%d,%d] = %v, was %v", what, i, j, g, w)
						}
						got[i*ldc+j], want[i*ldc+j] = 0, 0
					}
				}
				closeTo(t, what, got, want, 1e-4*float64(c.k), 1e-4)
			}
		}
	}
}

func nanF32() float32 {
	z := float32(0)
	return z / z
}

// BenchmarkGemmPacked A/B-compares, in one process, the packed AVX-512 sgemm and
// OpenBLAS (cblas_sgemm, one thread) at the model's shapes: each iteration runs
// both, alternating, and each reports its best time as GFLOP/s (the best is
// the least disturbed by other work on a shared machine), the ratio, and each
// as a percentage of the 1-thread FMA peak measured in the same process.
//
//	go test -run '^$' -bench GemmPacked -benchtime 20x ./kernels/
func BenchmarkGemmPacked(b *testing.B) {
	shapes := []struct{ m, k, n int }{
		{2048, 384, 1152}, {2048, 384, 1536}, {2048, 1536, 384},
		{1024, 768, 2304}, {1024, 3072, 768},
		{640, 384, 1152}, {640, 384, 1536}, {640, 1536, 384}, {320, 384, 1152}, {640, 384, 576},
		// one thread's band of a training product of config small
		{1024, 384, 1152}, {1024, 384, 384}, {1024, 1536, 384}, {1024, 1152, 384}, {1024, 384, 1536},
		{384, 2048, 576}, {384, 2048, 768}, {1536, 2048, 192},
		// attention blocks (T 256, head size 64)
		{128, 64, 256}, {128, 256, 64}, {64, 64, 128},
	}
	// The 1-thread FMA peak, measured here, for the % of peak each reaches.
	peak, err := MeasurePeakFMA(1, 5, 20*time.Millisecond)
	if err != nil {
		b.Logf("no FMA peak: %v", err)
	}
	for _, s := range shapes {
		for _, tr := range []struct {
			name   string
			ta, tb bool
		}{{"NN", false, false}, {"NT", false, true}, {"TN", true, false}} {
			b.Run(fmt.Sprintf("%dx%dx%d/%s", s.m, s.k, s.n, tr.name), func(b *testing.B) {
				rng := newRNG(1)
				m, n, k := s.m, s.n, s.k
				a, bb, c := randn(rng, m*k, 1), randn(rng, k*n, 1), make([]float32, m*n)
				lda, ldb := k, n
				if tr.ta {
					lda = m
				}
				if tr.tb {
					ldb = k
				}
				best := [2]time.Duration{time.Hour, time.Hour}
				for range b.N {
					for impl := range 2 {
						t0 := time.Now()
						if impl == 0 {
							gemmPacked(tr.ta, tr.tb, m, n, k, 1, a, lda, bb, ldb, 0, c, n)
						} else {
							gemmOpenBLAS(tr.ta, tr.tb, m, n, k, 1, a, lda, bb, ldb, 0, c, n)
						}
						best[impl] = min(best[impl], time.Since(t0))
					}
				}
				flop := 2 * float64(m) * float64(n) * float64(k)
				b.ReportMetric(flop/best[0].Seconds()/1e9, "packed_GFLOP/s")
				b.ReportMetric(flop/best[1].Seconds()/1e9, "openblas_GFLOP/s")
				b.ReportMetric(best[1].Seconds()/best[0].Seconds(), "speedup")
				if peak.GFLOPs > 0 {
					b.ReportMetric(100*flop/best[0].Seconds()/1e9/peak.GFLOPs, "packed_%peak")
					b.ReportMetric(100*flop/best[1].Seconds()/1e9/peak.GFLOPs, "openblas_%peak")
				}
			})
		}
	}
}

// TestInferLinearPackedSplits: inferLinear's packed path in both of its band
// splits (rows, columns) and on 1 and 2 threads, against the reference, with
// bias, residual and GELU, over depth blocks (K > 512) and ragged tiles.
func TestInferLinearPackedSplits(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512F")
	}
	defer func(v bool) { inferPackedByCols = v }(inferPackedByCols)
	rng := newRNG(63)
	for _, byCols := range []bool{false, true} {
		inferPackedByCols = byCols
		for _, threads := range []int{1, 2} {
			d := NewCPU(threads)
			for _, sh := range [][3]int{{17, 40, 33}, {100, 600, 70}, {77, 1100, 161}, {200, 384, 130}} {
				N, K, OC := sh[0], sh[1], sh[2]
				for mode := 0; mode < 8; mode++ {
					c := newInferCase(rng, N, K, OC, mode, 0.1)
					what := fmt.Sprintf("cols=%v threads=%d %s", byCols, threads, c.what)
					closeTo(t, what, c.run(d, Tensor{}), c.want, 1e-4*float64(K)/100, 1e-4)
				}
			}
		}
	}
}

// BenchmarkInferLinearPacked A/B-compares, in one process, the scoring shapes'
// four products of a block (N = 640 rows, the bench's 8 x 80; config small)
// through InferLinear: OpenBLAS row bands with the bias pre-filled and GELU per
// band, against the packed sgemm with the epilogue fused, split by rows and by
// columns. Each iteration runs all three, alternating; best times reported.
func BenchmarkInferLinearPacked(b *testing.B) {
	const N, C = 640, 384
	defer func(p, c bool) { inferPacked, inferPackedByCols = p, c }(inferPacked, inferPackedByCols)
	rng := newRNG(9)
	w := func(n int) Tensor { return Host(randn(rng, n, 0.02)) }
	qkvw, qkvb, pw, pb, fw, fb, f2w, f2b := w(C*3*C), w(3*C), w(C*C), w(C), w(C*4*C), w(4*C), w(4*C*C), w(C)
	x, ln, qkv, fg := w(N*C), w(N*C), Host(make([]float32, N*3*C)), Host(make([]float32, N*4*C))
	names := []string{"openblas", "packed_rows", "packed_cols"}
	for _, threads := range []int{1, 2} {
		d := NewCPU(threads)
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			best := make([]time.Duration, len(names))
			for v := range best {
				best[v] = time.Hour
			}
			for range b.N {
				for v := range names {
					inferPacked, inferPackedByCols = v > 0, v == 2
					t0 := time.Now()
					InferLinear(d, qkv, ln, qkvw, qkvb, Tensor{}, N, C, 3*C, false, false)
					InferLinear(d, x, ln, pw, pb, Tensor{}, N, C, C, true, false)
					InferLinear(d, fg, ln, fw, fb, Tensor{}, N, C, 4*C, false, true)
					InferLinear(d, x, fg, f2w, f2b, Tensor{}, N, 4*C, C, true, false)
					best[v] = min(best[v], time.Since(t0))
				}
			}
			flop := float64(2 * N * 12 * C * C)
			for v, name := range names {
				b.ReportMetric(flop/best[v].Seconds()/1e9, fmt.Sprintf("%d_%s_GFLOP/s", v, name))
			}
		})
	}
}
