package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// ErrBadCheckpoint is wrapped by every refusal to load a checkpoint.
var ErrBadCheckpoint = errors.New("policy: bad checkpoint")

// A checkpoint is a directory in Hugging Face's layout, so that
// GPT2LMHeadModel.from_pretrained(dir) loads it and troupe loads theirs.
const (
	ModelFile  = "model.safetensors" // parameters, Hugging Face GPT-2 tensor names
	ConfigFile = "config.json"       // Hugging Face GPT2Config keys
)

// Load reads a checkpoint directory (config.json and model.safetensors) into a
// new model on dev.
func Load(dir string, dev kernels.Device) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	if err := CheckParamsFit(filepath.Join(dir, ModelFile), cfg); err != nil {
		return nil, err
	}
	m, err := New(cfg, dev)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadCheckpoint, filepath.Join(dir, ConfigFile), err)
	}
	if err := m.loadWeights(filepath.Join(dir, ModelFile)); err != nil {
		dev.Free(m.Params)
		return nil, err
	}
	return m, nil
}

// Save writes model.safetensors and config.json into dir (created if needed),
// each atomically: a crash leaves either the old file or the new one. The tied
// lm_head.weight is not written, as Hugging Face's save_pretrained omits it.
func (m *Model) Save(dir string) error { return m.save(dir, nil) }

// SaveWithTokenizer writes a complete checkpoint: the tokenizer files, then
// model.safetensors and config.json, whose bos_token_id and eos_token_id are
// the tokenizer's end-of-text id (GPT-2 uses it for both). It refuses a
// tokenizer with more ids than the model's vocab_size; fewer is fine (a
// vocabulary padded to a multiple of 64, as nanoGPT pads 50257 to 50304).
func SaveWithTokenizer(m *Model, tok *tokenizer.Tokenizer, dir string) error {
	if n := tok.VocabSize(); n > m.Config.VocabSize {
		return fmt.Errorf("%w: the tokenizer has %d ids but the model's vocab_size is %d", ErrConfig, n, m.Config.VocabSize)
	}
	if err := tok.Save(dir); err != nil {
		return err
	}
	var eos *int
	if id := int(tok.EOT()); id >= 0 {
		eos = &id
	}
	return m.save(dir, eos)
}

// save writes the checkpoint; eos is the end-of-text token id when known.
func (m *Model) save(dir string, eos *int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	host := m.Params.F
	if host == nil { // an accelerator: bring the parameters over once
		host = make([]float32, m.Layout.Total)
		m.Dev.Download(host, m.Params)
	}
	if err := WriteParams(filepath.Join(dir, ModelFile), m.Layout.Specs, host); err != nil {
		return err
	}
	// config.json goes last: a directory whose config.json is present has
	// its weights too (each file is atomic, the pair is not).
	return writeConfig(filepath.Join(dir, ConfigFile), m.Config, eos)
}

// loadWeights fills m.Params from a safetensors file after checking that it
// holds exactly this model's tensors, in shape.
func (m *Model) loadWeights(path string) error {
	sf, err := openSafetensors(path)
	if err != nil {
		return err
	}
	defer sf.Close()

	specs := m.Layout.Specs
	index := make(map[string]int, len(specs))
	for i, s := range specs {
		index[s.Name] = i
	}
	have := make([]*stEntry, len(specs))
	var lmHead *stEntry
	var unexpected []string
	for i := range sf.entries {
		e := &sf.entries[i]
		name := canonicalName(e.name, "lm_head.")
		if isAttnBuffer(name) {
			continue // the causal mask buffers older transformers versions saved
		}
		if name == "lm_head.weight" {
			lmHead = e
			continue
		}
		j, ok := index[name]
		if !ok {
			unexpected = append(unexpected, e.name)
			continue
		}
		if have[j] != nil {
			return badFile(path, "tensors %s and %s are the same parameter", have[j].name, e.name)
		}
		have[j] = e
	}
	var missing []string
	for j, e := range have {
		if e == nil {
			missing = append(missing, specs[j].Name)
		}
	}
	if len(missing) > 0 || len(unexpected) > 0 {
		return badFile(path, "%s", mismatch(missing, unexpected))
	}
	check := func(e *stEntry, want []int) error {
		if !floatDType(e.dtype) {
			return badFile(path, "tensor %s has dtype %s, want F32 (or F16, BF16)", e.name, e.dtype)
		}
		if !slices.Equal(e.shape, want) {
			return badFile(path, "tensor %s has shape %s, want %s", e.name, fmtShape(e.shape), fmtShape(want))
		}
		return nil
	}
	for j, e := range have {
		if err := check(e, specs[j].Shape); err != nil {
			return err
		}
	}
	if lmHead != nil {
		if err := check(lmHead, specs[m.Layout.Wte].Shape); err != nil {
			return err
		}
	}

	// On the CPU the parameters are host memory: read straight into them.
	host := m.Params.F
	if host == nil {
		host = make([]float32, m.Layout.Total)
	}
	for j, e := range have {
		s := specs[j]
		if err := sf.read(*e, host[s.Offset:s.Offset+s.Size]); err != nil {
			return err
		}
	}
	if lmHead != nil {
		// troupe's LM head is wte itself, so an untied head cannot be loaded;
		// a tied one written out in full (as some exporters do) is fine.
		wte := specs[m.Layout.Wte]
		w := host[wte.Offset : wte.Offset+wte.Size]
		err := sf.each(*lmHead, func(off int, vals []float32) error {
			for i, v := range vals {
				if math.Float32bits(v) != math.Float32bits(w[off+i]) {
					C := m.Config.Channels
					k := off + i
					return badFile(path, "%s differs from %s at [%d, %d] (%g vs %g): troupe ties the LM head to the token embedding and cannot load an untied head",
						lmHead.name, have[m.Layout.Wte].name, k/C, k%C, v, w[k])
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if m.Params.F == nil {
		m.Dev.Upload(m.Params, host)
	}
	return nil
}

// canonicalName maps a file's tensor name to the Layout's: the original "gpt2"
// upload (a GPT2Model) has no "transformer." prefix; names starting with head
// (the model's head outside the trunk, e.g. "lm_head.") keep theirs.
func canonicalName(name, head string) string {
	if strings.HasPrefix(name, "transformer.") || strings.HasPrefix(name, head) {
		return name
	}
	return "transformer." + name
}

// isAttnBuffer reports whether name is transformer.h.N.attn.bias or
// .attn.masked_bias: the causal-mask buffers, not parameters.
func isAttnBuffer(name string) bool {
	rest, ok := strings.CutPrefix(name, "transformer.h.")
	if !ok {
		return false
	}
	num, rest, ok := strings.Cut(rest, ".")
	if !ok || num == "" || strings.Trim(num, "0123456789") != "" {
		return false
	}
	return rest == "attn.bias" || rest == "attn.masked_bias"
}

// mismatch says which parameters a weights file lacks and which of its
// tensors are no parameter, for an error message.
func mismatch(missing, unexpected []string) string {
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing tensors "+nameList(missing))
	}
	if len(unexpected) > 0 {
		parts = append(parts, "unexpected tensors "+nameList(unexpected))
	}
	return strings.Join(parts, "; ") + " (does config.json match the weights?)"
}

// nameList joins names for an error message, eliding after the first ten.
func nameList(names []string) string {
	const show = 10
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// hfConfig is config.json as Hugging Face's GPT2Config writes it, keys in its
// (sorted) order. troupe's GPT-2 has no dropout, but the fields keep their
// Hugging Face defaults so that fine-tuning the checkpoint there behaves as
// it does for the original GPT-2.
type hfConfig struct {
	ActivationFunction         string      `json:"activation_function"`
	Architectures              []string    `json:"architectures"`
	AttnPdrop                  float64     `json:"attn_pdrop"`
	BosTokenID                 *int        `json:"bos_token_id,omitempty"`
	EmbdPdrop                  float64     `json:"embd_pdrop"`
	EosTokenID                 *int        `json:"eos_token_id,omitempty"`
	InitializerRange           float64     `json:"initializer_range"`
	LayerNormEpsilon           json.Number `json:"layer_norm_epsilon"`
	ModelType                  string      `json:"model_type"`
	NCtx                       int         `json:"n_ctx"`
	NEmbd                      int         `json:"n_embd"`
	NHead                      int         `json:"n_head"`
	NInner                     *int        `json:"n_inner"` // null: 4*n_embd
	NLayer                     int         `json:"n_layer"`
	NPositions                 int         `json:"n_positions"`
	ReorderAndUpcastAttn       bool        `json:"reorder_and_upcast_attn"`
	ResidPdrop                 float64     `json:"resid_pdrop"`
	ScaleAttnByInverseLayerIdx bool        `json:"scale_attn_by_inverse_layer_idx"`
	ScaleAttnWeights           bool        `json:"scale_attn_weights"`
	SummaryActivation          *string     `json:"summary_activation"`
	SummaryFirstDropout        float64     `json:"summary_first_dropout"`
	SummaryProjToLabels        bool        `json:"summary_proj_to_labels"`
	SummaryType                string      `json:"summary_type"`
	SummaryUseProj             bool        `json:"summary_use_proj"`
	TieWordEmbeddings          bool        `json:"tie_word_embeddings"`
	TorchDtype                 string      `json:"torch_dtype"`
	UseCache                   bool        `json:"use_cache"`
	VocabSize                  int         `json:"vocab_size"`
}

// writeConfig writes cfg as a Hugging Face GPT-2 config.json, atomically.
func writeConfig(path string, cfg Config, eos *int) error {
	return WriteConfig(path, cfg, eos, nil)
}

// WriteConfig writes cfg as a Hugging Face GPT-2 config.json (keys sorted),
// atomically, with extra's keys added or replacing the GPT-2 ones (e.g.
// architectures, num_labels, pad_token_id for another head).
func WriteConfig(path string, cfg Config, eos *int, extra map[string]any) error {
	h := hfConfig{
		ActivationFunction: "gelu_new",
		Architectures:      []string{"GPT2LMHeadModel"},
		AttnPdrop:          0.1,
		BosTokenID:         eos, // GPT-2 begins documents with its end-of-text token
		EmbdPdrop:          0.1,
		EosTokenID:         eos,
		InitializerRange:   0.02,
		// Formatted at float32 precision so 1e-5 is written "1e-05", not 9.99999974737875e-06.
		LayerNormEpsilon:    json.Number(strconv.FormatFloat(float64(cfg.LayerNormEps), 'g', -1, 32)),
		ModelType:           "gpt2",
		NCtx:                cfg.MaxSeqLen,
		NEmbd:               cfg.Channels,
		NHead:               cfg.NumHeads,
		NLayer:              cfg.NumLayers,
		NPositions:          cfg.MaxSeqLen,
		ResidPdrop:          0.1,
		ScaleAttnWeights:    true,
		SummaryFirstDropout: 0.1,
		SummaryProjToLabels: true,
		SummaryType:         "cls_index",
		SummaryUseProj:      true,
		TieWordEmbeddings:   true,
		TorchDtype:          "float32",
		UseCache:            true,
		VocabSize:           cfg.VocabSize,
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	keys := map[string]any{}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // numbers as written, 1e-05 included
	if err := d.Decode(&keys); err != nil {
		return err
	}
	maps.Copy(keys, extra)
	b, err = json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// LoadConfig reads dir/config.json (Hugging Face GPT2Config keys). It refuses
// what troupe's GPT-2 does not compute: another model_type, another activation,
// an MLP width other than 4*n_embd, unscaled or layer-scaled attention, or an
// untied LM head. Keys it does not use (dropout, summary_*) are ignored.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	var h struct {
		ModelType                  *string  `json:"model_type"`
		ActivationFunction         *string  `json:"activation_function"`
		NEmbd                      *int     `json:"n_embd"`
		NLayer                     *int     `json:"n_layer"`
		NHead                      *int     `json:"n_head"`
		NPositions                 *int     `json:"n_positions"`
		VocabSize                  *int     `json:"vocab_size"`
		LayerNormEpsilon           *float64 `json:"layer_norm_epsilon"`
		NInner                     *int     `json:"n_inner"`
		ScaleAttnWeights           *bool    `json:"scale_attn_weights"`
		ScaleAttnByInverseLayerIdx *bool    `json:"scale_attn_by_inverse_layer_idx"`
		TieWordEmbeddings          *bool    `json:"tie_word_embeddings"`
		AddCrossAttention          *bool    `json:"add_cross_attention"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&h); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Config{}, badFile(path, "key %s: want %v, got a JSON %s", te.Field, te.Type, te.Value)
		}
		return Config{}, badFile(path, "invalid JSON: %v", err)
	}
	if dec.More() {
		return Config{}, badFile(path, "invalid JSON: data after the object")
	}
	switch {
	case h.ModelType == nil:
		return Config{}, badFile(path, `model_type is missing, want "gpt2"`)
	case *h.ModelType != "gpt2":
		return Config{}, badFile(path, `model_type is %q, want "gpt2"`, *h.ModelType)
	case h.ActivationFunction != nil && *h.ActivationFunction != "gelu_new" && *h.ActivationFunction != "gelu_pytorch_tanh":
		return Config{}, badFile(path, `activation_function is %q, want "gelu_new" or "gelu_pytorch_tanh"`, *h.ActivationFunction)
	case h.ScaleAttnWeights != nil && !*h.ScaleAttnWeights:
		return Config{}, badFile(path, "scale_attn_weights is false, want true (troupe scales attention by 1/sqrt(head size))")
	case h.ScaleAttnByInverseLayerIdx != nil && *h.ScaleAttnByInverseLayerIdx:
		return Config{}, badFile(path, "scale_attn_by_inverse_layer_idx is true, want false")
	case h.TieWordEmbeddings != nil && !*h.TieWordEmbeddings:
		return Config{}, badFile(path, "tie_word_embeddings is false, want true (troupe ties lm_head to wte)")
	case h.AddCrossAttention != nil && *h.AddCrossAttention:
		return Config{}, badFile(path, "add_cross_attention is true, want false")
	}
	ints := []struct {
		key string
		v   *int
	}{{"n_embd", h.NEmbd}, {"n_layer", h.NLayer}, {"n_head", h.NHead}, {"n_positions", h.NPositions}, {"vocab_size", h.VocabSize}}
	for _, k := range ints {
		if k.v == nil {
			return Config{}, badFile(path, "%s is missing", k.key)
		}
	}
	cfg := Config{
		VocabSize:    *h.VocabSize,
		MaxSeqLen:    *h.NPositions,
		NumLayers:    *h.NLayer,
		NumHeads:     *h.NHead,
		Channels:     *h.NEmbd,
		LayerNormEps: 1e-5, // GPT2Config's default
	}
	if h.LayerNormEpsilon != nil {
		if *h.LayerNormEpsilon > math.MaxFloat32 {
			return Config{}, badFile(path, "layer_norm_epsilon %g is out of float32 range", *h.LayerNormEpsilon)
		}
		cfg.LayerNormEps = float32(*h.LayerNormEpsilon)
	}
	if h.NInner != nil && *h.NInner != 4*cfg.Channels {
		return Config{}, badFile(path, "n_inner is %d, want null or 4*n_embd = %d", *h.NInner, 4*cfg.Channels)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrBadCheckpoint, path, err)
	}
	return cfg, nil
}
