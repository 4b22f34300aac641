package kernels

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// Benchmarks at the shapes of GPT config "small" (V512 T256 L6 H6 d384 B8):
// N = B*T = 2048 rows. Run with e.g.
//
//	go test -run '^$' -bench . -benchtime 20x ./kernels/

// gemmShapes are (m, k, n, transA, transB) of the model's products.
var gemmShapes = []struct {
	name           string
	m, k, n        int
	transA, transB bool
}{
	{"qkv_fwd_2048x384x1152", 2048, 384, 1152, false, false},
	{"fc_fwd_2048x384x1536", 2048, 384, 1536, false, false},
	{"proj_fwd_2048x1536x384", 2048, 1536, 384, false, false},
	{"lmhead_fwd_2048x384x512_T", 2048, 384, 512, false, true},
	{"fc_dinp_2048x1536x384_T", 2048, 1536, 384, false, true},
	{"fc_dw_384x2048x1536_TA", 384, 2048, 1536, true, false},
	{"decode_8x384x1152", 8, 384, 1152, false, false},
	{"decode_8x1536x384", 8, 1536, 384, false, false},
}

func benchGemm(b *testing.B, d *CPU, m, k, n int, ta, tb bool, serial bool) {
	rng := newRNG(1)
	a, bb, c := randn(rng, m*k, 1), randn(rng, k*n, 1), make([]float32, m*n)
	lda, ldb := k, n
	if ta {
		lda = m
	}
	if tb {
		ldb = k
	}
	b.ResetTimer()
	for range b.N {
		if serial {
			gemmSerial(ta, tb, m, n, k, 1, a, lda, bb, ldb, 0, c, n)
		} else {
			d.Gemm(ta, tb, m, n, k, 1, Host(a), lda, Host(bb), ldb, 0, Host(c), n)
		}
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkGemm: the device's Gemm (goroutine bands over single-threaded
// gemmSerial) at each thread count.
func BenchmarkGemm(b *testing.B) {
	for _, threads := range []int{1, 2} {
		d := NewCPU(threads)
		for _, s := range gemmShapes {
			b.Run(fmt.Sprintf("%s/%s/threads=%d", gemmBackend, s.name, threads), func(b *testing.B) {
				benchGemm(b, d, s.m, s.k, s.n, s.transA, s.transB, false)
			})
		}
	}
}

// BenchmarkGemmBLASPool: one gemmSerial call with OpenBLAS's own pool of 2 threads,
// to compare against BenchmarkGemm's goroutine split (no-op without cgo).
func BenchmarkGemmBLASPool(b *testing.B) {
	setBLASThreads(2)
	defer setBLASThreads(1)
	for _, s := range gemmShapes {
		b.Run(fmt.Sprintf("%s/%s", gemmBackend, s.name), func(b *testing.B) {
			benchGemm(b, nil, s.m, s.k, s.n, s.transA, s.transB, true)
		})
	}
}

func BenchmarkAttention(b *testing.B) {
	B, T, C, NH := 8, 256, 384, 6
	d := NewCPU(0)
	rng := newRNG(2)
	qkv, dout := randn(rng, B*T*3*C, 1), randn(rng, B*T*C, 1)
	out, att, dqkv := d.Alloc(B*T*C), d.Alloc(B*NH*T*T), d.Alloc(B*T*3*C)
	b.Run("forward", func(b *testing.B) {
		for range b.N {
			d.AttentionForward(out, att, Host(qkv), B, T, C, NH)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for range b.N {
			d.AttentionBackward(dqkv, Host(dout), Host(qkv), att, B, T, C, NH)
		}
	})
}

// BenchmarkAttentionCached: one decode step for 8 slots at position 128 of 256.
func BenchmarkAttentionCached(b *testing.B) {
	S, maxT, C, NH := 8, 256, 384, 6
	d := NewCPU(0)
	rng := newRNG(3)
	kc, vc := randn(rng, S*maxT*C, 1), randn(rng, S*maxT*C, 1)
	qkv := randn(rng, S*3*C, 1)
	out := d.Alloc(S * C)
	slot, pos := make([]int32, S), make([]int32, S)
	for i := range slot {
		slot[i], pos[i] = int32(i), 128
	}
	for range b.N {
		d.AttentionCached(out, Host(qkv), Host(kc), Host(vc), slot, pos, S, C, NH, maxT)
	}
}

func BenchmarkLayerNorm(b *testing.B) {
	N, C := 2048, 384
	d := NewCPU(0)
	rng := newRNG(4)
	inp, w, bias, dout := randn(rng, N*C, 1), randn(rng, C, 1), randn(rng, C, 1), randn(rng, N*C, 1)
	out, mean, rstd := d.Alloc(N*C), d.Alloc(N), d.Alloc(N)
	dinp, dw, db := d.Alloc(N*C), d.Alloc(C), d.Alloc(C)
	b.Run("forward", func(b *testing.B) {
		for range b.N {
			d.LayerNormForward(out, mean, rstd, Host(inp), Host(w), Host(bias), N, C, 1e-5)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for range b.N {
			d.LayerNormBackward(dinp, dw, db, Host(dout), Host(inp), Host(w), mean, rstd, N, C)
		}
	})
}

func BenchmarkGelu(b *testing.B) {
	n := 2048 * 1536
	d := NewCPU(0)
	rng := newRNG(5)
	inp, dout := randn(rng, n, 1), randn(rng, n, 1)
	out, dinp := d.Alloc(n), d.Alloc(n)
	b.Run("forward", func(b *testing.B) {
		for range b.N {
			d.GeluForward(out, Host(inp), n)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for range b.N {
			d.GeluBackward(dinp, Host(inp), Host(dout), n)
		}
	})
}

func BenchmarkLogProb(b *testing.B) {
	N, V := 2048, 512
	d := NewCPU(0)
	rng := newRNG(6)
	logits, tg := randn(rng, N*V, 2), randTokens(rng, N, V)
	logp, dlogits, dlogp := d.Alloc(N), d.Alloc(N*V), randn(rng, N, 1)
	b.Run("forward", func(b *testing.B) {
		for range b.N {
			d.LogProbForward(logp, Host(logits), tg, N, V)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for range b.N {
			d.LogProbBackward(dlogits, Host(logits), tg, dlogp, N, V)
		}
	})
}

func BenchmarkAdamW(b *testing.B) {
	n := 11_000_000 // about GPT "small"'s parameter count
	d := NewCPU(0)
	p, g, m, v := d.Alloc(n), d.Alloc(n), d.Alloc(n), d.Alloc(n)
	for range b.N {
		d.AdamW(p, g, m, v, 1, 1e-3, 0.9, 0.95, 1e-8, 0.1)
	}
}

// TestMain runs the tests and benchmarks as troupe runs its ops: with
// SpareP's spare P unless GOMAXPROCS is set (cmd/troupe does the same). The
// testing package sets GOMAXPROCS back to its -cpu value (by default the
// value when the tests start) before each benchmark's timed runs, so a
// benchmark that called SpareP itself ran its sub-benchmarks at GOMAXPROCS 2:
// the 2-thread sgemm at 2048x384x1152 read a median of 288 GFLOP/s that way
// against 366-374 at 3 (same binary).
func TestMain(m *testing.M) {
	SparePUnlessSet()
	fmt.Fprintf(os.Stderr, "kernels: gemm backend %s\n", NewCPU(0).Backend())
	os.Exit(m.Run())
}

// BenchmarkAdamWStream A/B-compares, in one process, AdamW (with clipping's
// gscale folded in) writing with streaming stores and with plain stores, on
// GPT-2's 124M and config small's 11M parameters, alternating; it reports
// each one's median time and GB/s (7 buffer passes: 4 read, 3 written).
//
//	go test -run '^$' -bench AdamWStream -benchtime 20x ./kernels/
func BenchmarkAdamWStream(b *testing.B) {
	defer func(v bool) { adamwStream = v }(adamwStream)
	for _, n := range []int{124_475_904, 10_802_688} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := NewCPU(0)
			rng := newRNG(3)
			p, g, m, v := Host(randn(rng, n, 0.02)), Host(randn(rng, n, 0.02)), d.Alloc(n), d.Alloc(n)
			var ts [2][]time.Duration
			for i := range b.N {
				for s := range 2 {
					adamwStream = s == 1
					t0 := time.Now()
					d.adamWScaled(p, g, m, v, 0.999, i+1, 1e-4, 0.9, 0.95, 1e-8, 0.1)
					ts[s] = append(ts[s], time.Since(t0))
				}
			}
			for s, name := range []string{"plain", "stream"} {
				slices.Sort(ts[s])
				md := ts[s][len(ts[s])/2]
				b.ReportMetric(float64(md.Microseconds())/1000, name+"_median_ms")
				b.ReportMetric(7*4*float64(n)/md.Seconds()/1e9, name+"_GB/s")
			}
		})
	}
}
