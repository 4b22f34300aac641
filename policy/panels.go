package policy

import "github.com/troupe-rl/troupe/kernels"

// Generate's decode steps multiply a few rows by every block weight, so a step
// costs one pass over the weights (42 MB for "small"). Where the device packs
// panels (kernels.CanPackPanels) those products read a panel-packed copy of the
// four block weights, one sequential stream per thread, with results bit-identical
// to the row-major weights (kernels.InferLinearPanels). The copy is repacked at
// the start of every Generate call, since the parameters may have changed since
// the last; that costs one pass over the weights, against MaxNewTokens passes saved
// from being slow.

// usePanels turns the panel-packed decode on (tests and benchmarks compare).
var usePanels = true

// panelMinNewTokens is the fewest new tokens for which Generate packs panels
// (below it the packing would cost about what it saves).
const panelMinNewTokens = 8

// panelSet is the panel-packed copy of every block's four weights.
type panelSet struct {
	buf kernels.Tensor
	w   [][4]kernels.Tensor // per layer: c_attn, attn c_proj, c_fc, mlp c_proj
}

// panelShapes are the (K,OC) of a block's c_attn, attn c_proj, c_fc and mlp c_proj.
func panelShapes(C int) [4][2]int { return [4][2]int{{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}} }

// decodePanels packs the block weights for a Generate call of maxNew tokens, or
// returns nil where the device does not pack panels (or it would not pay).
func (m *Model) decodePanels(maxNew int) *panelSet {
	if !usePanels || maxNew < panelMinNewTokens || !kernels.CanPackPanels(m.Dev) {
		return nil
	}
	if m.panels == nil {
		m.panels = &panelSet{}
	}
	ps := m.panels
	shapes := panelShapes(m.Config.Channels)
	per := 0
	for _, s := range shapes {
		per += kernels.PanelFloats(s[0], s[1])
	}
	ps.buf = grow(m.Dev, ps.buf, per*m.Config.NumLayers)
	ps.w = ps.w[:0]
	c := carver{buf: ps.buf}
	for _, lp := range m.Layout.Layers {
		var w [4]kernels.Tensor
		for i, idx := range []int{lp.AttnW, lp.AttnProjW, lp.FcW, lp.FcProjW} {
			K, OC := shapes[i][0], shapes[i][1]
			w[i] = c.take(kernels.PanelFloats(K, OC))
			kernels.PackPanels(m.Dev, w[i], m.Param(idx), K, OC)
		}
		ps.w = append(ps.w, w)
	}
	return ps
}
