package kernels

import (
	"fmt"
	"math"
	"testing"
)

func TestMatmulComposites(t *testing.T) {
	rng := newRNG(30)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][3]int{{7, 36, 53}, {300, 37, 129}} {
			N, C, OC := s[0], s[1], s[2]
			inp, w, b := randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1)
			dout := randn(rng, N*OC, 1)
			tol := 1e-4 * float64(max(C, N, OC))
			// Forward with and without bias.
			out, want := make([]float32, N*OC), make([]float32, N*OC)
			MatmulForward(d, Host(out), Host(inp), Host(w), Host(b), N, C, OC)
			refGemm(false, false, N, OC, C, 1, inp, C, w, OC, 0, want, OC)
			refAddBias(want, b, N, OC)
			closeTo(t, fmt.Sprintf("MatmulForward %v", s), out, want, tol, 1e-4)
			MatmulForward(d, Host(out), Host(inp), Host(w), Tensor{}, N, C, OC)
			refGemm(false, false, N, OC, C, 1, inp, C, w, OC, 0, want, OC)
			closeTo(t, fmt.Sprintf("MatmulForward no bias %v", s), out, want, tol, 1e-4)

			// Backward accumulates into existing gradients; an empty output is skipped.
			dinp, dw, db := randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1)
			dinpW, dwW, dbW := clone(dinp), clone(dw), clone(db)
			dinp0 := clone(dinp)
			MatmulBackward(d, Host(dinp), Host(dw), Host(db), Host(dout), Host(inp), Host(w), N, C, OC)
			for i := 0; i < N; i++ { // dinp = dout @ w^T, by definition
				for c := 0; c < C; c++ {
					var s float64
					for o := 0; o < OC; o++ {
						s += float64(dout[i*OC+o]) * float64(w[c*OC+o])
					}
					dinpW[i*C+c] += float32(s)
				}
			}
			refGemm(true, false, C, OC, N, 1, inp, C, dout, OC, 1, dwW, OC)
			refBiasBackward(dbW, dout, N, OC)
			closeTo(t, "MatmulBackward dinp", dinp, dinpW, tol, 1e-4)
			closeTo(t, "MatmulBackward dweight", dw, dwW, tol, 1e-4)
			closeTo(t, "MatmulBackward dbias", db, dbW, tol, 1e-4)
			// Again with only dinp (empty dweight, dbias skipped): dinp gets dout @ w^T
			// once more, which is dinpW - dinp0.
			want2 := clone(dinp)
			for i := range want2 {
				want2[i] += dinpW[i] - dinp0[i]
			}
			MatmulBackward(d, Host(dinp), Tensor{}, Tensor{}, Host(dout), Host(inp), Host(w), N, C, OC)
			closeTo(t, "MatmulBackward dinp only", dinp, want2, tol, 1e-4)

			// Trans: weight stored (OC,C).
			wt := randn(rng, OC*C, 1)
			MatmulTransForward(d, Host(out), Host(inp), Host(wt), N, C, OC)
			refGemm(false, true, N, OC, C, 1, inp, C, wt, C, 0, want, OC)
			closeTo(t, fmt.Sprintf("MatmulTransForward %v", s), out, want, tol, 1e-4)
			dinp, dwt := randn(rng, N*C, 1), randn(rng, OC*C, 1)
			dinpW, dwtW := clone(dinp), clone(dwt)
			MatmulTransBackward(d, Host(dinp), Host(dwt), Host(dout), Host(inp), Host(wt), N, C, OC)
			refGemm(false, false, N, C, OC, 1, dout, OC, wt, C, 1, dinpW, C)
			refGemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dwtW, C)
			closeTo(t, "MatmulTransBackward dinp", dinp, dinpW, tol, 1e-4)
			closeTo(t, "MatmulTransBackward dweight", dwt, dwtW, tol, 1e-4)
		}
	})
}

func TestCrossEntropy(t *testing.T) {
	rng := newRNG(31)
	d := NewCPU(2)
	N, V := 9, 53
	logits := randn(rng, N*V, 2)
	tg := randTokens(rng, N, V)
	mask := []float32{1, 0, 0.5, 1, 1, 0, 1, 0.25, 1}
	lp := make([]float32, N)
	refLogProbForward(lp, logits, tg, N, V)
	var sum, wsum float64
	for i := range lp {
		sum -= float64(mask[i]) * float64(lp[i])
		wsum += float64(mask[i])
	}
	losses := d.Alloc(N)
	got := CrossEntropyForward(d, losses, Host(logits), tg, mask, N, V)
	if math.Abs(float64(got)-sum/wsum) > 1e-5 {
		t.Fatalf("CrossEntropyForward: got %v, want %v", got, sum/wsum)
	}
	for i := range lp {
		if math.Abs(float64(losses.F[i]+lp[i])) > 1e-5 {
			t.Fatalf("CrossEntropyForward loss[%d]: got %v, want %v", i, losses.F[i], -lp[i])
		}
	}
	if got := CrossEntropyForward(d, losses, Host(logits), tg, make([]float32, N), N, V); got != 0 {
		t.Fatalf("CrossEntropyForward all masked: got %v, want 0", got)
	}
}

func TestClipGradNorm(t *testing.T) {
	d := NewCPU(2)
	for _, c := range []struct {
		g             []float32
		maxNorm, norm float32
		want          []float32
	}{
		{[]float32{3, 4}, 1, 5, []float32{0.6, 0.8}},
		{[]float32{3, 4}, 10, 5, []float32{3, 4}},
		{[]float32{3, 4}, 0, 5, []float32{3, 4}}, // disabled
		{[]float32{0, 0}, 1, 0, []float32{0, 0}},
	} {
		g := clone(c.g)
		norm := ClipGradNorm(d, Host(g), c.maxNorm)
		if math.Abs(float64(norm-c.norm)) > 1e-6 {
			t.Fatalf("ClipGradNorm(%v, %v): got norm %v, want %v", c.g, c.maxNorm, norm, c.norm)
		}
		closeTo(t, fmt.Sprintf("ClipGradNorm(%v, %v)", c.g, c.maxNorm), g, c.want, 1e-6, 1e-6)
	}
}
