package policy

import (
	"slices"
	"strings"
	"testing"
)

// TestCopyTensors: the critic's and reward model's loader copies a file's
// tensors into the parameters by name, skips the mask buffers, and refuses a
// wrong shape, a parameter given twice (under both of its names), and
// missing or unexpected tensors, naming them.
func TestCopyTensors(t *testing.T) {
	specs := []ParamSpec{
		{Name: "transformer.wte.weight", Shape: []int{2, 2}, Offset: 0, Size: 4},
		{Name: "score.weight", Shape: []int{1, 2}, Offset: 4, Size: 2},
	}
	st := func(shape []int, v ...float32) SafeTensor { return SafeTensor{DType: "F32", Shape: shape, Data: v} }
	good := map[string]SafeTensor{
		"wte.weight":                st([]int{2, 2}, 1, 2, 3, 4),
		"score.weight":              st([]int{1, 2}, 5, 6),
		"transformer.h.0.attn.bias": st([]int{1, 1}, 9), // a mask buffer: skipped
	}
	host := make([]float32, 6)
	if err := CopyTensors("m.safetensors", good, specs, host, "score.weight"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(host, []float32{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("host %v", host)
	}
	for _, c := range []struct {
		tensors map[string]SafeTensor
		want    string
	}{
		{map[string]SafeTensor{"wte.weight": st([]int{4}, 1, 2, 3, 4), "score.weight": good["score.weight"]},
			"m.safetensors: tensor wte.weight has shape [4], want [2 2]"},
		{map[string]SafeTensor{"wte.weight": good["wte.weight"], "transformer.wte.weight": good["wte.weight"], "score.weight": good["score.weight"]},
			"tensors transformer.wte.weight and wte.weight are the same parameter"},
		{map[string]SafeTensor{"wte.weight": good["wte.weight"], "value_head.weight": good["score.weight"]},
			"missing tensors score.weight; unexpected tensors value_head.weight"},
	} {
		err := CopyTensors("m.safetensors", c.tensors, specs, make([]float32, 6), "score.weight")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want it to say %q", err, c.want)
		}
	}
}
