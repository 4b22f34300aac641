//go:build cgo && !purego

package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
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
	cases := []gemmPackedCase{
		{1, 1, 1, 0, 1, 0},
		{13, 33, 7, 1, 1, 0},       // one row and one column past a tile
		{11, 31, 5, 3, 1, 1},       // less than one tile
		{25, 65, 513, 2, 0.5, 1},   // two depth blocks of 257 (one where kcWhole is 768)
		{37, 100, 1100, 1, 1, 0.5}, // three depth blocks
		{24, 700, 500, 4, -1, 0},   // two column blocks (NC 352)
		{50, 1500, 600, 0, 1, 1},   // column and depth blocks, ragged
		{30, 90, 768, 1, 1, 1},     // K = 768: two depth blocks of 384, or one (kcWhole)
		{26, 70, 800, 0, 1, 0},     // two depth blocks of 400 either way
		{12, 32, 384, 0, 1, 0},     // exact tile
		{130, 17, 40, 5, 2, 1},     // narrow
	}
	rng := newRNG(11)
	// Every case with depth blocks of at most 512 and with kcWhole's, and
	// with a transposed A read in place (N <= 512) and packed.
	defer setKCWhole(kcWhole)
	defer resetGemmDirectT()
	for _, kw := range []int{512, kcWhole} {
		setKCWhole(kw)
		for _, dt := range []bool{true, false} {
			setGemmDirectT(dt)
			testGemmPackedCases(t, rng, cases)
		}
	}
}

// gemmPackedCase is a product TestGemmPacked checks: shape, C's row padding, alpha, beta.
type gemmPackedCase struct {
	m, n, k, pad int
	alpha, beta  float32
}

func testGemmPackedCases(t *testing.T, rng *rand.Rand, cases []gemmPackedCase) {
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

// TestGemmShared: a product shared between threads chunk by chunk
// (gemmShared) gives the same bits as the packed sgemm on one thread, over
// ragged tiles, chunks and column blocks, several depth blocks, all four
// transposes, alpha/beta, each epilogue, and 2 and 3 threads (the chunks then
// fall to threads differently from run to run).
func TestGemmShared(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512F")
	}
	rng := newRNG(71)
	type tc struct {
		m, n, k     int
		alpha, beta float32
		epi         int // 0 none, 1 bias, 2 bias+res, 3 bias+gelu with gout, 4 dgelu
	}
	cases := []tc{
		{200, 100, 64, 1, 0, 0},
		{301, 1300, 384, 1, 0, 1},   // two column blocks, ragged rows and columns
		{257, 383, 1100, 0.5, 1, 0}, // three depth blocks, direct A (n <= 512)
		{500, 700, 777, 1, 0.5, 2},  // column and depth blocks
		{96, 2000, 130, 1, 0, 3},    // many column blocks of one chunk row
		{130, 384, 1536, 1, 0, 4},   // K x 160 column blocks
		{61, 67, 2100, -1, 1, 0},
	}
	for _, c := range cases {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			if c.epi != 0 && tr[0] {
				continue // the epilogues are only used with A as stored
			}
			m, n, k := c.m, c.n, c.k
			a, b := randn(rng, m*k, 1), randn(rng, k*n, 1)
			lda, ldb := k, n
			if tr[0] {
				lda = m
			}
			if tr[1] {
				ldb = k
			}
			c0 := randn(rng, m*n, 1)
			var e *gemmEpilogue
			switch c.epi {
			case 1:
				e = &gemmEpilogue{bias: randn(rng, n, 1)}
			case 2:
				e = &gemmEpilogue{bias: randn(rng, n, 1), res: randn(rng, m*n, 1), ldr: n}
			case 3:
				e = &gemmEpilogue{bias: randn(rng, n, 1), gout: make([]float32, m*n), ldg: n, gelu: true}
			case 4:
				e = &gemmEpilogue{dgx: randn(rng, m*n, 1), ldx: n}
			}
			want := slices.Clone(c0)
			var wantG []float32
			if !gemmPackedEpi(tr[0], tr[1], m, n, k, c.alpha, a, lda, b, ldb, c.beta, want, n, e) {
				t.Fatal("gemmPackedEpi refused")
			}
			if e != nil && e.gout != nil {
				wantG = slices.Clone(e.gout)
				clear(e.gout)
			}
			for _, threads := range []int{2, 3} {
				for rep := range 3 {
					got := slices.Clone(c0)
					what := fmt.Sprintf("%dx%dx%d trans=%v epi=%d threads=%d rep=%d", m, n, k, tr, c.epi, threads, rep)
					d := NewCPU(threads)
					if !d.gemmSharedRun(sharedPlan(tr[0], m, n, k, lda), tr[0], tr[1], m, n, k, c.alpha, a, lda, b, ldb, c.beta, got, n, e, nil) {
						t.Fatalf("%s: gemmShared refused", what)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("%s: C differs from the one-thread product", what)
					}
					if wantG != nil && !slices.Equal(e.gout, wantG) {
						t.Fatalf("%s: GELU output differs from the one-thread product", what)
					}
				}
			}
		}
	}
	// Gemm shares the deep weight gradients gemmSharedDeep names (small's
	// attention-output one here): the packed kernel's bits, not OpenBLAS's.
	m, n, k := 384, 384, 2048
	a, b := randn(rng, k*m, 1), randn(rng, k*n, 1)
	want, got := make([]float32, m*n), make([]float32, m*n)
	gemmPacked(true, false, m, n, k, 1, a, m, b, n, 0, want, n)
	NewCPU(2).Gemm(true, false, m, n, k, 1, Host(a), m, Host(b), n, 0, Host(got), n)
	if !slices.Equal(got, want) {
		t.Fatalf("Gemm TN %dx%dx%d on 2 threads: not the packed kernel's result (not shared)", m, k, n)
	}
}

// BenchmarkGemmShared A/B-compares, in one process on 2 threads, each
// product of a small training step (whole products: rows N = 2048) shared
// chunk by chunk (gemmShared) and in one fixed band per thread (useShared
// off), alternating; it reports each one's best and median GFLOP/s.
//
//	go test -run '^$' -bench GemmShared -benchtime 30x ./kernels/
func BenchmarkGemmShared(b *testing.B) {
	defer func(v bool) { useShared = v }(useShared)
	shapes := []struct {
		m, k, n int
		ta, tb  bool
	}{
		{2048, 384, 1152, false, false}, {2048, 384, 384, false, false}, {2048, 384, 1536, false, false},
		{2048, 1536, 384, false, false}, {2048, 1152, 384, false, true}, {2048, 384, 1536, false, true},
		{2048, 1536, 384, false, true}, {2048, 384, 512, false, true}, {2048, 512, 384, false, false},
		{384, 2048, 1152, true, false}, {384, 2048, 1536, true, false}, {384, 2048, 384, true, false},
		{1536, 2048, 384, true, false},
		// gpt2 (B4 T256: rows 1024)
		{1024, 768, 2304, false, false}, {1024, 768, 3072, false, false}, {1024, 3072, 768, false, false},
		{1024, 768, 768, false, false}, {1024, 2304, 768, false, true}, {1024, 3072, 768, false, true},
		{1024, 768, 3072, false, true},
		{768, 1024, 2304, true, false}, {768, 1024, 3072, true, false}, {3072, 1024, 768, true, false},
	}
	d := NewCPU(2)
	for _, s := range shapes {
		b.Run(fmt.Sprintf("%dx%dx%d/%s", s.m, s.k, s.n, map[[2]bool]string{{}: "NN", {false, true}: "NT", {true, false}: "TN"}[[2]bool{s.ta, s.tb}]), func(b *testing.B) {
			rng := newRNG(1)
			m, n, k := s.m, s.n, s.k
			a, bb, c := Host(randn(rng, m*k, 1)), Host(randn(rng, k*n, 1)), Host(make([]float32, m*n))
			lda, ldb := k, n
			if s.ta {
				lda = m
			}
			if s.tb {
				ldb = k
			}
			var ts [2][]time.Duration
			for range b.N {
				for v := range 2 {
					useShared = v == 1
					t0 := time.Now()
					d.Gemm(s.ta, s.tb, m, n, k, 1, a, lda, bb, ldb, 0, c, n)
					ts[v] = append(ts[v], time.Since(t0))
				}
			}
			flop := 2 * float64(m) * float64(n) * float64(k)
			for v, name := range []string{"bands", "shared"} {
				slices.Sort(ts[v])
				b.ReportMetric(flop/ts[v][0].Seconds()/1e9, name+"_best")
				b.ReportMetric(flop/ts[v][len(ts[v])/2].Seconds()/1e9, name+"_median")
			}
		})
	}
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
		{384, 2048, 576}, {384, 2048, 768}, {1536, 2048, 192}, {768, 2048, 384}, {192, 2048, 384},
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

// TestInferLinearPackedSplits: inferLinear's packed path in each of its
// splits (row bands, column bands, shared) and on 1 and 2 threads, against
// the reference, with bias, residual and GELU, over depth blocks (K > 512)
// and ragged tiles; the shared product bit for bit as the row bands.
func TestInferLinearPackedSplits(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512F")
	}
	defer func(v, s bool) { inferPackedByCols, useShared = v, s }(inferPackedByCols, useShared)
	rng := newRNG(63)
	var cases []inferCase
	for _, sh := range [][3]int{{17, 40, 33}, {100, 600, 70}, {77, 1100, 161}, {200, 384, 130}} {
		for mode := 0; mode < 8; mode++ {
			cases = append(cases, newInferCase(rng, sh[0], sh[1], sh[2], mode, 0.1))
		}
	}
	for _, threads := range []int{1, 2} {
		d := NewCPU(threads)
		for _, c := range cases {
			var rows []float32
			for split, name := range []string{"rows", "cols", "shared"} {
				inferPackedByCols, useShared = split == 1, split == 2
				what := fmt.Sprintf("%s threads=%d %s", name, threads, c.what)
				got := c.run(d, Tensor{})
				closeTo(t, what, got, c.want, 1e-4*float64(c.K)/100, 1e-4)
				if split == 0 {
					rows = got
				} else if split == 2 && !slices.Equal(got, rows) {
					t.Errorf("%s: not bit for bit the row bands' result", what)
				}
			}
		}
	}
}

// BenchmarkInferLinearPacked A/B-compares, in one process, the scoring shapes'
// four products of a block (N = 640 rows, the bench's 8 x 80; config small)
// through InferLinear: OpenBLAS row bands with the bias pre-filled and GELU per
// band, against the packed sgemm with the epilogue fused, split by rows and by
// columns, and shared (gemmShared). Each iteration runs all four, alternating;
// best and median times reported.
func BenchmarkInferLinearPacked(b *testing.B) {
	const N, C = 640, 384
	defer func(p, c, s bool) { inferPacked, inferPackedByCols, useShared = p, c, s }(inferPacked, inferPackedByCols, useShared)
	rng := newRNG(9)
	w := func(n int) Tensor { return Host(randn(rng, n, 0.02)) }
	qkvw, qkvb, pw, pb, fw, fb, f2w, f2b := w(C*3*C), w(3*C), w(C*C), w(C), w(C*4*C), w(4*C), w(4*C*C), w(C)
	x, ln, qkv, fg := w(N*C), w(N*C), Host(make([]float32, N*3*C)), Host(make([]float32, N*4*C))
	names := []string{"openblas", "packed_rows", "packed_cols", "packed_shared"}
	for _, threads := range []int{1, 2} {
		d := NewCPU(threads)
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			ts := make([][]time.Duration, len(names))
			for range b.N {
				for v := range names {
					inferPacked, inferPackedByCols, useShared = v > 0, v == 2, v == 3
					t0 := time.Now()
					InferLinear(d, qkv, ln, qkvw, qkvb, Tensor{}, N, C, 3*C, false, false)
					InferLinear(d, x, ln, pw, pb, Tensor{}, N, C, C, true, false)
					InferLinear(d, fg, ln, fw, fb, Tensor{}, N, C, 4*C, false, true)
					InferLinear(d, x, fg, f2w, f2b, Tensor{}, N, 4*C, C, true, false)
					ts[v] = append(ts[v], time.Since(t0))
				}
			}
			flop := float64(2 * N * 12 * C * C)
			for v, name := range names {
				slices.Sort(ts[v])
				b.ReportMetric(flop/ts[v][0].Seconds()/1e9, fmt.Sprintf("%d_%s_best_GFLOP/s", v, name))
				b.ReportMetric(flop/ts[v][len(ts[v])/2].Seconds()/1e9, fmt.Sprintf("%d_%s_median_GFLOP/s", v, name))
			}
		})
	}
}

// TestPackedClass: a workspace's size class holds at least n floats, at
// most 25% more (from 64), and a buffer of the class's size maps back to
// the same class (gemmPackedPut files it where gemmPackedBuf looks).
func TestPackedClass(t *testing.T) {
	for n := 1; n < 1<<22; n += 1 + n/97 {
		idx, size := packedClass(n)
		if size < n || (n > 64 && 4*size > 5*n) || idx < 0 || idx >= packedClasses {
			t.Fatalf("packedClass(%d) = %d, %d floats", n, idx, size)
		}
		if i2, s2 := packedClass(size); i2 != idx || s2 != size {
			t.Fatalf("packedClass(%d) = %d, %d but packedClass(%d) = %d, %d", n, idx, size, size, i2, s2)
		}
	}
}

// TestPackedWorkspaceReuse: a workspace given back is the one the next
// request of its class gets, and one that would take the free lists past
// gemmPackedHeld is not kept.
func TestPackedWorkspaceReuse(t *testing.T) {
	p := gemmPackedBuf(300000)
	gemmPackedPut(p)
	if q := gemmPackedBuf(290000); q != p {
		t.Fatalf("a workspace of the same class was not reused")
	} else {
		gemmPackedPut(q)
	}
	gemmPackedWS.Lock()
	held := gemmPackedWS.held
	gemmPackedWS.Unlock()
	defer func(v int) { gemmPackedHeld = v }(gemmPackedHeld)
	gemmPackedHeld = held + 1000
	big := make([]float32, 2048)
	gemmPackedPut(&big)
	gemmPackedWS.Lock()
	defer gemmPackedWS.Unlock()
	if gemmPackedWS.held != held {
		t.Fatalf("a workspace of %d floats was kept (free lists at %d, bound %d)", len(big), gemmPackedWS.held, gemmPackedHeld)
	}
}

// BenchmarkGemmDirect A/B-compares, in one process on 2 threads, the training
// products of N > 512 with A (not transposed) read in place and packed
// (tg_direct's wide case on and off), alternating (abGemmMedians); it reports
// each one's median GFLOP/s. K = 3072 (rows 12 KB apart) stays packed either
// way.
//
//	go test -run '^$' -bench GemmDirect -benchtime 25x ./kernels/
func BenchmarkGemmDirect(b *testing.B) {
	defer setGemmDirectWide(true)
	d := NewCPU(2)
	for _, s := range []struct {
		m, k, n int
		tb      bool
	}{{1024, 768, 768, false}, {1024, 768, 2304, false}, {1024, 768, 3072, false}, {1024, 2304, 768, true},
		{1024, 768, 3072, true}, {2048, 384, 1152, false}, {2048, 384, 1536, false}, {2048, 384, 1536, true},
		{1024, 3072, 768, false}} {
		b.Run(fmt.Sprintf("%dx%dx%d/%s", s.m, s.k, s.n, map[bool]string{false: "NN", true: "NT"}[s.tb]), func(b *testing.B) {
			rng := newRNG(1)
			a, bb, c := randn(rng, s.m*s.k, 1), randn(rng, s.k*s.n, 1), make([]float32, s.m*s.n)
			ldb := s.n
			if s.tb {
				ldb = s.k
			}
			abGemmMedians(b, 2*float64(s.m*s.n*s.k), func(v int) { setGemmDirectWide(v == 1) }, func() {
				d.Gemm(false, s.tb, s.m, s.n, s.k, 1, Host(a), s.k, Host(bb), ldb, 0, Host(c), s.n)
			})
		})
	}
}

// abGemmMedians times run b.N times with each of two settings (set(0): the
// "packed" one, set(1): "direct"), alternating ABBA (abTimes), and reports
// each one's median GFLOP/s for flop per run.
func abGemmMedians(b *testing.B, flop float64, set func(v int), run func()) {
	abGemmMediansNamed(b, [2]string{"packed", "direct"}, flop, set, run)
}

// abGemmMediansNamed is abGemmMedians with the two settings' names.
func abGemmMediansNamed(b *testing.B, names [2]string, flop float64, set func(v int), run func()) {
	ts := abTimes(b.N, set, func(int) { run() })
	for v, name := range names {
		b.ReportMetric(flop/ts[v][len(ts[v])/2].Seconds()/1e9, name+"_GFLOP/s")
	}
}

// BenchmarkGemmDirectT A/B-compares, in one process on 2 threads, weight
// gradients (dW = X^T dY: M = C, N = OC, K = tokens) of the gpt2 and small
// shapes with the transposed A read in place and packed (tg_direct's
// transposed case on and off), alternating (abGemmMedians); it reports each
// one's median GFLOP/s. Only N <= 512 reads in place (the wider ones run
// packed either way; set TG_DIRECT_N higher to compare them).
//
//	go test -run '^$' -bench GemmDirectT -benchtime 30x ./kernels/
func BenchmarkGemmDirectT(b *testing.B) {
	defer resetGemmDirectT()
	abWeightGrads(b, [][3]int{{768, 768, 1024}, {3072, 768, 1024}, {1536, 384, 2048}, {384, 384, 2048},
		{512, 384, 2048}, {384, 1152, 2048}}, [2]string{"packed", "direct"}, func(v int) { setGemmDirectT(v == 1) })
}

// abWeightGrads runs abGemmMediansNamed on each weight-gradient shape
// (M = C, N = OC, K = tokens; A transposed) on 2 threads, a sub-benchmark
// each.
func abWeightGrads(b *testing.B, shapes [][3]int, names [2]string, set func(v int)) {
	d := NewCPU(2)
	for _, s := range shapes {
		m, n, k := s[0], s[1], s[2]
		b.Run(fmt.Sprintf("%dx%dx%d", m, n, k), func(b *testing.B) {
			rng := newRNG(1)
			a, bb, c := randn(rng, m*k, 1), randn(rng, k*n, 1), make([]float32, m*n)
			abGemmMediansNamed(b, names, 2*float64(m*n*k), set, func() {
				d.Gemm(true, false, m, n, k, 1, Host(a), m, Host(bb), n, 1, Host(c), n)
			})
		})
	}
}

// BenchmarkGemmPackKB A/B-compares, in one process on 2 threads, the weight
// gradients (dW = X^T dY: M = C, N = OC, K = tokens) of small's and gpt2's
// shapes with a transposed A packed k by k across all the chunk's panels
// (tg_pack_kb 1, the order before) and in blocks of TG_PACK_KB depths
// panel by panel, alternating (abGemmMediansNamed); it reports each one's
// median GFLOP/s.
//
//	go test -run '^$' -bench GemmPackKB -benchtime 30x ./kernels/
func BenchmarkGemmPackKB(b *testing.B) {
	defer setPackKB(packKB)
	abWeightGrads(b, [][3]int{{1536, 384, 2048}, {384, 384, 2048}, {384, 1152, 2048}, {384, 1536, 2048},
		{768, 768, 1024}, {3072, 768, 1024}, {768, 3072, 1024}}, [2]string{"kbyk", "blocked"},
		func(v int) { setPackKB([]int{1, packKB}[v]) })
}

// BenchmarkTrainPackKB A/B-compares, in one process, the small step with its
// transposed A packed k by k (tg_pack_kb 1) and in blocks of TG_PACK_KB
// depths, alternating step by step.
//
//	go test -run '^$' -bench TrainPackKB -benchtime 40x ./kernels/
func BenchmarkTrainPackKB(b *testing.B) {
	defer setPackKB(packKB)
	abSteps(b, [2]string{"kbyk", "blocked"}, func(v int) { setPackKB([]int{1, packKB}[v]) })
}

// BenchmarkTrainDirect A/B-compares, in one process, the small step with
// tg_direct's wide case off and on, alternating step by step.
//
//	go test -run '^$' -bench TrainDirect -benchtime 40x ./kernels/
func BenchmarkTrainDirect(b *testing.B) {
	defer setGemmDirectWide(true)
	abSteps(b, [2]string{"packed", "direct"}, func(v int) { setGemmDirectWide(v == 1) })
}

// BenchmarkTrainDirectT A/B-compares, in one process, the small step with
// its transposed A (the weight gradients' X^T) packed and read in place
// (tg_direct's transposed case), alternating step by step.
//
//	go test -run '^$' -bench TrainDirectT -benchtime 40x ./kernels/
func BenchmarkTrainDirectT(b *testing.B) {
	defer resetGemmDirectT()
	abSteps(b, [2]string{"packed", "direct"}, func(v int) { setGemmDirectT(v == 1) })
}

// TestWeightBiasGrad: MatmulBackward's weight gradient with the bias
// gradient's column sums taken while packing (weightBiasGrad) gives Gemm's
// weight gradient bit for bit, and a bias gradient within rounding of the
// reference's, the same bits run after run (and on 3 threads where Gemm
// shares the product there too); shapes
// with one and several depth blocks and ragged micro-panels.
func TestWeightBiasGrad(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512F")
	}
	rng := newRNG(71)
	taken := 0
	for _, sh := range [][3]int{{2048, 384, 1152}, {1000, 200, 333}, {1536, 192, 72}} {
		N, C, OC := sh[0], sh[1], sh[2]
		inp, dout := randn(rng, N*C, 1), randn(rng, N*OC, 1)
		dw0, db0 := randn(rng, C*OC, 1), randn(rng, OC, 1)
		wantB := slices.Clone(db0)
		refBiasBackward(wantB, dout, N, OC)
		var firstB []float32
		for _, threads := range []int{2, 3} {
			d := NewCPU(threads)
			wantW := slices.Clone(dw0)
			d.Gemm(true, false, C, OC, N, 1, Host(inp), C, Host(dout), OC, 1, Host(wantW), OC)
			for rep := range 2 {
				dw, db := slices.Clone(dw0), slices.Clone(db0)
				if !d.weightBiasGrad(Host(dw), Host(db), Host(dout), Host(inp), N, C, OC) {
					if _, _, share := d.gemmSplit(true, false, C, OC, N); share {
						t.Fatalf("%v threads %d: weightBiasGrad refused a product Gemm shares", sh, threads)
					}
					break // Gemm does not share it: nor does weightBiasGrad
				}
				taken++
				if !slices.Equal(dw, wantW) {
					t.Fatalf("%v threads %d rep %d: dweight is not Gemm's", sh, threads, rep)
				}
				closeTo(t, fmt.Sprintf("%v threads %d dbias", sh, threads), db, wantB, 1e-4*float64(N)/100, 1e-4)
				if firstB == nil {
					firstB = db
				} else if !slices.Equal(db, firstB) {
					t.Fatalf("%v threads %d rep %d: dbias differs from the first run's bits", sh, threads, rep)
				}
			}
		}
		// Through MatmulBackward, as the model calls it.
		d := NewCPU(2)
		dw, db := slices.Clone(dw0), slices.Clone(db0)
		MatmulBackward(d, Tensor{}, Host(dw), Host(db), Host(dout), Host(inp), Tensor{}, N, C, OC)
		if firstB != nil && !slices.Equal(db, firstB) {
			t.Fatalf("%v: MatmulBackward's dbias is not weightBiasGrad's", sh)
		}
	}
	if taken < 6 {
		t.Fatalf("weightBiasGrad took %d of the products, want at least the 2-thread ones", taken)
	}
}

// BenchmarkTrainFoldBias A/B-compares, in one process, the small step with the
// bias gradients' column sums taken in the weight gradients' packing
// (weightBiasGrad) and in BiasBackward's passes, alternating step by step.
//
//	go test -run '^$' -bench TrainFoldBias -benchtime 40x ./kernels/
func BenchmarkTrainFoldBias(b *testing.B) {
	defer func(v bool) { foldBiasGrad = v }(foldBiasGrad)
	abSteps(b, [2]string{"biasbackward", "folded"}, func(v int) { foldBiasGrad = v == 1 })
}

// BenchmarkKCWhole A/B-compares, in one process, a gpt2-shaped step (B4
// T256) with its products of depth K <= 768 in one depth block (kcWhole) and
// in blocks of at most 512, alternating step by step.
//
//	go test -run '^$' -bench KCWhole -benchtime 16x -timeout 30m ./kernels/
func BenchmarkKCWhole(b *testing.B) {
	defer setKCWhole(kcWhole)
	if kcWhole <= 512 {
		b.Skip("L1d under 48 KB: products keep depth blocks of 512")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3)) // 2 op threads and a spare P, as troupe runs (SpareP)
	step, _, _ := newGPTStep(NewCPU(2), 50257, 256, 12, 12, 768, 4)
	abStepsOn(b, step, [2]string{"kc512", "whole768"}, func(v int) { setKCWhole([2]int{512, kcWhole}[v]) })
}

// TestGemmMeetBands: a product that meetBands cuts into more bands than
// threads, claimed from both ends, gives the bits of one band per thread, for
// column bands and row bands (A transposed too), and the split does engage.
func TestGemmMeetBands(t *testing.T) {
	if !gemmPackedOK {
		t.Skip("no AVX-512: the bands run on OpenBLAS")
	}
	defer func(v, s bool) { useMeet, useShared = v, s }(useMeet, useShared)
	useShared = false // the bands, as for GPT-2's LM head (too large to share)
	d := NewCPU(2)
	rng := newRNG(61)
	for _, s := range []struct {
		m, k, n int
		ta      bool
	}{{256, 256, 8192, false}, {8192, 256, 256, false}, {8192, 256, 256, true}} {
		parts, byRows, _ := d.gemmSplit(s.ta, false, s.m, s.n, s.k)
		if nb := meetBands(2, parts, byRows, s.m, s.n, s.k); nb != gemmMeetBands {
			t.Fatalf("%v: meetBands = %d, want %d", s, nb, gemmMeetBands)
		}
		a, b := Host(randn(rng, s.m*s.k, 1)), Host(randn(rng, s.k*s.n, 1))
		lda := s.k
		if s.ta {
			lda = s.m
		}
		c0 := randn(rng, s.m*s.n, 1)
		var out [2][]float32
		for v := range 2 {
			useMeet = v == 1
			c := Host(clone(c0))
			d.Gemm(s.ta, false, s.m, s.n, s.k, 1, a, lda, b, s.n, 0.5, c, s.n)
			out[v] = c.F
		}
		if !slices.Equal(out[0], out[1]) {
			t.Fatalf("%v: bands claimed from both ends differ from one band per thread", s)
		}
	}
}
