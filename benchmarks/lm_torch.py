"""The PyTorch side of ``benchmarks.lm``: the project's transformer, written as a user
would in PyTorch, with a preallocated KV cache and a greedy decoding loop.

Weights are copied from the Flax parameters (``from_flax``), so both sides
compute the same function; the benchmark checks that they emit the same tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)


def to_torch(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


class TorchLM:
    """Pre-LN decoder (same maths as ``inferax.models.transformer.Transformer``)."""

    def __init__(self, p: dict, num_layers: int, num_heads: int):
        self.p, self.layers, self.heads = p, num_layers, num_heads
        self.d = p["embed"].shape[1]
        self.hd = self.d // num_heads

    def _ln(self, x, name):
        return F.layer_norm(x, (self.d,), self.p[name + ".scale"], self.p[name + ".bias"], 1e-6)

    def step(self, tokens, pos, k_cache, v_cache, start):
        """tokens [N, T] at cache slots [start, start + T); returns logits [N, T, V]."""
        p = self.p
        n, t = tokens.shape
        x = p["embed"][tokens] + p["pos"][pos]
        end = start + t
        causal = torch.ones(t, end, dtype=torch.bool).tril(diagonal=start)
        for i in range(self.layers):
            h = self._ln(x, f"ln1_{i}")
            qkv = torch.einsum("ntd,dchk->ntchk", h, p[f"qkv_{i}.kernel"]) + p[f"qkv_{i}.bias"]
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            k_cache[i][:, start:end] = k
            v_cache[i][:, start:end] = v
            kc, vc = k_cache[i][:, :end], v_cache[i][:, :end]
            att = torch.einsum("nthd,nshd->nhts", q, kc) / self.hd**0.5
            att = att.masked_fill(~causal, -1e9).softmax(-1)
            o = torch.einsum("nhts,nshd->nthd", att, vc)
            x = x + torch.einsum("nthd,hdm->ntm", o, p[f"proj_{i}.kernel"]) + p[f"proj_{i}.bias"]
            h = self._ln(x, f"ln2_{i}")
            up = F.gelu(h @ p[f"up_{i}.kernel"] + p[f"up_{i}.bias"], approximate="tanh")
            x = x + up @ p[f"down_{i}.kernel"] + p[f"down_{i}.bias"]
        return self._ln(x, "ln_f") @ p["head.kernel"] + p["head.bias"]


def from_flax(model, params) -> TorchLM:
    flat = {}
    for name, sub in params["params"].items():
        for leaf, value in sub.items():
            key = name if leaf == "embedding" else f"{name}.{leaf}"
            flat[key] = to_torch(np.asarray(value, np.float32))
    return TorchLM(flat, model.num_layers, model.num_heads)


def greedy(m: TorchLM, prompts: torch.Tensor, new_tokens: int) -> np.ndarray:
    """Prefill then ``new_tokens`` greedy steps with a preallocated cache."""
    n, p = prompts.shape
    size = p + new_tokens
    kc = [torch.zeros(n, size, m.heads, m.hd) for _ in range(m.layers)]
    vc = [torch.zeros(n, size, m.heads, m.hd) for _ in range(m.layers)]
    pos = torch.arange(p).expand(n, p)
    logits = m.step(prompts.long(), pos, kc, vc, 0)[:, -1]
    out = torch.empty(n, new_tokens, dtype=torch.long)
    for t in range(new_tokens):
        tok = logits.argmax(-1)
        out[:, t] = tok
        logits = m.step(tok[:, None], torch.full((n, 1), p + t), kc, vc, p + t)[:, 0]
    return out.numpy().astype(np.int32)
