"""Measured training FLOPs: one forward+backward step counted by torch's FlopCounterMode.

On CPU (and for counting anywhere) attention runs through the math SDPA backend, whose matmuls
the counter sees; fused kernels may count as zero. The count uses a batch of one sequence and
leaves no gradients behind.
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def measure_step_flops(model: torch.nn.Module, seq_len: int, vocab_size: int, device: torch.device | str = "cpu",
                       batch_seqs: int = 1) -> tuple[int, int]:
    """(FLOPs of one training step on batch_seqs x seq_len tokens, tokens). Forward + backward."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab_size, (batch_seqs, seq_len + 1), generator=g).to(device)
    was_training = model.training
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(fc.get_total_flops()), batch_seqs * seq_len


def measured_flops_per_token(model: torch.nn.Module, seq_len: int, vocab_size: int,
                             device: torch.device | str = "cpu") -> float:
    f, t = measure_step_flops(model, seq_len, vocab_size, device)
    return f / t
