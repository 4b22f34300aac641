package kernels

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// unfusedDevice hides the CPU's fused ops (only the Device methods are promoted),
// so the package functions take their composed fallback: both paths are tested
// against the references.
type unfusedDevice struct{ Device }

// fusedDevices are the CPU devices of forDevices plus their plain wrappers.
func fusedDevices(t *testing.T, fn func(t *testing.T, d Device)) {
	for _, c := range devices() {
		for _, plain := range []bool{false, true} {
			var d Device = c
			if plain {
				d = unfusedDevice{c}
			}
			t.Run(fmt.Sprintf("threads=%d/plain=%v", c.Threads(), plain), func(t *testing.T) { fn(t, d) })
		}
	}
}

func TestMatmulFused(t *testing.T) {
	rng := newRNG(50)
	fusedDevices(t, func(t *testing.T, d Device) {
		for _, s := range [][3]int{{1, 1, 1}, {7, 36, 53}, {300, 37, 129}, {64, 384, 1152}} {
			N, C, OC := s[0], s[1], s[2]
			inp, w, b, res := randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1), randn(rng, N*OC, 1)
			tol := 1e-4 * float64(max(C, N, OC))
			// Forward with bias (the CPU folds it into the product) and with a residual.
			out, want := randn(rng, N*OC, 1), make([]float32, N*OC) // out garbage: overwritten
			MatmulForward(d, Host(out), Host(inp), Host(w), Host(b), N, C, OC)
			refGemm(false, false, N, OC, C, 1, inp, C, w, OC, 0, want, OC)
			refAddBias(want, b, N, OC)
			closeTo(t, fmt.Sprintf("MatmulForward %v", s), out, want, tol, 1e-4)
			for _, bias := range []Tensor{Host(b), {}} {
				out = randn(rng, N*OC, 1)
				MatmulForwardResidual(d, Host(out), Host(inp), Host(w), bias, Host(res), N, C, OC)
				refGemm(false, false, N, OC, C, 1, inp, C, w, OC, 0, want, OC)
				if !bias.Empty() {
					refAddBias(want, b, N, OC)
				}
				for i := range want {
					want[i] += res[i]
				}
				closeTo(t, fmt.Sprintf("MatmulForwardResidual %v bias=%v", s, !bias.Empty()), out, want, tol, 1e-4)
			}

			// Backward that overwrites dinp (garbage before) and still adds into dweight, dbias.
			dout := randn(rng, N*OC, 1)
			dinp, dw, db := randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1)
			dinpW, dwW, dbW := make([]float32, N*C), clone(dw), clone(db)
			MatmulBackwardOverwrite(d, Host(dinp), Host(dw), Host(db), Host(dout), Host(inp), Host(w), N, C, OC)
			refGemm(false, true, N, C, OC, 1, dout, OC, w, OC, 0, dinpW, C)
			refGemm(true, false, C, OC, N, 1, inp, C, dout, OC, 1, dwW, OC)
			refBiasBackward(dbW, dout, N, OC)
			closeTo(t, "MatmulBackwardOverwrite dinp", dinp, dinpW, tol, 1e-4)
			closeTo(t, "MatmulBackwardOverwrite dweight", dw, dwW, tol, 1e-4)
			closeTo(t, "MatmulBackwardOverwrite dbias", db, dbW, tol, 1e-4)

			wt := randn(rng, OC*C, 1)
			dinp, dwt := randn(rng, N*C, 1), randn(rng, OC*C, 1)
			dwtW := clone(dwt)
			MatmulTransBackwardOverwrite(d, Host(dinp), Host(dwt), Host(dout), Host(inp), Host(wt), N, C, OC)
			refGemm(false, false, N, C, OC, 1, dout, OC, wt, C, 0, dinpW, C)
			refGemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dwtW, C)
			closeTo(t, "MatmulTransBackwardOverwrite dinp", dinp, dinpW, tol, 1e-4)
			closeTo(t, "MatmulTransBackwardOverwrite dweight", dwt, dwtW, tol, 1e-4)
		}
	})
}

// TestMatmulGeluFused: MatmulGeluForward and MatmulGeluBackwardOverwrite (the
// CPU's tile epilogues and the composed fallback) against the references, and
// the fused CPU results bit-identical to the separate ops they replace, at
// shapes where the packed sgemm takes the product (several depth blocks,
// ragged tiles) and where it does not.
func TestMatmulGeluFused(t *testing.T) {
	rng := newRNG(53)
	fusedDevices(t, func(t *testing.T, d Device) {
		for _, s := range [][3]int{{5, 7, 9}, {300, 37, 129}, {128, 384, 1536}, {131, 1100, 70}, {2048, 96, 64}} {
			N, C, OC := s[0], s[1], s[2]
			inp, w, b := randn(rng, N*C, 1), randn(rng, C*OC, 0.3), randn(rng, OC, 1)
			tol := 1e-4 * float64(max(C, N, OC))
			for _, bias := range []Tensor{Host(b), {}} {
				pre, out := randn(rng, N*OC, 1), randn(rng, N*OC, 1) // garbage: overwritten
				MatmulGeluForward(d, Host(pre), Host(out), Host(inp), Host(w), bias, N, C, OC)
				wantPre, wantOut := make([]float32, N*OC), make([]float32, N*OC)
				refGemm(false, false, N, OC, C, 1, inp, C, w, OC, 0, wantPre, OC)
				if !bias.Empty() {
					refAddBias(wantPre, b, N, OC)
				}
				refGeluForward(wantOut, wantPre, N*OC)
				what := fmt.Sprintf("MatmulGeluForward %v bias=%v", s, !bias.Empty())
				closeTo(t, what+" pre", pre, wantPre, tol, 1e-4)
				closeTo(t, what+" out", out, wantOut, tol, 1e-4)
				// The same bits as the two ops it fuses.
				pre2, out2 := make([]float32, N*OC), make([]float32, N*OC)
				MatmulForward(d, Host(pre2), Host(inp), Host(w), bias, N, C, OC)
				d.GeluForward(Host(out2), Host(pre2), N*OC)
				sameBits(t, what+" pre vs MatmulForward", pre, pre2)
				sameBits(t, what+" out vs GeluForward", out, out2)
			}

			// Backward of y = gelu(pre) @ w2 + b2 with w2 (OC, C): dpre (N,OC).
			preAct := randn(rng, N*OC, 1.5)
			act := make([]float32, N*OC)
			refGeluForward(act, preAct, N*OC)
			w2, dout := randn(rng, OC*C, 0.3), randn(rng, N*C, 1)
			dpre, dw, db := randn(rng, N*OC, 1), randn(rng, OC*C, 1), randn(rng, C, 1)
			dwW, dbW := clone(dw), clone(db)
			dw2, db2 := clone(dw), clone(db)
			MatmulGeluBackwardOverwrite(d, Host(dpre), Host(make([]float32, N*OC)), Host(dw), Host(db), Host(dout), Host(act), Host(w2), Host(preAct), N, OC, C)
			dact, dpreW := make([]float32, N*OC), make([]float32, N*OC)
			refGemm(false, true, N, OC, C, 1, dout, C, w2, C, 0, dact, OC)
			refGeluBackward(dpreW, preAct, dact, N*OC)
			refGemm(true, false, OC, C, N, 1, act, OC, dout, C, 1, dwW, C)
			refBiasBackward(dbW, dout, N, C)
			what := fmt.Sprintf("MatmulGeluBackwardOverwrite %v", s)
			closeTo(t, what+" dpre", dpre, dpreW, tol, 1e-4)
			closeTo(t, what+" dweight", dw, dwW, tol, 1e-4)
			closeTo(t, what+" dbias", db, dbW, tol, 1e-4)
			tmp, dpre2 := make([]float32, N*OC), make([]float32, N*OC)
			MatmulBackwardOverwrite(d, Host(tmp), Host(dw2), Host(db2), Host(dout), Host(act), Host(w2), N, OC, C)
			GeluBackwardOverwrite(d, Host(dpre2), Host(preAct), Host(tmp), N*OC)
			sameBits(t, what+" dpre vs the two ops", dpre, dpre2)
		}
	})
}

// sameBits fails unless got and want hold the same float32 bits.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %v, want %v (bit for bit)", what, i, got[i], want[i])
		}
	}
}

func TestGeluBackwardOverwrite(t *testing.T) {
	rng := newRNG(51)
	fusedDevices(t, func(t *testing.T, d Device) {
		for _, n := range []int{1, 17, 100003} {
			x, dout := randn(rng, n, 2), randn(rng, n, 1)
			dinp, want := randn(rng, n, 1), make([]float32, n) // dinp garbage: overwritten
			GeluBackwardOverwrite(d, Host(dinp), Host(x), Host(dout), n)
			refGeluBackward(want, x, dout, n)
			closeTo(t, fmt.Sprintf("GeluBackwardOverwrite n=%d", n), dinp, want, 1e-5, 1e-4)
		}
	})
	// In place on the CPU: dinp aliasing dout.
	x, dout := randn(rng, 1000, 2), randn(rng, 1000, 1)
	want := make([]float32, 1000)
	refGeluBackward(want, x, dout, 1000)
	GeluBackwardOverwrite(NewCPU(2), Host(dout), Host(x), Host(dout), 1000)
	closeTo(t, "GeluBackwardOverwrite in place", dout, want, 1e-5, 1e-4)
}

func TestCrossEntropyForwardBackward(t *testing.T) {
	rng := newRNG(52)
	fusedDevices(t, func(t *testing.T, d Device) {
		for _, s := range [][2]int{{1, 1}, {9, 53}, {300, 512}, {2, 50257}} {
			N, V := s[0], s[1]
			logits := randn(rng, N*V, 3)
			logits[0] += 100 // a large logit: max-subtraction must keep this finite
			tg := randTokens(rng, N, V)
			for _, mask := range [][]float32{nil, make([]float32, N), randMask(rng, N)} {
				const dloss = 1.7
				// Reference: per-token log-probs and the gradient through LogProbBackward.
				lp := make([]float32, N)
				refLogProbForward(lp, logits, tg, N, V)
				var sum, wsum float64
				dlogp := make([]float32, N)
				for i := range lp {
					w := 1.0
					if mask != nil {
						w = float64(mask[i])
					}
					sum -= w * float64(lp[i])
					wsum += w
				}
				wantLoss := 0.0
				if wsum > 0 {
					wantLoss = sum / wsum
					for i := range dlogp {
						w := float32(1)
						if mask != nil {
							w = mask[i]
						}
						dlogp[i] = -dloss * w / float32(wsum)
					}
				}
				wantD := make([]float32, N*V)
				refLogProbBackward(wantD, logits, tg, dlogp, N, V)

				losses, dl := d.Alloc(N), Host(randn(rng, N*V, 1)) // dl garbage: overwritten
				loss := CrossEntropyForwardBackward(d, losses, dl, Host(logits), tg, mask, dloss, N, V)
				what := fmt.Sprintf("CrossEntropyForwardBackward %v mask=%v", s, mask != nil)
				if math.Abs(float64(loss)-wantLoss) > 1e-4*math.Max(1, math.Abs(wantLoss)) {
					t.Fatalf("%s: loss %v, want %v", what, loss, wantLoss)
				}
				for i := range lp {
					lp[i] = -lp[i]
				}
				closeTo(t, what+" losses", losses.F, lp, 1e-4, 1e-5)
				closeTo(t, what+" dlogits", dl.F, wantD, 1e-6, 1e-5)

				// In place where the device allows it: the same loss and bits.
				if !CrossEntropyInPlace(d) {
					continue
				}
				inplace, losses2 := clone(logits), d.Alloc(N)
				loss2 := CrossEntropyForwardBackward(d, losses2, Host(inplace), Host(inplace), tg, mask, dloss, N, V)
				if loss2 != loss {
					t.Fatalf("%s in place: loss %v, want %v", what, loss2, loss)
				}
				sameBits(t, what+" in place losses", losses2.F, losses.F)
				sameBits(t, what+" in place dlogits", inplace, dl.F)
			}
		}
	})
	if !CrossEntropyInPlace(NewCPU(1)) || CrossEntropyInPlace(unfusedDevice{NewCPU(1)}) {
		t.Fatal("CrossEntropyInPlace: want true on the CPU, false without its fused op")
	}
}

// randMask is a mask of N weights in [0,1] with some zeros.
func randMask(rng interface{ Float64() float64 }, N int) []float32 {
	m := make([]float32, N)
	for i := range m {
		if v := rng.Float64(); v > 0.2 {
			m[i] = float32(v)
		}
	}
	return m
}

func TestGradCrossEntropyForwardBackward(t *testing.T) {
	rng := newRNG(53)
	d := NewCPU(2)
	N, V := 7, 53
	logits := randn(rng, N*V, 2)
	tg := randTokens(rng, N, V)
	losses, dl := d.Alloc(N), d.Alloc(N*V)
	for _, mask := range [][]float32{nil, {1, 0, 1, 0.5, 0, 1, 1}} {
		const dloss = 1.7
		f := func() float64 {
			return dloss * float64(CrossEntropyForward(d, losses, Host(logits), tg, mask, N, V))
		}
		CrossEntropyForwardBackward(d, losses, dl, Host(logits), tg, mask, dloss, N, V)
		an := clone(dl.F)
		gradCheck(t, "CrossEntropyForwardBackward dlogits", logits, an, f, rng, fdEps, 2*fdCoords)
		for i := 0; i < N; i++ {
			j := i*V + int(tg[i])
			gradCheck(t, "CrossEntropyForwardBackward dlogits target", logits[j:j+1], an[j:j+1], f, rng, fdEps, 1)
		}
	}
}

func TestAdamWScaled(t *testing.T) {
	rng := newRNG(54)
	fusedDevices(t, func(t *testing.T, d Device) {
		n := 10007
		p, g := randn(rng, n, 1), randn(rng, n, 1)
		m, v := make([]float32, n), make([]float32, n)
		pW, gW, mW, vW := clone(p), clone(g), clone(m), clone(v)
		for step := 1; step <= 3; step++ {
			gs := float32(0.25 * float64(step)) // 0.25, 0.5, 0.75; and 1 below
			AdamWScaled(d, Host(p), Host(g), Host(m), Host(v), gs, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			for i := range gW {
				gW[i] *= gs
			}
			refAdamW(pW, gW, mW, vW, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			closeTo(t, "AdamWScaled grads (left scaled)", g, gW, 1e-7, 1e-6)
		}
		AdamWScaled(d, Host(p), Host(g), Host(m), Host(v), 1, 4, 1e-3, 0.9, 0.95, 1e-8, 0.1)
		refAdamW(pW, gW, mW, vW, 4, 1e-3, 0.9, 0.95, 1e-8, 0.1)
		closeTo(t, "AdamWScaled params", p, pW, 1e-6, 1e-5)
		closeTo(t, "AdamWScaled m", m, mW, 1e-7, 1e-5)
		closeTo(t, "AdamWScaled v", v, vW, 1e-7, 1e-5)
	})
}

// TestAdamWRuns: AdamWRuns gives each run its own weight decay, as the
// reference AdamW run by run.
func TestAdamWRuns(t *testing.T) {
	rng := newRNG(55)
	fusedDevices(t, func(t *testing.T, d Device) {
		runs := []AdamWRun{{0, 768, 0}, {768, 3001, 0.1}, {3769, 12, 0}, {3781, 500, 0.1}}
		n := 4281
		p, g := randn(rng, n, 1), randn(rng, n, 1)
		m, v := make([]float32, n), make([]float32, n)
		pW, gW, mW, vW := clone(p), clone(g), clone(m), clone(v)
		AdamWRuns(d, Host(p), Host(g), Host(m), Host(v), runs, 0.5, 1, 1e-3, 0.9, 0.95, 1e-8)
		for i := range gW {
			gW[i] *= 0.5
		}
		for _, r := range runs {
			s := func(x []float32) []float32 { return x[r.Off : r.Off+r.N] }
			refAdamW(s(pW), s(gW), s(mW), s(vW), 1, 1e-3, 0.9, 0.95, 1e-8, r.WeightDecay)
		}
		closeTo(t, "AdamWRuns params", p, pW, 1e-6, 1e-5)
		closeTo(t, "AdamWRuns grads", g, gW, 1e-7, 1e-6)
		closeTo(t, "AdamWRuns m", m, mW, 1e-7, 1e-5)
		closeTo(t, "AdamWRuns v", v, vW, 1e-7, 1e-5)
	})
}

// TestLMHeadLossAndBackward: the LM head with its loss and backward in one call
// equals the product, the fused cross-entropy and the head's backward run one
// after another (the composition the CPU runs, checked op by op elsewhere).
func TestLMHeadLossAndBackward(t *testing.T) {
	rng := newRNG(56)
	fusedDevices(t, func(t *testing.T, d Device) {
		N, C, V := 37, 16, 101
		x, wte := randn(rng, N*C, 1), randn(rng, V*C, 0.5)
		targets := randTokens(rng, N, V)
		mask := modMask(N) // a third of the rows masked out
		dwte0 := randn(rng, V*C, 0.1)
		losses, dx, dwte, logits, dlogits := make([]float32, N), randn(rng, N*C, 1), clone(dwte0), make([]float32, N*V), make([]float32, N*V)
		loss := LMHeadLossAndBackward(d, Host(losses), Host(dx), Host(dwte), Host(logits), Host(dlogits), Host(x), Host(wte), targets, mask, 0.5, N, C, V)

		wl, wdx, wdwte, wlogits, wdlogits := make([]float32, N), make([]float32, N*C), clone(dwte0), make([]float32, N*V), make([]float32, N*V)
		MatmulTransForward(d, Host(wlogits), Host(x), Host(wte), N, C, V)
		want := CrossEntropyForwardBackward(d, Host(wl), Host(wdlogits), Host(wlogits), targets, mask, 0.5, N, V)
		MatmulTransBackward(d, Host(wdx), Host(wdwte), Host(wdlogits), Host(x), Host(wte), N, C, V)
		if loss != want {
			t.Fatalf("loss %v, want %v", loss, want)
		}
		closeTo(t, "losses", losses, wl, 0, 0)
		closeTo(t, "dx", dx, wdx, 0, 0)
		closeTo(t, "dwte", dwte, wdwte, 0, 0)
	})
}

// TestAdamWStream: AdamW's streaming stores (parts of adamwStreamMin values
// or more) give the plain stores' bits, on buffers whose start is not on a
// 64-byte line (a head and a tail of partial lines) and, where the four
// buffers' alignments differ, on the plain path.
func TestAdamWStream(t *testing.T) {
	defer func(v bool) { adamwStream = v }(adamwStream)
	d := NewCPU(2)
	n := 2*adamwStreamMin + 37
	for _, offs := range [][4]int{{3, 3, 3, 3}, {0, 0, 0, 0}, {1, 2, 3, 0}} {
		var got [2][4][]float32
		for s := range 2 {
			adamwStream = s == 1
			bufs := [4][]float32{}
			for j := range bufs {
				r := newRNG(57) // the same values for both
				bufs[j] = randn(r, n+offs[j], 0.5)[offs[j]:]
				if j >= 2 {
					for i := range bufs[j] {
						bufs[j][i] = bufs[j][i] * bufs[j][i] // v >= 0
					}
				}
			}
			for step := 1; step <= 2; step++ {
				AdamWScaled(d, Host(bufs[0]), Host(bufs[1]), Host(bufs[2]), Host(bufs[3]), 0.7, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			}
			got[s] = bufs
		}
		for j, name := range []string{"params", "grads", "m", "v"} {
			if !slices.Equal(got[0][j], got[1][j]) {
				t.Errorf("offsets %v: %s with streaming stores differ from plain stores", offs, name)
			}
		}
	}
}
