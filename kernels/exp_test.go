package kernels

import (
	"math"
	"testing"
)

// TestExpfAVX512: tg_expf (avx512_gelu.h), the exp of the GELU kernels and
// the packed sgemm's GELU epilogue, within 2 ulp of the exact e^x over the
// whole normal range, and its edges: 0 below e^-104 and for -Inf, +Inf past
// 88.73 and for +Inf, NaN for NaN, exactly 1 at 0.
func TestExpfAVX512(t *testing.T) {
	x := make([]float32, 0, 1<<20)
	for v := -87.3; v < 88.72; v += 175.0 / (1 << 20) {
		x = append(x, float32(v))
	}
	out := make([]float32, len(x))
	if !expVector(out, x) {
		t.Skip("no vector kernels in this build or on this CPU")
	}
	worst, at := 0.0, float32(0)
	for i, v := range x {
		want := math.Exp(float64(v))
		ulp := math.Ldexp(1, math.Ilogb(want)-23)
		if d := math.Abs(float64(out[i])-want) / ulp; d > worst {
			worst, at = d, v
		}
	}
	if worst > 2 {
		t.Fatalf("tg_expf is %.2f ulp off e^x at x = %g (want <= 2)", worst, at)
	}
	t.Logf("tg_expf: at most %.2f ulp from e^x on [-87.3, 88.72]", worst)
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	edge := []float32{-1000, -104.5, -inf, 89, 1e30, inf, nan, 0}
	got := make([]float32, len(edge))
	expVector(got, edge)
	for i, want := range []float32{0, 0, 0, inf, inf, inf, nan, 1} {
		g := got[i]
		if !(g == want || (math.IsNaN(float64(g)) && math.IsNaN(float64(want)))) {
			t.Errorf("tg_expf(%g) = %g, want %g", edge[i], g, want)
		}
	}
}
