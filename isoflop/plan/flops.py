"""Parameter counts and training FLOPs of one shape of the built-in GPT family.

Every formula is written once, here; the trainer's model (train/model.py) must
count the same parameters, and a test holds the two together.

The model: token embedding (V x d), n_layer pre-norm blocks of
[RMSNorm, attention (Wq, Wk, Wv, Wo: d x d each), RMSNorm, MLP], a final
RMSNorm, an output layer (V x d, shared with the embedding when tied).
No biases. MLP: GELU (d -> 4d -> d) or SwiGLU (3 matrices d x f, f = d_ff).
QK-norm adds two RMSNorm weights of head_dim per layer.

FLOPs per token are forward + backward = 3 x forward, with a multiply-add
counted as 2 FLOPs. Attention (QK^T and AV) is counted non-causally, over
the full seq_len x seq_len score matrix: 2 matmuls x 2 FLOPs x seq_len x d
per layer forward, x3 = 12 * n_layer * seq_len * d_model. This is what
torch's FlopCounterMode counts for scaled_dot_product_attention and what
Kaplan et al. and Hoffmann et al. count; a causal kernel does about half.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FlopConvention = Literal["6ND", "6ND+attention", "exact"]
ParamConvention = Literal["non_embedding", "with_output", "all"]
FLOP_CONVENTIONS: tuple[str, ...] = ("6ND", "6ND+attention", "exact")
PARAM_CONVENTIONS: tuple[str, ...] = ("non_embedding", "with_output", "all")


@dataclass(frozen=True)
class Shape:
    """One member of the model family."""

    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int
    mlp: Literal["gelu", "swiglu"] = "gelu"
    tied: bool = True
    qk_norm: bool = False
    learned_positions: bool = False  # a learned position embedding (nanoGPT's wpe), not rotary

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def d_ff(self) -> int:
        if self.mlp == "gelu":
            return 4 * self.d_model
        # SwiGLU keeps the GELU MLP's parameter count: 8/3 d, rounded up to a multiple of 64
        return ((8 * self.d_model // 3 + 63) // 64) * 64


def matmul_params_per_layer(s: Shape) -> int:
    """Weights of one block that take part in a matmul (attention + MLP)."""
    attn = 4 * s.d_model * s.d_model
    mlp = (2 if s.mlp == "gelu" else 3) * s.d_model * s.d_ff
    return attn + mlp


def norm_params_per_layer(s: Shape) -> int:
    return 2 * s.d_model + (2 * s.head_dim if s.qk_norm else 0)


def non_embedding_params(s: Shape) -> int:
    """Blocks plus the final norm: Kaplan et al.'s N."""
    return s.n_layer * (matmul_params_per_layer(s) + norm_params_per_layer(s)) + s.d_model


def embedding_params(s: Shape) -> int:
    """Token embedding, and a learned position embedding (seq_len x d_model) where there is one."""
    return (s.vocab_size + (s.seq_len if s.learned_positions else 0)) * s.d_model


def output_params(s: Shape) -> int:
    """The output layer (unembedding). It does compute even when tied."""
    return s.vocab_size * s.d_model


def params(s: Shape, convention: ParamConvention = "all") -> int:
    """N under a parameter convention.

    non_embedding: blocks + final norm (Kaplan).
    with_output:   non_embedding + the output layer (counted even when tied).
    all:           every distinct trainable parameter (Chinchilla's "total").
    """
    ne = non_embedding_params(s)
    if convention == "non_embedding":
        return ne
    if convention == "with_output":
        return ne + output_params(s)
    if convention == "all":
        return ne + embedding_params(s) + (0 if s.tied else output_params(s))
    raise ValueError(f"unknown parameter convention {convention!r}; expected one of {PARAM_CONVENTIONS}")


def attention_flops_per_token(s: Shape) -> int:
    """Score and value matmuls, forward + backward, non-causal (see module doc)."""
    return 12 * s.n_layer * s.seq_len * s.d_model


def exact_flops_per_token(s: Shape) -> int:
    """Every matmul of a training step: 6 x (matmul weights + output layer) + attention."""
    return 6 * (s.n_layer * matmul_params_per_layer(s) + output_params(s)) + attention_flops_per_token(s)


def flops_per_token(s: Shape, flop_convention: FlopConvention, param_convention: ParamConvention) -> int:
    """Training FLOPs per token under a FLOP convention (N taken under param_convention)."""
    if flop_convention == "6ND":
        return 6 * params(s, param_convention)
    if flop_convention == "6ND+attention":
        return 6 * params(s, param_convention) + attention_flops_per_token(s)
    if flop_convention == "exact":
        return exact_flops_per_token(s)
    raise ValueError(f"unknown FLOP convention {flop_convention!r}; expected one of {FLOP_CONVENTIONS}")


def ledger(s: Shape, tokens: int, param_convention: ParamConvention) -> dict[str, int]:
    """N under every parameter convention and FLOPs under every FLOP convention, for one run."""
    out: dict[str, int] = {f"params_{c}": params(s, c) for c in PARAM_CONVENTIONS}  # type: ignore[arg-type]
    out["flops_6nd"] = flops_per_token(s, "6ND", param_convention) * tokens
    out["flops_6nd_attention"] = flops_per_token(s, "6ND+attention", param_convention) * tokens
    out["flops_exact"] = exact_flops_per_token(s) * tokens
    return out
