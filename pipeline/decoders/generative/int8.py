"""The int8 kernels of the generative decoder: linear layers multiplied in int8 (fbgemm) or fp32 by row count."""

from __future__ import annotations

import functools
import warnings

import torch
from torch.nn import functional as F

SMALL_BATCH = 4  # rows from which a pre-transposed fp32 weight multiplies faster (oneDNN switches kernels: at 5 rows,
# six layers' projections 1.54 -> 1.16 ms and the 20k-piece output 1.33 -> 0.76 ms; below 4 rows F.linear wins)


@functools.cache
def int8_available() -> bool:
    """Whether this torch has a CPU int8 engine (fbgemm on x86) for dynamically quantised linear layers."""
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm"))


class Projection:
    """Inference copy of a linear layer's weights, multiplied the fastest way for the row count: int8
    (per-output-row weights, activations quantised per call by fbgemm) or fp32 in either layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """`weight` and `bias` are kept as given: pass copies, not live parameters, so that training cannot
        change the fp32 layout and leave the int8 one behind."""
        self.weight, self.bias = weight, bias
        self.weight_t: torch.Tensor | None = None  # the pre-transposed fp32 copy, made on first use (int8 decoding never needs it)
        self.packed = pack_int8(self.weight, self.bias) if int8_available() else None  # packed here, not per call: no race between threads

    def __call__(self, x: torch.Tensor, int8: bool = False) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if int8 and self.packed is not None:
            # 8-bit activations (reduce_range=False) with 7-bit weights (pack_int8): without VNNI, fbgemm's AVX2
            # kernel sums pairs of u8 x s8 products in int16, which 255 * 127 * 2 overflows and 255 * 63 * 2 does not.
            return torch.ops.quantized.linear_dynamic(rows, self.packed, reduce_range=False).view(*x.shape[:-1], -1)
        if rows.shape[0] < SMALL_BATCH:
            return F.linear(x, self.weight, self.bias)
        if self.weight_t is None:
            self.weight_t = self.weight.T.contiguous()  # two threads may both make it: the same values, no harm
        return torch.addmm(self.bias, rows, self.weight_t).view(*x.shape[:-1], -1)


INT8_WEIGHT_MAX = 63  # weights in [-63, 63]: see Projection. Activations keep their 8 bits, the coarser half (one
# scale per call, not per row); 7-bit activations with 8-bit weights lost fidelity in a scratch comparison.


def pack_int8(weight: torch.Tensor, bias: torch.Tensor) -> torch.ScriptObject:
    """The weights quantised per output row (scale = the row's largest magnitude / INT8_WEIGHT_MAX), packed for fbgemm."""
    scale = (weight.abs().amax(1) / INT8_WEIGHT_MAX).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantised tensors are deprecated after torch 2.13 (pinned), which has them
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        quantised = torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantised, bias)

