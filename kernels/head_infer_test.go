package kernels

import (
	"fmt"
	"math"
	"testing"
)

// TestInferHeadLogProb: the CPU's blocked LM-head log-prob (product, per-block
// max and sum of exps, merged per row) against the float64 reference of
// log softmax(x @ wte^T / T), with blocks forced small so that rows and the
// vocabulary both span several blocks (ragged last ones), and the composed
// fallback (Gemm + InferLogProb) against the same reference.
func TestInferHeadLogProb(t *testing.T) {
	rng := newRNG(65)
	defer func(r, f, v int) { inferHeadRows, inferHeadFloats, inferHeadMinV = r, f, v }(inferHeadRows, inferHeadFloats, inferHeadMinV)
	forDevices(t, func(t *testing.T, d *CPU) {
		// {rows, floats, min V}: the default sizes composed (V <= 4096), then blocked.
		for _, blk := range [][3]int{{1024, 1 << 20, 4096}, {512, 1 << 20, 0}, {4, 64, 0}, {3, 16, 0}} {
			inferHeadRows, inferHeadFloats, inferHeadMinV = blk[0], blk[1], blk[2]
			for _, sh := range [][3]int{{1, 8, 1}, {9, 16, 53}, {13, 24, 517}, {32, 40, 1000}} {
				N, C, V := sh[0], sh[1], sh[2]
				for _, temp := range []float32{0, 1, 0.7, 1.6} {
					x := randn(rng, N*C, 1)
					wte := randn(rng, V*C, 0.5)
					targets := randTokens(rng, N, V)
					want := make([]float32, N)
					for i := 0; i < N; i++ {
						row := make([]float32, V)
						for v := 0; v < V; v++ {
							var s float64
							for k := 0; k < C; k++ {
								s += float64(x[i*C+k]) * float64(wte[v*C+k])
							}
							row[v] = float32(s)
							if temp > 0 {
								row[v] = float32(s / float64(temp))
							}
						}
						want[i] = float32(refLogSoftmax(row)[targets[i]])
					}
					what := fmt.Sprintf("blocks %v N=%d C=%d V=%d T=%g", blk, N, C, V, temp)
					scratch := InferHeadScratch(d, N, V)
					if want := N * V * min(1, blk[2]); scratch != want {
						t.Fatalf("%s: the CPU asks for %d floats of scratch, want %d", what, scratch, want)
					}
					got := make([]float32, N)
					InferHeadLogProb(d, Host(got), Host(make([]float32, scratch)), Host(x), Host(wte), targets, N, C, V, temp)
					closeTo(t, what, got, want, 1e-4, 1e-4)
					p := plainDevice{d}
					got2 := make([]float32, N)
					InferHeadLogProb(p, Host(got2), Host(make([]float32, InferHeadScratch(p, N, V))), Host(x), Host(wte), targets, N, C, V, temp)
					closeTo(t, what+" fallback", got2, want, 1e-4, 1e-4)
				}
			}
		}
	})
	expectShapePanic(t, "bad target", func() {
		InferHeadLogProb(NewCPU(1), Host(make([]float32, 1)), Tensor{}, Host(make([]float32, 2)), Host(make([]float32, 8)), []int32{4}, 1, 2, 4, 1)
	})
	expectShapePanic(t, "short wte", func() {
		InferHeadLogProb(NewCPU(1), Host(make([]float32, 1)), Tensor{}, Host(make([]float32, 2)), Host(make([]float32, 7)), []int32{0}, 1, 2, 4, 1)
	})
	expectShapePanic(t, "bad temperature", func() {
		InferHeadLogProb(NewCPU(1), Host(make([]float32, 1)), Tensor{}, Host(make([]float32, 2)), Host(make([]float32, 8)), []int32{0}, 1, 2, 4, float32(math.Inf(1)))
	})
}
