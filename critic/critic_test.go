package critic

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/reward"
)

// gradConfig is deliberately odd: 3 heads of 5, vocabulary 29, 7 positions.
var gradConfig = policy.Config{VocabSize: 29, MaxSeqLen: 7, NumLayers: 2, NumHeads: 3, Channels: 15, LayerNormEps: 1e-5}

// randomWeights fills a layout with random values (std `std`, LayerNorm gains
// 1 ± std, any head N(0,1)), so no gradient is trivially 0.
func randomWeights(l policy.Layout, seed uint64, std float64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	host := make([]float32, l.Total)
	for _, s := range l.Specs {
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			v := rng.NormFloat64() * std
			switch {
			case s.Name == HeadWeightName || s.Name == HeadBiasName || s.Name == reward.HeadName:
				v = rng.NormFloat64()
			case strings.HasSuffix(s.Name, "ln_1.weight"), strings.HasSuffix(s.Name, "ln_2.weight"), strings.HasSuffix(s.Name, "ln_f.weight"):
				v += 1
			}
			host[i] = float32(v)
		}
	}
	return host
}

func randomModel(t testing.TB, cfg policy.Config, seed uint64, std float64) *Model {
	t.Helper()
	m, err := New(cfg, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetWeights(randomWeights(m.Layout(), seed, std)); err != nil {
		t.Fatal(err)
	}
	return m
}

func randomTokens(rng *rand.Rand, n, V int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(rng.IntN(V))
	}
	return out
}

func randomVec(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

// TestValuesGradient compares Backward with central finite differences of
// Σ dvalues·Values at the whole head and a few elements of every trunk tensor,
// then checks that a second Backward adds the same again.
func TestValuesGradient(t *testing.T) {
	m := randomModel(t, gradConfig, 1, 0.3)
	B, T := 2, 5
	rng := rand.New(rand.NewPCG(2, 2))
	tokens := randomTokens(rng, B*T, gradConfig.VocabSize)
	dvalues := randomVec(rng, B*T)
	dvalues[3] = 0
	f := func() float64 {
		var s float64
		for i, v := range m.Values(tokens, B, T) {
			s += float64(dvalues[i]) * float64(v)
		}
		return s
	}
	f()
	m.ZeroGrad()
	m.Backward(dvalues)
	grads := make([]float32, m.Grads.N)
	m.Dev.Download(grads, m.Grads)

	params := m.Weights()
	const h = 1e-2
	checked := 0
	for _, s := range m.Layout().Specs {
		idx := []int{s.Offset + rng.IntN(s.Size), s.Offset + rng.IntN(s.Size), s.Offset + rng.IntN(s.Size)}
		if s.Name == HeadWeightName || s.Name == HeadBiasName {
			idx = idx[:0]
			for i := s.Offset; i < s.Offset+s.Size; i++ {
				idx = append(idx, i)
			}
		}
		for _, i := range idx {
			orig := params[i]
			params[i] = orig + h
			m.SetWeights(params)
			up := f()
			params[i] = orig - h
			m.SetWeights(params)
			down := f()
			params[i] = orig
			m.SetWeights(params)
			num := (up - down) / (2 * h)
			got := float64(grads[i])
			// float32 forwards put ~5e-4 of noise into a difference at h=1e-2.
			if math.Abs(got-num) > 1e-3+2e-2*math.Abs(num) {
				t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", s.Name, i-s.Offset, got, num)
			}
			checked++
		}
	}
	t.Logf("checked %d gradients", checked)
	// The bias's gradient is exactly Σ dvalues.
	var sum float64
	for _, d := range dvalues {
		sum += float64(d)
	}
	if g := grads[len(grads)-1]; math.Abs(float64(g)-sum) > 1e-5 {
		t.Fatalf("bias gradient %v, want Σ dvalues = %v", g, sum)
	}

	m.Values(tokens, B, T)
	m.Backward(dvalues)
	twice := make([]float32, m.Grads.N)
	m.Dev.Download(twice, m.Grads)
	for i := range twice {
		if d := math.Abs(float64(twice[i] - 2*grads[i])); d > 1e-5+1e-5*math.Abs(float64(grads[i])) {
			t.Fatalf("grad %d: second pass gives %v, want 2*%v", i, twice[i], grads[i])
		}
	}
	m.ReleaseWorkspace()
	defer func() {
		if err, _ := recover().(error); !errors.Is(err, policy.ErrNoForward) {
			t.Fatalf("Backward after ReleaseWorkspace: got panic %v, want ErrNoForward", err)
		}
	}()
	m.Backward(dvalues)
}

// TestFromReward: a critic started from a reward model values every
// sequence's last token at its reward, and shares nothing with it.
func TestFromReward(t *testing.T) {
	r, err := reward.New(gradConfig, kernels.NewCPU(2), -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(randomWeights(r.Layout(), 3, 0.3)); err != nil {
		t.Fatal(err)
	}
	m, err := FromReward(r)
	if err != nil {
		t.Fatal(err)
	}
	if b := m.Weights()[m.NumParams()-1]; b != 0 {
		t.Fatalf("bias %v, want 0", b)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var seqs [][]int32
	for _, n := range []int{7, 3, 1, 5} {
		seqs = append(seqs, randomTokens(rng, n, gradConfig.VocabSize))
	}
	want, err := r.Scores(seqs)
	if err != nil {
		t.Fatal(err)
	}
	B, T := len(seqs), gradConfig.MaxSeqLen
	tokens := make([]int32, B*T) // right-padded with 0
	for b, s := range seqs {
		copy(tokens[b*T:], s)
	}
	v := m.Values(tokens, B, T)
	for b, s := range seqs {
		got := v[b*T+len(s)-1]
		if math.Abs(float64(got-want[b])) > 1e-5*(1+math.Abs(float64(want[b]))) {
			t.Fatalf("sequence %d: value at the last token %v, reward %v", b, got, want[b])
		}
	}
	// No aliasing: changing the reward model leaves the critic as it was.
	before := m.Weights()
	r.SetWeights(make([]float32, r.NumParams()))
	for i, w := range m.Weights() {
		if w != before[i] {
			t.Fatalf("weight %d changed with the reward model", i)
		}
	}
}

// TestFromPolicy: the trunk is a copy of the policy's parameters, the head
// small and seeded, the bias 0.
func TestFromPolicy(t *testing.T) {
	p, err := policy.New(gradConfig, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	p.Init(4)
	m, err := FromPolicy(p, 5)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := FromPolicy(p, 5)
	w, w2 := m.Weights(), again.Weights()
	total, C := p.Layout.Total, gradConfig.Channels
	for i := range w {
		if i < total && w[i] != p.Params.F[i] {
			t.Fatalf("trunk param %d: %v, want %v", i, w[i], p.Params.F[i])
		}
		if w[i] != w2[i] {
			t.Fatalf("param %d differs between two FromPolicy with one seed", i)
		}
	}
	var ss float64
	for _, v := range w[total : total+C] {
		ss += float64(v) * float64(v)
	}
	if std := math.Sqrt(ss / float64(C)); std == 0 || std > 3*HeadInitScale/math.Sqrt(float64(C)) || w[total+C] != 0 {
		t.Fatalf("head std %v bias %v, want ~%v and 0", std, w[total+C], HeadInitScale/math.Sqrt(float64(C)))
	}
	p.Params.F[0] += 1 // the policy trains on: the critic must not see it
	if m.Weights()[0] == p.Params.F[0] {
		t.Fatalf("the critic's trunk aliases the policy's parameters")
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestSaveLoadRoundTrip: a saved critic loads with the same bits and gives the
// same values; the files carry Hugging Face's names and the critic mark.
func TestSaveLoadRoundTrip(t *testing.T) {
	m := randomModel(t, gradConfig, 6, 0.3)
	dir := filepath.Join(t.TempDir(), "critic")
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Trunk.Config != gradConfig || !sameBits(got.Weights(), m.Weights()) {
		t.Fatalf("loaded config %+v or weights differ", got.Trunk.Config)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	tokens := randomTokens(rng, 3*gradConfig.MaxSeqLen, gradConfig.VocabSize)
	if a, b := m.Values(tokens, 3, gradConfig.MaxSeqLen), got.Values(tokens, 3, gradConfig.MaxSeqLen); !sameBits(a, b) {
		t.Fatalf("values: saved %v, loaded %v", a, b)
	}
	ts, err := policy.ReadSafetensors(filepath.Join(dir, policy.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	C := gradConfig.Channels
	if s := ts[HeadWeightName].Shape; len(s) != 2 || s[0] != 1 || s[1] != C {
		t.Fatalf("%s shape %v, want [1 %d]", HeadWeightName, s, C)
	}
	if s := ts[HeadBiasName].Shape; len(s) != 1 || s[0] != 1 {
		t.Fatalf("%s shape %v, want [1]", HeadBiasName, s)
	}
	if _, ok := ts["transformer.h.1.mlp.c_proj.weight"]; !ok || len(ts) != len(m.Layout().Specs) {
		t.Fatalf("%d tensors, want %d with Hugging Face names", len(ts), len(m.Layout().Specs))
	}
	var conf map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, policy.ConfigFile))
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if conf[KindKey] != Kind || conf["architectures"].([]any)[0] != Architecture || conf["model_type"] != "gpt2" {
		t.Fatalf("config.json: %s %v architectures %v", KindKey, conf[KindKey], conf["architectures"])
	}
}

// TestLoadRefusals: a critic checkpoint with a tensor missing, mis-shaped,
// extra or cut short, or another model's checkpoint, is refused with the name
// and the reason.
func TestLoadRefusals(t *testing.T) {
	m := randomModel(t, gradConfig, 7, 0.3)
	good := t.TempDir()
	if err := m.Save(good); err != nil {
		t.Fatal(err)
	}
	saved, err := policy.ReadSafetensors(filepath.Join(good, policy.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	// withTensors writes a copy of the good checkpoint whose tensors are edit's.
	withTensors := func(edit func([]policy.SafeTensor) []policy.SafeTensor) string {
		dir := t.TempDir()
		var list []policy.SafeTensor
		for _, s := range m.Layout().Specs {
			list = append(list, saved[s.Name])
		}
		if err := policy.WriteSafetensors(filepath.Join(dir, policy.ModelFile), edit(list), nil); err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(filepath.Join(good, policy.ConfigFile))
		os.WriteFile(filepath.Join(dir, policy.ConfigFile), raw, 0o644)
		return dir
	}
	specs := m.Layout().Specs
	n, attn := len(specs), m.Trunk.Layout.Layers[0].AttnW
	truncated := withTensors(func(l []policy.SafeTensor) []policy.SafeTensor { return l })
	p := filepath.Join(truncated, policy.ModelFile)
	raw, _ := os.ReadFile(p)
	os.WriteFile(p, raw[:len(raw)-10], 0o644)
	otherKind := withTensors(func(l []policy.SafeTensor) []policy.SafeTensor { return l })
	conf := map[string]any{}
	raw, _ = os.ReadFile(filepath.Join(otherKind, policy.ConfigFile))
	json.Unmarshal(raw, &conf)
	conf[KindKey] = "reward"
	raw, _ = json.Marshal(conf)
	os.WriteFile(filepath.Join(otherKind, policy.ConfigFile), raw, 0o644)

	lm := t.TempDir()
	if err := m.Trunk.Save(lm); err != nil {
		t.Fatal(err)
	}
	r, _ := reward.New(gradConfig, kernels.NewCPU(1), -1)
	rm := t.TempDir()
	if err := r.Save(rm, nil); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		dir  string
		want []string
	}{
		{"missing bias", withTensors(func(l []policy.SafeTensor) []policy.SafeTensor { return l[:n-1] }),
			[]string{"missing tensors", HeadBiasName}},
		{"mis-shaped head", withTensors(func(l []policy.SafeTensor) []policy.SafeTensor {
			l[n-2].Shape = []int{gradConfig.Channels}
			return l
		}), []string{HeadWeightName, "shape"}},
		{"mis-shaped trunk", withTensors(func(l []policy.SafeTensor) []policy.SafeTensor {
			l[attn].Shape = []int{l[attn].Shape[1], l[attn].Shape[0]} // transposed
			return l
		}), []string{specs[attn].Name, "shape"}},
		{"extra tensor", withTensors(func(l []policy.SafeTensor) []policy.SafeTensor {
			return append(l, policy.SafeTensor{Name: "value_head.scale", Shape: []int{1}, Data: []float32{1}})
		}), []string{"unexpected tensors", "value_head.scale"}},
		{"truncated file", truncated, []string{"truncated"}},
		{"another kind", otherKind, []string{KindKey, "reward"}},
		{"language model", lm, []string{HeadWeightName, "FromPolicy"}},
		{"reward model", rm, []string{reward.HeadName, "FromReward"}},
	} {
		_, err := Load(tc.dir, kernels.NewCPU(1))
		if !errors.Is(err, ErrBadCheckpoint) {
			t.Errorf("%s: got %v, want ErrBadCheckpoint", tc.name, err)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
	}
}

// TestLearnsReturns: AdamW through Optim fits the values of fixed sequences to
// fixed returns (mean squared error), so the gradient, the head and the
// optimizer wiring all work together.
func TestLearnsReturns(t *testing.T) {
	p, err := policy.New(gradConfig, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	p.Init(8)
	m, err := FromPolicy(p, 8)
	if err != nil {
		t.Fatal(err)
	}
	opt := policy.NewAdamW(m.Optim(), policy.AdamWConfig{LR: 3e-3, WeightDecay: 0.01, GradClip: 1})
	if opt.M.N != m.NumParams() {
		t.Fatalf("moments %d, params %d", opt.M.N, m.NumParams())
	}
	B, T := 4, gradConfig.MaxSeqLen
	rng := rand.New(rand.NewPCG(8, 8))
	tokens := randomTokens(rng, B*T, gradConfig.VocabSize)
	returns := randomVec(rng, B*T)
	mse := func(v []float32) (float64, []float32) {
		var s float64
		d := make([]float32, len(v))
		for i := range v {
			e := float64(v[i] - returns[i])
			s += e * e
			d[i] = float32(2 * e / float64(len(v)))
		}
		return s / float64(len(v)), d
	}
	var first, loss float64
	for step := range 40 {
		var dv []float32
		loss, dv = mse(m.Values(tokens, B, T))
		if step == 0 {
			first = loss
		}
		m.ZeroGrad()
		m.Backward(dv)
		opt.Update(m.Optim(), opt.Config.LR)
	}
	t.Logf("mse %.4f -> %.4f in 40 steps", first, loss)
	if !(loss < first/3) {
		t.Fatalf("mse %.4f -> %.4f after 40 steps, want below a third", first, loss)
	}
}
