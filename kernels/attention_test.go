package kernels

import (
	"fmt"
	"testing"
)

// attnShapes are (B, T, C, NH): odd sizes, a T above the attention block, GPT
// small's head size 64 at T=256.
var attnShapes = [][4]int{{1, 1, 4, 1}, {2, 7, 36, 3}, {3, 70, 24, 2}, {1, 130, 36, 3}, {1, 256, 128, 2}}

func TestAttention(t *testing.T) {
	rng := newRNG(9)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range attnShapes {
			B, T, C, NH := s[0], s[1], s[2], s[3]
			qkv := randn(rng, B*T*3*C, 1)
			out, att := make([]float32, B*T*C), randn(rng, B*NH*T*T, 1) // att garbage: must be overwritten
			outW, attW := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			d.AttentionForward(Host(out), Host(att), Host(qkv), B, T, C, NH)
			refAttentionForward(outW, attW, qkv, B, T, C, NH)
			what := fmt.Sprintf("AttentionForward %v", s)
			closeTo(t, what+" att", att, attW, 1e-6, 1e-4)
			closeTo(t, what+" out", out, outW, 1e-5, 1e-4)

			dout := randn(rng, B*T*C, 1)
			dqkv := randn(rng, B*T*3*C, 1)
			dqkvW := clone(dqkv)
			d.AttentionBackward(Host(dqkv), Host(dout), Host(qkv), Host(att), B, T, C, NH)
			refAttentionBackward(dqkvW, dout, qkv, att, B, T, C, NH)
			closeTo(t, fmt.Sprintf("AttentionBackward %v", s), dqkv, dqkvW, 1e-4, 1e-4)
		}
	})
}

// TestAttentionBackwardOverwrite: garbage in dqkv is overwritten with exactly
// what AttentionBackward adds onto zeros, on the CPU and through the composed
// fallback (a CGO_ENABLED=0 run covers the pure-Go products).
func TestAttentionBackwardOverwrite(t *testing.T) {
	rng := newRNG(11)
	fusedDevices(t, func(t *testing.T, d Device) {
		for _, s := range attnShapes {
			B, T, C, NH := s[0], s[1], s[2], s[3]
			qkv, dout := randn(rng, B*T*3*C, 1), randn(rng, B*T*C, 1)
			out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			d.AttentionForward(Host(out), Host(att), Host(qkv), B, T, C, NH)
			want := make([]float32, B*T*3*C)
			d.AttentionBackward(Host(want), Host(dout), Host(qkv), Host(att), B, T, C, NH)
			got := randn(rng, B*T*3*C, 1)
			AttentionBackwardOverwrite(d, Host(got), Host(dout), Host(qkv), Host(att), B, T, C, NH)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("AttentionBackwardOverwrite %v: dqkv[%d] = %v, want %v", s, i, got[i], want[i])
				}
			}
		}
	})
}

// TestAttentionCachedPrefill: a prompt's rows through the cache (one call, and one
// row per call) give exactly AttentionForward's rows.
func TestAttentionCachedPrefill(t *testing.T) {
	rng := newRNG(10)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range attnShapes {
			B, T, C, NH := s[0], s[1], s[2], s[3]
			maxT := T + 3
			qkv := randn(rng, B*T*3*C, 1)
			want, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			d.AttentionForward(Host(want), Host(att), Host(qkv), B, T, C, NH)

			// All B prompts in one call: batch b in slot B-1-b (slots need not match b).
			kc, vc := make([]float32, B*maxT*C), make([]float32, B*maxT*C)
			slot, pos := make([]int32, B*T), make([]int32, B*T)
			for b := 0; b < B; b++ {
				for t := 0; t < T; t++ {
					slot[b*T+t], pos[b*T+t] = int32(B-1-b), int32(t)
				}
			}
			got := make([]float32, B*T*C)
			d.AttentionCached(Host(got), Host(qkv), Host(kc), Host(vc), slot, pos, B*T, C, NH, maxT)
			closeTo(t, fmt.Sprintf("AttentionCached prefill %v", s), got, want, 1e-5, 1e-4)

			// Then token by token, one row per call (the decode path).
			kc2, vc2 := make([]float32, B*maxT*C), make([]float32, B*maxT*C)
			got2 := make([]float32, B*T*C)
			for t := 0; t < T; t++ {
				for b := 0; b < B; b++ {
					r := b*T + t
					d.AttentionCached(Host(got2[r*C:(r+1)*C]), Host(qkv[r*3*C:(r+1)*3*C]), Host(kc2), Host(vc2),
						[]int32{int32(b)}, []int32{int32(t)}, 1, C, NH, maxT)
				}
			}
			closeTo(t, fmt.Sprintf("AttentionCached decode %v", s), got2, want, 1e-5, 1e-4)
		}
	})
}

// TestAttentionCachedRagged: slots at different lengths, a prefill mixed with decode
// rows in one call, rows out of order (a rewrite of a position), all against the
// in-order reference.
func TestAttentionCachedRagged(t *testing.T) {
	rng := newRNG(11)
	C, NH, maxT, S := 36, 3, 20, 4
	cases := []struct {
		name      string
		slot, pos []int32
	}{
		{"decode ragged", []int32{0, 1, 2, 3}, []int32{5, 0, 17, 9}},
		{"prefill+decode", []int32{2, 2, 2, 2, 0, 3}, []int32{0, 1, 2, 3, 12, 19}},
		{"two slots interleaved", []int32{1, 3, 1, 3, 1}, []int32{4, 7, 5, 8, 6}},
		{"rewrite earlier position", []int32{1, 1, 1}, []int32{3, 4, 3}},
		{"same slot twice out of order", []int32{0, 2, 0}, []int32{9, 1, 2}},
	}
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, c := range cases {
			N := len(c.slot)
			qkv := randn(rng, N*3*C, 1)
			kc, vc := randn(rng, S*maxT*C, 1), randn(rng, S*maxT*C, 1) // earlier tokens' cache
			kcW, vcW := clone(kc), clone(vc)
			kc, vc = headMajor(kc, S, maxT, C, NH), headMajor(vc, S, maxT, C, NH) // the CPU's layout
			got, want := make([]float32, N*C), make([]float32, N*C)
			d.AttentionCached(Host(got), Host(qkv), Host(kc), Host(vc), c.slot, c.pos, N, C, NH, maxT)
			refAttentionCached(want, qkv, kcW, vcW, c.slot, c.pos, N, C, NH, maxT)
			closeTo(t, c.name+" out", got, want, 1e-5, 1e-4)
			closeTo(t, c.name+" kcache", rowMajor(kc, S, maxT, C, NH), kcW, 0, 0)
			closeTo(t, c.name+" vcache", rowMajor(vc, S, maxT, C, NH), vcW, 0, 0)
		}
	})
}

// headMajor is a KV cache (S,maxT,C), the reference's layout, in the CPU's
// (S,NH,maxT,hs) (AttentionCached); rowMajor is the way back.
func headMajor(x []float32, S, maxT, C, NH int) []float32 {
	return relayoutCache(x, S, maxT, C, NH, true)
}

func rowMajor(x []float32, S, maxT, C, NH int) []float32 {
	return relayoutCache(x, S, maxT, C, NH, false)
}

func relayoutCache(x []float32, S, maxT, C, NH int, toHeads bool) []float32 {
	hs, out := C/NH, make([]float32, len(x))
	for s := 0; s < S; s++ {
		for t := 0; t < maxT; t++ {
			for h := 0; h < NH; h++ {
				rows, heads := (s*maxT+t)*C+h*hs, ((s*NH+h)*maxT+t)*hs
				if toHeads {
					copy(out[heads:heads+hs], x[rows:rows+hs])
				} else {
					copy(out[rows:rows+hs], x[heads:heads+hs])
				}
			}
		}
	}
	return out
}
