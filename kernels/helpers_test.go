package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// newRNG returns a deterministic generator per test.
func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6b65726e656c73)) }

// randn returns n normal values times scale.
func randn(rng *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * scale)
	}
	return x
}

// randTokens returns n ids in [0,v).
func randTokens(rng *rand.Rand, n, v int) []int32 {
	x := make([]int32, n)
	for i := range x {
		x[i] = int32(rng.IntN(v))
	}
	return x
}

// modMask is a loss mask of n rows weighted 0, 1, 2, 0, 1, 2, ...: a third of
// them masked out.
func modMask(n int) []float32 {
	m := make([]float32, n)
	for i := range m {
		m[i] = float32(i % 3)
	}
	return m
}

// clone copies a slice so a fast op and its reference start from the same values.
func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// closeTo fails the test at the first value where |got-want| > atol + rtol*|want|.
func closeTo(t *testing.T, what string, got, want []float32, atol, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if !(math.Abs(g-w) <= atol+rtol*math.Abs(w)) {
			t.Fatalf("%s[%d]: got %v, want %v", what, i, g, w)
		}
	}
}

// devices are the CPU devices every test runs on: one goroutine (the serial
// paths) and three (the split paths, with chunk edges in odd places).
func devices() []*CPU { return []*CPU{NewCPU(1), NewCPU(3)} }

// forDevices runs fn as a subtest per device.
func forDevices(t *testing.T, fn func(t *testing.T, d *CPU)) {
	for _, d := range devices() {
		t.Run(fmt.Sprintf("threads=%d", d.Threads()), func(t *testing.T) { fn(t, d) })
	}
}

// gradCheck compares an analytic gradient with central differences of the scalar
// objective f, which must read x (perturbed here in place and restored). Up to
// maxCoords coordinates are checked, chosen at random. The difference quotient uses
// the step actually representable in float32. A coordinate passes when
// |fd - an| <= rtol*max(|fd|,|an|) + atol*gscale, with gscale the largest |an|:
// float32 forward passes give the quotient an absolute noise floor, and a real
// bug (a missing term, a wrong index) is off by a sizeable fraction of gscale.
func gradCheck(t *testing.T, what string, x, an []float32, f func() float64, rng *rand.Rand, eps float64, maxCoords int) {
	t.Helper()
	var gscale float64
	for _, g := range an {
		gscale = math.Max(gscale, math.Abs(float64(g)))
	}
	idx := rng.Perm(len(x))
	if len(idx) > maxCoords {
		idx = idx[:maxCoords]
	}
	const rtol, atol = 1e-2, 2e-3
	for _, i := range idx {
		x0 := x[i]
		xp, xm := x0+float32(eps), x0-float32(eps)
		x[i] = xp
		fp := f()
		x[i] = xm
		fm := f()
		x[i] = x0
		fd := (fp - fm) / (float64(xp) - float64(xm))
		a := float64(an[i])
		if !(math.Abs(fd-a) <= rtol*math.Max(math.Abs(fd), math.Abs(a))+atol*gscale) {
			t.Fatalf("%s: d/dx[%d]: got %v, want %v (finite difference; largest gradient %v)", what, i, a, fd, gscale)
		}
	}
}

// dotR is the objective sum(out*R) in float64.
func dotR(out, r []float32) float64 {
	var s float64
	for i := range out {
		s += float64(out[i]) * float64(r[i])
	}
	return s
}
