"""A decoder-only GPT, the built-in model family of isoflop (in the spirit of nanoGPT's model.py).

token embedding -> n_layer x [RMSNorm -> causal self-attention (rotary) -> residual,
RMSNorm -> MLP (GELU or SwiGLU) -> residual] -> RMSNorm -> output layer (tied or not).
No biases anywhere. Options: QK-norm (per-head RMSNorm on q and k), z-loss, muP.

The parameter and FLOP counts are those of `isoflop.plan.flops` for the same Shape;
`GPT.num_params()` counts the real modules and `GPT.check_counts()` holds the two together.

muP (width multiplier m = d_model / mup_base_width), following Yang et al. (Tensor Programs V),
for Adam:
  * output logits are multiplied by 1/m;
  * attention scores use 1/head_dim instead of 1/sqrt(head_dim);
  * hidden matrices (every 2-D weight inside the blocks) are initialised with std 0.02/sqrt(m)
    and trained with lr/m (see `GPT.param_groups`); embeddings and norms keep lr.
At m = 1 a muP model is the standard model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from isoflop.plan import flops as plan_flops
from isoflop.plan.flops import Shape


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int = 256
    seq_len: int = 128
    mlp: str = "gelu"  # "gelu" | "swiglu"
    tied: bool = True
    qk_norm: bool = False
    z_loss: float = 0.0
    mup: bool = False
    mup_base_width: int = 64
    rope_base: float = 10000.0
    init_std: float = 0.02
    norm_eps: float = 1e-6

    @classmethod
    def from_shape(cls, shape: Shape, z_loss: float = 0.0, mup: bool = False, mup_base_width: int = 64, **kw) -> "GPTConfig":
        return cls(
            n_layer=shape.n_layer, d_model=shape.d_model, n_head=shape.n_head, vocab_size=shape.vocab_size,
            seq_len=shape.seq_len, mlp=shape.mlp, tied=shape.tied, qk_norm=shape.qk_norm,
            z_loss=z_loss, mup=mup, mup_base_width=mup_base_width, **kw,
        )

    @property
    def shape(self) -> Shape:
        return Shape(self.n_layer, self.d_model, self.n_head, self.vocab_size, self.seq_len,
                     self.mlp, self.tied, self.qk_norm)  # type: ignore[arg-type]

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def width_mult(self) -> float:
        return self.d_model / self.mup_base_width if self.mup else 1.0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin, each (seq_len, head_dim), for the rotate-half layout:
    rotary(x) = x * cos + swap_halves(x) * sin, where sin's first half carries the minus sign."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv)
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1)
    sin = torch.cat([-ang.sin(), ang.sin()], dim=-1)
    return cos.float(), sin.float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of x (..., head_dim) by position; cos/sin broadcast against x."""
    h = x.size(-1) // 2
    return x * cos + torch.cat([x[..., h:], x[..., :h]], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        # Wq and Wk stacked (rotated together below), Wv apart: separate outputs keep every
        # tensor contiguous, which is faster on CPU than one fused d x 3d matmul sliced three ways
        self.qk = nn.Linear(d, 2 * d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)  # Wo
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.eps = cfg.norm_eps
        self.scale = (1.0 / self.head_dim) if cfg.mup else None  # None = SDPA's 1/sqrt(head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # cos/sin: (T, 1, 1, head_dim), broadcasting over (B, T, 2, H, head_dim)
        B, T, C = x.shape
        qk = self.qk(x).view(B, T, 2, self.n_head, self.head_dim)  # q and k rotated together
        if self.q_norm is not None:
            w = torch.stack([self.q_norm.weight, self.k_norm.weight]).view(2, 1, self.head_dim)
            qk = F.rms_norm(qk, (self.head_dim,), None, self.eps) * w
        qk = apply_rotary(qk, cos, sin)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd) each
        v = self.v(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, f = cfg.d_model, cfg.shape.d_ff
        self.swiglu = cfg.mlp == "swiglu"
        self.fc = nn.Linear(d, f, bias=False)  # GELU: d -> 4d; SwiGLU: the gate
        self.up = nn.Linear(d, f, bias=False) if self.swiglu else None  # SwiGLU's second input matrix
        self.proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.up is not None:
            h = F.silu(h) * self.up(x)
        else:
            h = F.gelu(h)  # exact (erf) GELU: faster than the tanh form on CPU
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.wte.weight
        cos, sin = rotary_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.logit_scale = 1.0 / cfg.width_mult
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        std = cfg.init_std
        hidden_std = std / math.sqrt(cfg.width_mult)
        nn.init.normal_(self.wte.weight, std=std)
        if not cfg.tied:
            nn.init.normal_(self.lm_head.weight, std=std)
        for name, p in self.blocks.named_parameters():
            if p.dim() == 2:
                # residual projections scaled down with depth (GPT-2)
                s = hidden_std / math.sqrt(2 * cfg.n_layer) if name.endswith("proj.weight") else hidden_std
                nn.init.normal_(p, std=s)
            else:
                nn.init.ones_(p)
        nn.init.ones_(self.norm.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns (logits, loss). loss is the mean cross-entropy (+ z-loss) when targets are given."""
        T = idx.size(1)
        cos = self.rope_cos[:T].view(T, 1, 1, -1)
        sin = self.rope_sin[:T].view(T, 1, 1, -1)
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        if targets is None:
            return logits, None
        logits = logits.float()
        flat = logits.view(-1, logits.size(-1))
        loss = F.cross_entropy(flat, targets.reshape(-1))
        if self.cfg.z_loss:
            loss = loss + self.cfg.z_loss * torch.logsumexp(flat, dim=-1).pow(2).mean()
        return logits, loss

    # ---- counting -------------------------------------------------------------------------
    def num_params(self, convention: str = "all") -> int:
        """N of the real modules under a parameter convention of plan/flops.py."""
        every = sum(p.numel() for p in self.parameters())  # shared (tied) tensors counted once
        emb = self.wte.weight.numel()
        out = self.lm_head.weight.numel()
        non_emb = every - emb - (0 if self.cfg.tied else out)
        if convention == "all":
            return every
        if convention == "non_embedding":
            return non_emb
        if convention == "with_output":
            return non_emb + out
        raise ValueError(f"unknown parameter convention {convention!r}")

    def check_counts(self) -> None:
        """Raise if the real modules disagree with the planner's formulas."""
        s = self.cfg.shape
        for conv in plan_flops.PARAM_CONVENTIONS:
            mine, planned = self.num_params(conv), plan_flops.params(s, conv)  # type: ignore[arg-type]
            if mine != planned:
                raise AssertionError(f"params({conv}): model has {mine}, plan/flops.py says {planned} for {s}")

    def flops_per_token(self) -> int:
        """The planner's exact training FLOPs per token (forward + backward) of this shape."""
        return plan_flops.exact_flops_per_token(self.cfg.shape)

    # ---- optimisation ---------------------------------------------------------------------
    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on 2-D matrices only; under muP hidden matrices get lr/m.

        Each group carries `lr_mult`; the loop sets group["lr"] = lr(step) * group["lr_mult"].
        """
        m = self.cfg.width_mult
        hidden_ids = {id(p) for p in self.blocks.parameters() if p.dim() == 2}
        buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
        seen: set[int] = set()
        for p in self.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            lr_mult = 1.0 / m if id(p) in hidden_ids else 1.0
            wd = weight_decay if p.dim() >= 2 else 0.0
            buckets.setdefault((lr_mult, wd), []).append(p)
        return [{"params": ps, "lr_mult": lm, "weight_decay": wd} for (lm, wd), ps in buckets.items()]


def build(shape: Shape, z_loss: float = 0.0, mup: bool = False, mup_base_width: int = 64) -> GPT:
    model = GPT(GPTConfig.from_shape(shape, z_loss=z_loss, mup=mup, mup_base_width=mup_base_width))
    model.check_counts()
    return model
