package kernels

import (
	"fmt"
	"testing"
)

// TestInferAttendDecodeShape: the one-call C attention (inferAttend, through
// AttentionCached) against the reference at the "small" model's decode shape
// (head size 64, whole 16-lane chunks) and at odd ones (masked tails), with
// positions short and long, in order (parallel path) and with a rewrite (the
// serial path).
func TestInferAttendDecodeShape(t *testing.T) {
	rng := newRNG(63)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, sh := range [][3]int{{384, 6, 200}, {40, 2, 37}, {24, 3, 5}} {
			C, NH, maxT := sh[0], sh[1], sh[2]
			S := 5
			last := int32(maxT - 1)
			for _, pos := range [][]int32{{0, min(3, last), min(16, last), min(17, last), last}, {4, 2, 4}} {
				N := len(pos)
				slot := make([]int32, N)
				for i := range slot {
					slot[i] = int32(i % S)
				}
				if N == 3 {
					slot = []int32{1, 3, 1} // slot 1 rewrites position 4: rows run in order
				}
				qkv := randn(rng, N*3*C, 1)
				kc, vc := randn(rng, S*maxT*C, 1), randn(rng, S*maxT*C, 1)
				kcW, vcW := clone(kc), clone(vc)
				kc, vc = headMajor(kc, S, maxT, C, NH), headMajor(vc, S, maxT, C, NH) // the CPU's layout
				got, want := make([]float32, N*C), make([]float32, N*C)
				d.AttentionCached(Host(got), Host(qkv), Host(kc), Host(vc), slot, pos, N, C, NH, maxT)
				refAttentionCached(want, qkv, kcW, vcW, slot, pos, N, C, NH, maxT)
				what := fmt.Sprintf("C=%d NH=%d pos=%v", C, NH, pos)
				closeTo(t, what, got, want, 1e-5, 1e-4)
				closeTo(t, what+" kcache", rowMajor(kc, S, maxT, C, NH), kcW, 0, 0)
				closeTo(t, what+" vcache", rowMajor(vc, S, maxT, C, NH), vcW, 0, 0)
			}
		}
	})
}
