package policy

// Exported helpers for the other models built on this trunk (package critic).

// IsAttnBuffer reports whether a tensor name is one of the causal-mask buffers
// (transformer.h.N.attn.bias or .attn.masked_bias) that older transformers
// versions saved with GPT-2 weights: not parameters, skipped by loaders.
func IsAttnBuffer(name string) bool { return isAttnBuffer(name) }
