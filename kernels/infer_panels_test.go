package kernels

import (
	"fmt"
	"slices"
	"testing"
)

// TestPackPanelsLayout: panel p holds columns [P*p, P*p+P) of every row (P =
// panelCols: 32 for the AVX-512 kernel, 16 for the AVX2 one), zero-padded
// past OC.
func TestPackPanelsLayout(t *testing.T) {
	d := NewCPU(2)
	if !CanPackPanels(d) {
		t.Skip("no panel kernels in this build or on this CPU")
	}
	rng := newRNG(71)
	const K, OC = 5, 70
	w := randn(rng, K*OC, 1)
	dst := d.Alloc(PanelFloats(K, OC))
	for i := range dst.F {
		dst.F[i] = 99 // padding must be written, not left
	}
	PackPanels(d, dst, Host(w), K, OC)
	P := panelCols
	if P != 16 && P != 32 {
		t.Fatalf("panelCols = %d, want 16 or 32", P)
	}
	panels := (OC + P - 1) / P
	if got, want := len(dst.F), panels*P*K; got != want {
		t.Fatalf("PanelFloats(%d,%d) = %d, want %d", K, OC, got, want)
	}
	for p := 0; p < panels; p++ {
		for k := 0; k < K; k++ {
			for j := 0; j < P; j++ {
				want := float32(0)
				if col := p*P + j; col < OC {
					want = w[k*OC+col]
				}
				if got := dst.F[(p*K+k)*P+j]; got != want {
					t.Fatalf("panel %d row %d col %d = %v, want %v", p, k, j, got, want)
				}
			}
		}
	}
	expectShapePanic(t, "short dst", func() { PackPanels(d, d.Alloc(PanelFloats(K, OC)-1), Host(w), K, OC) })
}

// TestInferLinearPanelsExact: from the packed panels, few-row products equal
// InferLinear's bit for bit (bias or none, residual, GELU, partial panels, any
// thread count), so Generate's tokens do not change with the layout; more rows,
// or no panels, are InferLinear itself.
func TestInferLinearPanelsExact(t *testing.T) {
	rng := newRNG(72)
	forDevices(t, func(t *testing.T, d *CPU) {
		if !CanPackPanels(d) {
			t.Skip("no panel kernels in this build or on this CPU")
		}
		for _, N := range []int{1, 3, 8, 9, 16, 17} {
			for _, sh := range [][2]int{{1, 5}, {7, 33}, {64, 100}, {384, 1152}, {1536, 384}} {
				K, OC := sh[0], sh[1]
				w, bias := randn(rng, K*OC, 0.2), randn(rng, OC, 0.5)
				inp, res := randn(rng, N*K, 1), randn(rng, N*OC, 1)
				panels := d.Alloc(PanelFloats(K, OC))
				PackPanels(d, panels, Host(w), K, OC)
				for mode := 0; mode < 6; mode++ {
					accumulate, gelu := mode&1 != 0, mode&2 != 0
					var b Tensor
					if mode < 4 {
						b = Host(bias)
					}
					what := fmt.Sprintf("threads=%d N=%d K=%d OC=%d acc=%v gelu=%v bias=%v", d.threads, N, K, OC, accumulate, gelu, !b.Empty())
					want, got := clone(res), clone(res)
					InferLinear(d, Host(want), Host(inp), Host(w), b, Tensor{}, N, K, OC, accumulate, gelu)
					InferLinearPanels(d, Host(got), Host(inp), panels, Host(w), b, Tensor{}, N, K, OC, accumulate, gelu)
					if !slices.Equal(got, want) {
						t.Fatalf("%s: panels differ from InferLinear", what)
					}
					// And both agree with the reference.
					ref := clone(res)
					refInferLinear(ref, inp, w, b.F, N, K, OC, accumulate, gelu)
					closeTo(t, what, got, ref, 1e-4, 1e-4)
				}
			}
		}
	})
}

// BenchmarkDecodePanels: the 24 products of one batch-8 decode step of "small"
// from packed panels, beside BenchmarkDecodeInferLinear's row-major weights.
func BenchmarkDecodePanels(b *testing.B) {
	const M = 8
	d := NewCPU(0)
	if !CanPackPanels(d) {
		b.Skip("no panel kernels")
	}
	ms := decodeMats()
	rng := newRNG(8)
	a := Host(randn(rng, M*4*384, 1))
	out := d.Alloc(M * 4 * 384)
	bias := Host(randn(rng, 4*384, 1))
	panels := make([]Tensor, len(ms))
	bytes := 0
	for i, m := range ms {
		bytes += 4 * m.k * m.n
		panels[i] = d.Alloc(PanelFloats(m.k, m.n))
		PackPanels(d, panels[i], m.w, m.k, m.n)
	}
	for _, packed := range []bool{true, false} {
		b.Run(fmt.Sprintf("panels=%v", packed), func(b *testing.B) {
			for range b.N {
				for i, m := range ms {
					p := panels[i]
					if !packed {
						p = Tensor{}
					}
					InferLinearPanels(d, out, a, p, m.w, bias, Tensor{}, M, m.k, m.n, false, false)
				}
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(bytes)/sec/1e9, "GB/s")
			b.ReportMetric(sec*1e6, "us/step")
		})
	}
	b.Run("pack", func(b *testing.B) {
		for range b.N {
			for i, m := range ms {
				PackPanels(d, panels[i], m.w, m.k, m.n)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1e6, "us/all")
	})
}
