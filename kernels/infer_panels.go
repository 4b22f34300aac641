package kernels

import "fmt"

// Panel-packed weights for the few-row products of a KV-cache decode step.
//
// InferLinear's streaming kernel reads a (K,OC) row-major weight in blocks of 16
// rows, each a separate stream through memory; two threads splitting the columns
// then interleave within every row, and the pair reached ~18 GB/s of weights on
// the 2-core dev machine against ~50 GB/s that a plain read of the same 42 MB
// (L3-resident) gets. Laid out as 32-column panels (16 on AVX2), each panel's K rows
// contiguous, every thread's work is one sequential stream: 23-25 GB/s on
// the two threads (BenchmarkDecodePanels; ~32 in a C harness whose OpenMP threads
// spin between products instead of sleeping), and Generate at the bench shape
// 1.18-1.24x faster (policy's BenchmarkGeneratePanels, packing included). The sums run over k in the same order, starting from
// the bias (plus the residual), as the streaming kernel's, so the results are
// bit-identical to InferLinear's (TestInferLinearPanelsExact).

// panelCols is the width of one panel: 32 columns (two zmm registers) for the
// AVX-512 kernel, 16 (two ymm) for the AVX2 one (PANEL_COLS, k_infer_linear.h).
var panelCols = panelWidth()

// PanelFloats is the length of the panel-packed copy of a (K,OC) weight: OC
// rounded up to whole panels, times K.
func PanelFloats(K, OC int) int { return (OC + panelCols - 1) / panelCols * panelCols * K }

// panelLinearer is a device that runs few-row products from panel-packed weights.
type panelLinearer interface {
	panelsOK() bool
	packPanels(dst, w Tensor, K, OC int)
	inferLinearPanels(out, inp, panels, bias Tensor, N, K, OC int, accumulate bool, gelu bool)
}

// PanelRows is the most rows InferLinearPanels takes from the panels (more go
// to InferLinear's many-row path).
const PanelRows = inferSmallRows

// CanPackPanels reports whether d runs InferLinearPanels from packed panels; where
// it does not, packing them would be wasted work and memory.
func CanPackPanels(d Device) bool {
	p, ok := d.(panelLinearer)
	return ok && p.panelsOK()
}

// PackPanels writes the panel-packed copy of weight w (K,OC) into dst
// (PanelFloats(K, OC) floats): with P the build's panel width (32 columns with
// AVX-512, 16 with AVX2), panel p holds columns
// [P*p, P*p+P) of every row k at dst[(p*K+k)*P:], zero-padded past OC. d must
// satisfy CanPackPanels.
func PackPanels(d Device, dst, w Tensor, K, OC int) {
	p, ok := d.(panelLinearer)
	if !ok || !p.panelsOK() {
		panic(fmt.Errorf("%w: PackPanels on a device without panel kernels", ErrShape))
	}
	need(dst, PanelFloats(K, OC), "PackPanels dst")
	need(w, K*OC, "PackPanels weight")
	p.packPanels(dst, w, K, OC)
}

// InferLinearPanels is InferLinear with the weight also given as its panel-packed
// copy (PackPanels of weight; empty: none): N <= PanelRows rows on a device that
// packs panels read the panels, with the same result bit for bit; anything else
// is InferLinear on weight.
func InferLinearPanels(d Device, out, inp, panels, weight, bias, tmp Tensor, N, K, OC int, accumulate, gelu bool) {
	if p, ok := d.(panelLinearer); ok && !panels.Empty() && N >= 1 && N <= PanelRows && p.panelsOK() && !(accumulate && gelu) {
		p.inferLinearPanels(out, inp, panels, bias, N, K, OC, accumulate, gelu)
		return
	}
	InferLinear(d, out, inp, weight, bias, tmp, N, K, OC, accumulate, gelu)
}

func (c *CPU) panelsOK() bool { return inferPanelsOK }

// packPanels implements panelLinearer, panels shared out over the threads.
func (c *CPU) packPanels(dst, w Tensor, K, OC int) {
	panels := (OC + panelCols - 1) / panelCols
	per := max(1, panels/(4*max(1, c.threads)))
	c.inferShare((panels+per-1)/per, func(i int) {
		packPanelRange(K, OC, i*per, min(panels, (i+1)*per), w.F, dst.F)
	})
}

// inferLinearPanels implements panelLinearer.
func (c *CPU) inferLinearPanels(out, inp, panels, bias Tensor, N, K, OC int, accumulate, gelu bool) {
	need(out, N*OC, "InferLinearPanels out")
	need(inp, N*K, "InferLinearPanels inp")
	need(panels, PanelFloats(K, OC), "InferLinearPanels panels")
	var b []float32
	if !bias.Empty() {
		need(bias, OC, "InferLinearPanels bias")
		b = bias.F[:OC]
	}
	if OC <= 0 {
		return
	}
	if K <= 0 {
		panic(fmt.Errorf("%w: InferLinearPanels K=%d", ErrShape, K))
	}
	o, x := out.F, inp.F
	// One contiguous run of panels per thread, so each thread streams one region
	// of memory: 23 GB/s against 20 for inferLinear's shared-out pieces of 4-5
	// panels, in an A/B of the two splits on the 24 products of a decode step.
	tiles := (OC + panelCols - 1) / panelCols
	per := tiles
	if c.threads > 1 && 2*N*K*OC >= gemmSplitWork {
		per = (tiles + c.threads - 1) / c.threads
	}
	pieces := (tiles + per - 1) / per
	c.inferShare(pieces, func(p int) {
		p0, p1 := p*per, min(tiles, (p+1)*per)
		panelSmall(N, p0, p1, K, OC, x, K, panels.F, b, o, OC, accumulate)
		if gelu {
			geluCols(o, 0, N, OC, p0*panelCols, min(OC, p1*panelCols))
		}
	})
}
