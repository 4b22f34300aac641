package learner

import (
	"math"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestGAEByHand(t *testing.T) {
	// Three tokens, rewards (0, 0, 1), values (0.5, 0.6, 0.7), γ 0.9, λ 0.8.
	r, v := []float64{0, 0, 1}, []float64{0.5, 0.6, 0.7}
	adv, ret := make([]float64, 3), make([]float64, 3)
	gae(r, v, 0.9, 0.8, adv, ret)
	d2 := 1 - 0.7
	d1 := 0 + 0.9*0.7 - 0.6
	d0 := 0 + 0.9*0.6 - 0.5
	a2 := d2
	a1 := d1 + 0.72*a2
	a0 := d0 + 0.72*a1
	for i, want := range []float64{a0, a1, a2} {
		if !near(adv[i], want, 1e-12) || !near(ret[i], want+v[i], 1e-12) {
			t.Fatalf("t=%d: adv %g ret %g, want %g %g", i, adv[i], ret[i], want, want+v[i])
		}
	}
	// γ = λ = 1: the advantage is the return-to-go minus the value.
	gae(r, v, 1, 1, adv, ret)
	for i := range r {
		if !near(ret[i], 1, 1e-12) || !near(adv[i], 1-v[i], 1e-12) {
			t.Fatalf("γ=λ=1, t=%d: adv %g ret %g", i, adv[i], ret[i])
		}
	}
}

func TestWhiten(t *testing.T) {
	xs := [][]float64{{1, 2}, {3}, {4, 5, 6}}
	whiten(xs)
	var s, ss, n float64
	for _, x := range xs {
		for _, v := range x {
			s += v
			ss += v * v
			n++
		}
	}
	if !near(s/n, 0, 1e-12) || !near(ss/n, 1, 1e-6) {
		t.Fatalf("mean %g, var %g", s/n, ss/n)
	}
}

func TestSurrogateClipping(t *testing.T) {
	eps := 0.2
	// Inside the trust region: loss −A·ρ, gradient −A·ρ.
	l, d, c := surrogate(math.Log(1.1), 0, 2, eps)
	if c || !near(l, -2.2, 1e-12) || !near(d, -2.2, 1e-12) {
		t.Fatalf("inside: %g %g %v", l, d, c)
	}
	// Positive advantage, ratio above 1+ε: clipped, no gradient.
	l, d, c = surrogate(math.Log(1.5), 0, 2, eps)
	if !c || !near(l, -2.4, 1e-12) || d != 0 {
		t.Fatalf("above: %g %g %v", l, d, c)
	}
	// Negative advantage, ratio above 1+ε: the unclipped (worse) branch keeps its gradient.
	l, d, c = surrogate(math.Log(1.5), 0, -2, eps)
	if c || !near(l, 3, 1e-12) || !near(d, 3, 1e-12) {
		t.Fatalf("negative: %g %g %v", l, d, c)
	}
	// Finite difference of the unclipped branch.
	h := 1e-6
	l1, _, _ := surrogate(0.05+h, 0, 1.3, eps)
	l0, _, _ := surrogate(0.05-h, 0, 1.3, eps)
	_, d, _ = surrogate(0.05, 0, 1.3, eps)
	if !near((l1-l0)/(2*h), d, 1e-6) {
		t.Fatalf("fd %g vs %g", (l1-l0)/(2*h), d)
	}
}

func TestValueLoss(t *testing.T) {
	// Unclipped: 0.5(v−R)².
	l, d, _ := valueLoss(1, 0, 3, 0)
	if !near(l, 2, 1e-12) || !near(d, -2, 1e-12) {
		t.Fatalf("unclipped: %g %g", l, d)
	}
	// v moved 1.0 from old (clip 0.2) away from the return: the clipped loss is
	// smaller, so max picks the unclipped one.
	l, d, c := valueLoss(1, 0, -1, 0.2)
	if c || !near(l, 2, 1e-12) || !near(d, 2, 1e-12) {
		t.Fatalf("away: %g %g %v", l, d, c)
	}
	// v moved 1.0 towards the return: the clipped one (0.2 from old) is larger: no gradient.
	l, d, c = valueLoss(1, 0, 3, 0.2)
	if !c || !near(l, 0.5*2.8*2.8, 1e-12) || d != 0 {
		t.Fatalf("towards: %g %g %v", l, d, c)
	}
}

func TestKLTermsAndController(t *testing.T) {
	if !near(klTerm(-1, -1.5, "k1"), 0.5, 1e-7) {
		t.Fatal("k1")
	}
	d := -0.5 // log r = ref − logp
	if !near(klTerm(-1, -1.5, "k3"), math.Exp(d)-1-d, 1e-7) || klTerm(-1.5, -1, "k3") < 0 {
		t.Fatal("k3")
	}
	c := klController{Beta: 0.1, Target: 6, Horizon: 10000}
	c.update(12, 256) // error clipped to +0.2
	if !near(c.Beta, 0.1*(1+0.2*256/10000.0), 1e-12) {
		t.Fatalf("adaptive: %g", c.Beta)
	}
	f := klController{Beta: 0.1}
	f.update(100, 256)
	if f.Beta != 0.1 {
		t.Fatal("fixed β moved")
	}
}

func TestExplainedVarianceAndDistinct(t *testing.T) {
	r := [][]float64{{1, 2, 3, 4}}
	if ev := explainedVariance(r, r); !near(ev, 1, 1e-12) {
		t.Fatalf("perfect critic: %g", ev)
	}
	if ev := explainedVariance([][]float64{{2.5, 2.5, 2.5, 2.5}}, r); !near(ev, 0, 1e-12) {
		t.Fatalf("mean critic: %g", ev)
	}
	if d := distinctN([][]int32{{1, 2, 3}, {1, 2, 3}}, 1); !near(d, 0.5, 1e-12) {
		t.Fatalf("distinct-1 %g", d)
	}
	if d := distinctN([][]int32{{1, 2, 1, 2}}, 2); !near(d, 2.0/3, 1e-12) {
		t.Fatalf("distinct-2 %g", d)
	}
}
