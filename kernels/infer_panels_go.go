//go:build !cgo || purego

package kernels

// inferPanelsOK: no panel kernel in the pure-Go build (CanPackPanels is false,
// so InferLinearPanels is InferLinear).
const inferPanelsOK = false

func panelWidth() int { return 32 }

func panelSmall(m, p0, p1, k, oc int, a []float32, lda int, panels, bias, c []float32, ldc int, accIn bool) {
	panic("kernels: panelSmall without the cgo build")
}

func packPanelRange(k, oc, p0, p1 int, w, dst []float32) {
	panic("kernels: packPanelRange without the cgo build")
}
