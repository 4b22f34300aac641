package kernels

import (
	"fmt"
	"math"
	"testing"
)

func TestEntropy(t *testing.T) {
	rng := newRNG(30)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][2]int{{1, 1}, {7, 53}, {300, 512}, {5, 50257}} {
			N, V := s[0], s[1]
			logits := randn(rng, N*V, 3)
			logits[0] += 100 // a large logit: max-subtraction must keep this finite
			got, want := make([]float32, N), make([]float32, N)
			d.EntropyForward(Host(got), Host(logits), N, V)
			refEntropyForward(want, logits, N, V)
			closeTo(t, fmt.Sprintf("EntropyForward %v", s), got, want, 1e-5, 1e-5)

			dent := randn(rng, N, 1)
			dent[N/2] = 0 // skipped row
			dl := randn(rng, N*V, 1)
			dlW := clone(dl)
			d.EntropyBackward(Host(dl), Host(logits), dent, N, V)
			refEntropyBackward(dlW, logits, dent, N, V)
			closeTo(t, fmt.Sprintf("EntropyBackward %v", s), dl, dlW, 1e-6, 1e-5)
		}
	})
}

// TestEntropyEdges: flat rows have entropy log V, one-hot rows 0, a -Inf logit
// (a masked-out token) is a token of probability 0, not a NaN.
func TestEntropyEdges(t *testing.T) {
	d := NewCPU(1)
	V := 8
	inf := float32(math.Inf(-1))
	logits := []float32{
		0, 0, 0, 0, 0, 0, 0, 0, // flat: log 8
		5, 5, 5, 5, inf, inf, inf, inf, // flat over 4: log 4
		200, 0, 0, 0, 0, 0, 0, 0, // one-hot up to e^-200
	}
	N := len(logits) / V
	ent := make([]float32, N)
	d.EntropyForward(Host(ent), Host(logits), N, V)
	for i, want := range []float64{math.Log(8), math.Log(4), 0} {
		if math.Abs(float64(ent[i])-want) > 1e-6 {
			t.Fatalf("entropy of row %d: got %v, want %v", i, ent[i], want)
		}
	}
	dl := make([]float32, N*V)
	d.EntropyBackward(Host(dl), Host(logits), []float32{1, 1, 1}, N, V)
	for j, g := range dl {
		// Every row is at a stationary point of the entropy over its support.
		if math.IsNaN(float64(g)) || math.Abs(float64(g)) > 1e-6 {
			t.Fatalf("EntropyBackward dlogits[%d]: got %v, want 0", j, g)
		}
	}
}

func TestGradEntropy(t *testing.T) {
	rng := newRNG(31)
	d := NewCPU(2)
	N, V := 7, 53
	logits, R := randn(rng, N*V, 2), randn(rng, N, 1)
	R[3] = 0 // a skipped row: its gradient must stay 0
	ent := make([]float32, N)
	f := func() float64 {
		d.EntropyForward(Host(ent), Host(logits), N, V)
		return dotR(ent, R)
	}
	dl := make([]float32, N*V)
	d.EntropyBackward(Host(dl), Host(logits), R, N, V)
	gradCheck(t, "Entropy dlogits", logits, dl, f, rng, fdEps, 3*fdCoords)
	// The largest logit of every row moves the entropy most: check those too.
	for i := 0; i < N; i++ {
		j := i * V
		for k := i * V; k < i*V+V; k++ {
			if logits[k] > logits[j] {
				j = k
			}
		}
		gradCheck(t, "Entropy dlogits argmax", logits[j:j+1], dl[j:j+1], f, rng, fdEps, 1)
	}
	for j := 3 * V; j < 4*V; j++ {
		if dl[j] != 0 {
			t.Fatalf("Entropy skipped row: dlogits[%d] = %v, want 0", j, dl[j])
		}
	}
}
