package kernels

import (
	"fmt"
	"testing"
)

// benchDecodeWeights is one decode step's weights of GPT "small" (6 layers of
// qkv, proj, fc, fcproj), distinct matrices so the stream is the real 42 MB.
type decodeMat struct {
	w    Tensor
	k, n int
}

func decodeMats() []decodeMat {
	const C, L = 384, 6
	rng := newRNG(7)
	var ms []decodeMat
	for l := 0; l < L; l++ {
		for _, s := range [][2]int{{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}} {
			ms = append(ms, decodeMat{Host(randn(rng, s[0]*s[1], 0.02)), s[0], s[1]})
		}
	}
	return ms
}

// BenchmarkDecodeGemms: the 24 weight products of one batch-8 decode step.
func BenchmarkDecodeGemms(b *testing.B) {
	const M = 8
	d := NewCPU(0)
	ms := decodeMats()
	rng := newRNG(8)
	a := Host(randn(rng, M*4*384, 1))
	out := d.Alloc(M * 4 * 384)
	bytes := 0
	for _, m := range ms {
		bytes += 4 * m.k * m.n
	}
	b.ResetTimer()
	for range b.N {
		for _, m := range ms {
			d.Gemm(false, false, M, m.n, m.k, 1, a, m.k, m.w, m.n, 0, out, m.n)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(bytes)/sec/1e9, "GB/s")
	b.ReportMetric(sec*1e6, "us/step")
}

// BenchmarkDecodeGemmsSerial: the same products through gemmSerial on one goroutine.
func BenchmarkDecodeGemmsSerial(b *testing.B) {
	const M = 8
	ms := decodeMats()
	rng := newRNG(8)
	a := randn(rng, M*4*384, 1)
	out := make([]float32, M*4*384)
	bytes := 0
	for _, m := range ms {
		bytes += 4 * m.k * m.n
	}
	b.ResetTimer()
	for range b.N {
		for _, m := range ms {
			gemmSerial(false, false, M, m.n, m.k, 1, a, m.k, m.w.F, m.n, 0, out, m.n)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(bytes)/sec/1e9, "GB/s")
	b.ReportMetric(sec*1e6, "us/step")
}

// BenchmarkScoreLinears: one block's four products at N=640 rows (the scoring
// bench's 8 x 80), fused (InferLinear) against MatmulForward + AddInto + GELU.
func BenchmarkScoreLinears(b *testing.B) {
	const N, C = 640, 384
	d := NewCPU(0)
	rng := newRNG(9)
	w := func(n int) Tensor { return Host(randn(rng, n, 0.02)) }
	qkvw, qkvb, pw, pb, fw, fb, f2w, f2b := w(C*3*C), w(3*C), w(C*C), w(C), w(C*4*C), w(4*C), w(4*C*C), w(C)
	x, ln, qkv, tmp, fch, fg := w(N*C), w(N*C), d.Alloc(N*3*C), d.Alloc(N*C), d.Alloc(N*4*C), d.Alloc(N*4*C)
	for _, v := range []int{0, 1, 2} {
		fused := v > 0
		b.Run(fmt.Sprintf("fused=%v/bands=%d", fused, v), func(b *testing.B) {
			defer func(n int) { inferBandsPerThread = n }(inferBandsPerThread)
			inferBandsPerThread = max(1, v)
			for range b.N {
				if fused {
					InferLinear(d, qkv, ln, qkvw, qkvb, Tensor{}, N, C, 3*C, false, false)
					InferLinear(d, x, ln, pw, pb, tmp, N, C, C, true, false)
					InferLinear(d, fg, ln, fw, fb, fch, N, C, 4*C, false, true)
					InferLinear(d, x, fg, f2w, f2b, tmp, N, 4*C, C, true, false)
				} else {
					MatmulForward(d, qkv, ln, qkvw, qkvb, N, C, 3*C)
					MatmulForward(d, tmp, ln, pw, pb, N, C, C)
					d.AddInto(x, tmp)
					MatmulForward(d, fch, ln, fw, fb, N, C, 4*C)
					d.GeluForward(fg, fch, N*4*C)
					MatmulForward(d, tmp, fg, f2w, f2b, N, 4*C, C)
					d.AddInto(x, tmp)
				}
			}
			b.ReportMetric(float64(2*N*12*C*C)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkDecodeInferLinear: the 24 products of one batch-8 decode step through
// InferLinear (streaming kernel, bias fused, two column bands).
func BenchmarkDecodeInferLinear(b *testing.B) {
	const M = 8
	d := NewCPU(0)
	ms := decodeMats()
	rng := newRNG(8)
	a := Host(randn(rng, M*4*384, 1))
	out := d.Alloc(M * 4 * 384)
	bias := Host(randn(rng, 4*384, 1))
	bytes := 0
	for _, m := range ms {
		bytes += 4 * m.k * m.n
	}
	for _, static := range []bool{true, false} {
		b.Run(fmt.Sprintf("static=%v", static), func(b *testing.B) {
			defer func(s bool) { inferPieceStatic = s }(inferPieceStatic)
			inferPieceStatic = static
			for range b.N {
				for _, m := range ms {
					InferLinear(d, out, a, m.w, bias, Tensor{}, M, m.k, m.n, false, false)
				}
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(bytes)/sec/1e9, "GB/s")
			b.ReportMetric(sec*1e6, "us/step")
		})
	}
}
