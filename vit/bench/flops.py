"""FLOPs of a forward pass, counted by torch (FLOPs = 2 x multiply-accumulates)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU fused-attention kernel, which FlopCounterMode has no formula for: Q K^T and A V."""
    b, h, n, d = q_shape
    m, dv = k_shape[-2], v_shape[-1]
    return 2 * b * h * n * m * d + 2 * b * h * n * m * dv


SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 x multiply-accumulates) of `model(x)`: matmuls, convolutions and attention."""
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        model(x)
    return counter.get_total_flops()
