package kernels

import (
	"fmt"
	"math"
	"testing"
)

// TestInferLogProb: the fused temperature log-prob against the float64
// reference on the logits divided by the temperature, and the fallback.
func TestInferLogProb(t *testing.T) {
	rng := newRNG(64)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, V := range []int{1, 7, 16, 53, 512} {
			for _, temp := range []float32{0, 1, 0.7, 1.6} {
				N := 9
				logits := randn(rng, N*V, 3)
				targets := randTokens(rng, N, V)
				want := make([]float32, N)
				for i := 0; i < N; i++ {
					row := clone(logits[i*V : i*V+V])
					if temp > 0 {
						for j := range row {
							row[j] /= temp
						}
					}
					want[i] = float32(refLogSoftmax(row)[targets[i]])
				}
				what := fmt.Sprintf("V=%d T=%g", V, temp)
				got := make([]float32, N)
				before := clone(logits)
				InferLogProb(d, Host(got), Host(logits), targets, N, V, temp)
				closeTo(t, what, got, want, 1e-5, 1e-5)
				closeTo(t, what+" logits untouched", logits, before, 0, 0)
				got2 := make([]float32, N)
				InferLogProb(plainDevice{d}, Host(got2), Host(clone(logits)), targets, N, V, temp)
				closeTo(t, what+" fallback", got2, want, 1e-5, 1e-5)
			}
		}
	})
	expectShapePanic(t, "bad target", func() {
		InferLogProb(NewCPU(1), Host(make([]float32, 1)), Host(make([]float32, 4)), []int32{4}, 1, 4, 1)
	})
	expectShapePanic(t, "bad temperature", func() {
		InferLogProb(NewCPU(1), Host(make([]float32, 1)), Host(make([]float32, 4)), []int32{0}, 1, 4, float32(math.NaN()))
	})
}
