#!/usr/bin/env python3
"""PyTorch reference for `troupe bench`: the same GPT-2 configs, measured the same way.

Run by `troupe bench --torch` (or by hand) with Debian's /usr/bin/python3 (python3-torch).
Prints one JSON line per measurement, with the same field names as troupe's own lines:
  train    : forward + backward + AdamW on (batch, seq) random tokens       -> tokens_per_s
  generate : KV-cache sampling, batch 8, 16-token prompts, 64 new tokens    -> new_tokens_per_s
  score    : no-grad forward + log-softmax gather of every next token       -> tokens_per_s
--positions, --batch and --seq override the config's (sequence-length scaling runs
`small` with 1024 positions); --gen-warmup and --gen-steps set generation's calls.
Timings are medians over --steps after --warmup. OMP_WAIT_POLICY=PASSIVE is set by the
caller: torch's OpenMP pool and OpenBLAS's threads otherwise fight over the cores.
"""
import argparse, json, math, statistics, time
import torch
import torch.nn.functional as F

CONFIGS = {  # name: (vocab, n_positions, n_layer, n_head, n_embd, train batch, train seq)
    "tiny": (256, 128, 4, 4, 128, 16, 128),
    "small": (512, 256, 6, 6, 384, 8, 256),
    "gpt2": (50257, 256, 12, 12, 768, 4, 256),
}


class Block(torch.nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(C, eps=1e-5), torch.nn.LayerNorm(C, eps=1e-5)
        self.c_attn, self.c_proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
        self.c_fc, self.mlp_proj = torch.nn.Linear(C, 4 * C), torch.nn.Linear(4 * C, C)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.H)
        if T > 1:
            Tk = k.shape[2]
            keep = torch.ones(T, Tk, dtype=torch.bool).tril(Tk - T)
            att = att.masked_fill(~keep, float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, V, P, L, H, C):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(V, C), torch.nn.Embedding(P, C)
        self.h = torch.nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(C, eps=1e-5)
        for p in self.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, caches=None, pos0=0):
        x = self.wte(idx) + self.wpe(torch.arange(pos0, pos0 + idx.shape[1]))
        for i, blk in enumerate(self.h):
            x = blk(x, None if caches is None else caches[i])
        return self.ln_f(x) @ self.wte.weight.t()


def median_time(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--what", default="train,generate,score")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--positions", type=int, default=0, help="position table size, 0 = the config's")
    ap.add_argument("--batch", type=int, default=0, help="training batch, 0 = the config's")
    ap.add_argument("--seq", type=int, default=0, help="training sequence length, 0 = the config's")
    ap.add_argument("--gen-warmup", type=int, default=1, help="untimed generation calls")
    ap.add_argument("--gen-steps", type=int, default=0, help="timed generation calls, 0 = max(2, steps/2)")
    ap.add_argument("--score-steps-factor", type=int, default=1, help="timed scoring calls = this times --steps")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    V, P, L, H, C, B, T = CONFIGS[a.config]
    P, B, T = a.positions or P, a.batch or B, a.seq or T
    if T > P or a.prompt_len + a.new_tokens > P:
        ap.error(f"--seq {T} or --prompt-len + --new-tokens {a.prompt_len + a.new_tokens} exceeds the {P} positions")
    model = GPT(V, P, L, H, C)
    base = dict(impl="pytorch", torch=torch.__version__, config=a.config, threads=a.threads)
    emit = lambda d: print(json.dumps({**base, **d}), flush=True)

    if "train" in a.what:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

        def step():
            loss = F.cross_entropy(model(x).view(-1, V), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        med = median_time(step, a.warmup, a.steps)
        emit(dict(bench="train", batch=B, seq=T, ms_per_step=round(med * 1e3, 2), tokens_per_s=round(B * T / med, 1)))

    model.eval()
    prompt = torch.randint(0, V, (a.gen_batch, a.prompt_len))
    seqs = []

    @torch.no_grad()
    def generate():
        caches = [[None, None] for _ in range(L)]
        logits = model(prompt, caches, 0)[:, -1, :]
        out = [prompt]
        for i in range(a.new_tokens):
            nxt = torch.multinomial(logits.softmax(-1), 1)
            out.append(nxt)
            if i + 1 < a.new_tokens:
                logits = model(nxt, caches, a.prompt_len + i)[:, -1, :]
        seqs[:] = [torch.cat(out, 1)]

    if "generate" in a.what or "score" in a.what:
        med = median_time(generate, a.gen_warmup, a.gen_steps or max(2, a.steps // 2))
        if "generate" in a.what:
            emit(dict(bench="generate", batch=a.gen_batch, prompt_len=a.prompt_len, new_tokens=a.new_tokens,
                      ms=round(med * 1e3, 1), new_tokens_per_s=round(a.gen_batch * a.new_tokens / med, 1)))
    if "score" in a.what:
        s = seqs[0]
        inp, tgt = s[:, :-1], s[:, 1:]

        @torch.no_grad()
        def score():
            return F.log_softmax(model(inp), -1).gather(-1, tgt.unsqueeze(-1))

        med = median_time(score, 1, a.score_steps_factor * a.steps)
        emit(dict(bench="score", batch=s.shape[0], seq=inp.shape[1], ms=round(med * 1e3, 2),
                  tokens_per_s=round(inp.numel() / med, 1)))


if __name__ == "__main__":
    main()
