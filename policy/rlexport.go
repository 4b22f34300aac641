package policy

import (
	"fmt"
	"slices"
)

// Exported helpers for the other models built on this trunk (packages critic
// and reward).

// IsAttnBuffer reports whether a tensor name is one of the causal-mask buffers
// (transformer.h.N.attn.bias or .attn.masked_bias) that older transformers
// versions saved with GPT-2 weights: not parameters, skipped by loaders.
func IsAttnBuffer(name string) bool { return isAttnBuffer(name) }

// CopyTensors copies a weights file's tensors (path, as ReadSafetensors read
// it) into host, parameter by parameter of specs: a file name gets the
// "transformer." prefix a GPT2Model's names lack unless it starts with head
// (the model's own head, e.g. "value_head."), the causal-mask buffers are skipped, and every parameter must
// come exactly once with its shape. A mis-shaped, duplicated, missing or
// unexpected tensor is refused with the file and the names (the error wraps
// no sentinel: the caller's package wraps its own).
func CopyTensors(path string, tensors map[string]SafeTensor, specs []ParamSpec, host []float32, head string) error {
	byName := make(map[string]int, len(specs))
	for i, s := range specs {
		byName[s.Name] = i
	}
	seen := make([]string, len(specs)) // the file's name for each parameter
	var unexpected []string
	for name, t := range tensors {
		c := canonicalName(name, head)
		if isAttnBuffer(c) {
			continue
		}
		i, ok := byName[c]
		if !ok {
			unexpected = append(unexpected, name)
			continue
		}
		s := specs[i]
		if !slices.Equal(t.Shape, s.Shape) {
			return fmt.Errorf("%s: tensor %s has shape %v, want %v", path, name, t.Shape, s.Shape)
		}
		if seen[i] != "" {
			a, b := min(seen[i], name), max(seen[i], name)
			return fmt.Errorf("%s: tensors %s and %s are the same parameter", path, a, b)
		}
		seen[i] = name
		copy(host[s.Offset:s.Offset+s.Size], t.Data)
	}
	var missing []string
	for i, name := range seen {
		if name == "" {
			missing = append(missing, specs[i].Name)
		}
	}
	slices.Sort(unexpected)
	if len(missing) > 0 || len(unexpected) > 0 {
		return fmt.Errorf("%s: %s", path, mismatch(missing, unexpected))
	}
	return nil
}

// WriteParams writes the parameters host holds, laid out as specs, as a
// safetensors file at path (atomically, with Hugging Face's "format": "pt"
// metadata), one F32 tensor per spec: the weights file of every checkpoint
// (policy, critic, reward model).
func WriteParams(path string, specs []ParamSpec, host []float32) error {
	tensors := make([]SafeTensor, len(specs))
	for i, s := range specs {
		tensors[i] = SafeTensor{Name: s.Name, DType: "F32", Shape: s.Shape, Data: host[s.Offset : s.Offset+s.Size]}
	}
	return WriteSafetensors(path, tensors, map[string]string{"format": "pt"})
}

// ReadParams reads a checkpoint's weights file for a model of cfg, first
// checking that the file is big enough for cfg's parameters, so that a
// hostile config.json (n_layer 2e9) cannot make the caller allocate the model
// before the weights are seen to hold it.
func ReadParams(path string, cfg Config) (map[string]SafeTensor, error) {
	if err := CheckParamsFit(path, cfg); err != nil {
		return nil, err
	}
	return ReadSafetensors(path)
}
