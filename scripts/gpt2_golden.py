#!/usr/bin/python3
"""Golden fixtures for troupe's GPT-2: PyTorch computes, Go must agree.

Run from the repository root with Debian's python3 (python3-torch; no `transformers`):
    /usr/bin/python3 scripts/gpt2_golden.py

For a few deliberately odd shapes (head counts and widths that are not powers of two)
it draws random weights, writes each model as a Hugging Face checkpoint directory
    testdata/golden/<name>/model.safetensors   (F32, HF tensor names, Conv1D [in,out])
    testdata/golden/<name>/config.json         (HF GPT2Config keys)
and testdata/golden/<name>/golden.json with what the model computes, in float64:
    sequences / logprobs : ragged token sequences and log p(s[j+1] | s[:j+1])
    logits               : the full (T, V) logits of one sequence
    greedy               : prompts and their greedy continuations with log-probs
                           (each step's top-2 margin is recorded; prompts whose
                           argmax is a near tie are skipped so float32 agrees)

The model below re-implements the math of transformers' GPT2LMHeadModel (eval mode:
dropout off) module for module, with its parameter names, so that the state_dict
keys are exactly those of `transformer.*` in a real checkpoint:
    h = wte[ids] + wpe[pos]
    per block: a = c_attn(ln_1(h)) -> q,k,v heads; softmax(q k^T / sqrt(hd) + causal) v
               h = h + c_proj(a);  h = h + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(h))))
    logits = ln_f(h) @ wte^T       (lm_head tied to wte, not stored)
Conv1D computes x @ W + b with W stored [in, out], as in transformers.pytorch_utils.
"""
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "testdata", "golden")

# name: (vocab_size, n_positions, n_layer, n_head, n_embd, layer_norm_epsilon, seed)
CONFIGS = {
    "l2h3c36": (97, 64, 2, 3, 36, 1e-5, 1),
    "l3h5c30": (211, 48, 3, 5, 30, 1e-5, 2),
    "l1h1c7": (13, 9, 1, 1, 7, 1e-3, 3),
}


class Conv1D(torch.nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer with weight [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(nx, nf))
        self.bias = torch.nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(torch.nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.n_head, self.head_dim = H, C // H
        self.c_attn = Conv1D(3 * C, C)
        self.c_proj = Conv1D(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        heads = lambda t: t.view(B, T, self.n_head, self.head_dim).permute(0, 2, 1, 3)
        q, k, v = heads(q), heads(k), heads(v)
        w = torch.matmul(q, k.transpose(-1, -2)) / (v.size(-1) ** 0.5)
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = torch.softmax(w, dim=-1)
        a = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(B, T, C)
        return self.c_proj(a)


class GPT2MLP(torch.nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = Conv1D(4 * C, C)
        self.c_proj = Conv1D(C, 4 * C)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class GPT2Block(torch.nn.Module):
    def __init__(self, C, H, eps):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(C, eps=eps)
        self.attn = GPT2Attention(C, H)
        self.ln_2 = torch.nn.LayerNorm(C, eps=eps)
        self.mlp = GPT2MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(torch.nn.Module):
    def __init__(self, V, P, L, H, C, eps):
        super().__init__()
        self.wte = torch.nn.Embedding(V, C)
        self.wpe = torch.nn.Embedding(P, C)
        self.h = torch.nn.ModuleList(GPT2Block(C, H, eps) for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(C, eps=eps)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT2LMHeadModel(torch.nn.Module):
    def __init__(self, V, P, L, H, C, eps):
        super().__init__()
        self.transformer = GPT2Model(V, P, L, H, C, eps)

    def forward(self, ids):  # ids (B, T) -> logits (B, T, V)
        return self.transformer(ids) @ self.transformer.wte.weight.t()


def randomize(model, gen):
    """Random weights large enough that logits are far from flat, including
    non-trivial LayerNorm gains and biases, drawn in float32 (what is saved)."""
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "wte" in name or "wpe" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def write_safetensors(path, tensors):
    """The safetensors format by hand: u64 LE header length, JSON header, raw LE data."""
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # pad so the data starts 8-byte aligned, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def logprobs(model, seq):
    """log p(seq[j+1] | seq[:j+1]) for j in 0..len-2, float64."""
    ids = torch.tensor([seq])
    lp = torch.log_softmax(model(ids)[0], dim=-1)
    return [lp[j, seq[j + 1]].item() for j in range(len(seq) - 1)]


def greedy(model, prompt, n, P):
    """Greedy continuation (full recompute each step, no cache); returns tokens,
    their log-probs and the smallest top-1/top-2 logit margin seen."""
    seq, toks, lps, margin = list(prompt), [], [], float("inf")
    while len(toks) < n and len(seq) < P:
        logits = model(torch.tensor([seq]))[0, -1]
        top = torch.topk(logits, 2).values
        margin = min(margin, (top[0] - top[1]).item())
        t = int(torch.argmax(logits))
        toks.append(t)
        lps.append(torch.log_softmax(logits, -1)[t].item())
        seq.append(t)
    return toks, lps, margin


def main():
    torch.set_num_threads(1)
    for name, (V, P, L, H, C, eps, seed) in CONFIGS.items():
        gen = torch.Generator().manual_seed(seed)
        model = GPT2LMHeadModel(V, P, L, H, C, eps)
        randomize(model, gen)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), list(model.state_dict().items()))
        config = {
            "activation_function": "gelu_new",
            "architectures": ["GPT2LMHeadModel"],
            "layer_norm_epsilon": eps,
            "model_type": "gpt2",
            "n_ctx": P,
            "n_embd": C,
            "n_head": H,
            "n_layer": L,
            "n_positions": P,
            "scale_attn_weights": True,
            "tie_word_embeddings": True,
            "vocab_size": V,
        }
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")

        model = model.double().eval()  # the reference numbers are float64
        rand = lambda n: torch.randint(0, V, (n,), generator=gen).tolist()
        lengths = sorted({1, 2, 3, min(7, P), min(P // 2 + 1, P), P})
        seqs = [rand(n) for n in lengths]
        out = {"config": name, "vocab_size": V, "n_positions": P, "sequences": [], "logprobs": []}
        with torch.no_grad():
            for s in seqs:
                out["sequences"].append(s)
                out["logprobs"].append(logprobs(model, s))
            ls = rand(min(6, P))
            out["logits_sequence"] = ls
            out["logits"] = [[round(x, 12) for x in row] for row in model(torch.tensor([ls]))[0].tolist()]
            out["greedy"] = []
            tries = 0
            while len(out["greedy"]) < 3:
                tries += 1
                if tries > 200:
                    sys.exit(f"{name}: no prompts without near-tied greedy steps")
                prompt = rand(1 + int(torch.randint(0, min(8, P - 1), (1,), generator=gen)))
                toks, lps, margin = greedy(model, prompt, min(12, P - len(prompt)), P)
                if margin < 1e-3:
                    continue
                out["greedy"].append({"prompt": prompt, "tokens": toks, "logprobs": lps, "min_margin": margin})
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(out, f)
            f.write("\n")
        print(f"{name}: V={V} P={P} L={L} H={H} C={C} eps={eps} -> {d}")


if __name__ == "__main__":
    main()
