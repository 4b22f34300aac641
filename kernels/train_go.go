//go:build !cgo || purego

package kernels

// Without cgo there are no C vector kernels: every caller falls back to Go.

func layerNormForwardVector(out, mean, rstd, inp, w, b []float32, rows, C int, eps float32) bool {
	return false
}

func layerNormBackwardVector(dinp, dw, db, dout, inp, w, mean, rstd []float32, rows, C int) bool {
	return false
}

func layerNormBackwardParamsVector(dw, db, dout, inp, mean, rstd []float32, rows, width, ld int) bool {
	return false
}

func colSumVector(acc, d []float32, rows, width, ld int) bool { return false }

func dsoftmaxVector(dp, p []float32, scale float32) bool { return false }

func crossEntropyVector(logp, dx, x []float32, targets []int32, g []float32, rows, V int) bool {
	return false
}

// attentionScratch: the Go path needs none.
func attentionScratch(T, hs int, bwd bool) int { return 0 }

func attentionForwardVector(q, k, v []float32, ld int, out []float32, ldo int, att []float32, T, hs int, scale float32, kt []float32) bool {
	return false
}

func attentionBackwardVector(q, k, v []float32, ld int, dq, dk, dv, dout []float32, ldo int, att []float32, T, hs int, scale float32, vt, ds []float32, acc bool) bool {
	return false
}

func sumSquaresVector(x []float32) (float64, bool) { return 0, false }

func logProbVector(logp, x []float32, targets []int32, rows, V int) bool { return false }

func logProbBackwardVector(dx, x []float32, targets []int32, g []float32, rows, V int) bool {
	return false
}

func bf16EncodeVector(dst []uint16, src []float32) int { return 0 }

func bf16DecodeVector(dst []float32, src []byte) int { return 0 }
