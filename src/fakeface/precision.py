"""Which precision is fast here: bf16 where the hardware has it (CUDA Ampere+, AMX/AVX512-BF16 CPUs)."""

from __future__ import annotations

import torch


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """True when bf16 matmuls/convs run natively on `device` (else bf16 would be slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(precision: str | int, accelerator: str = "auto") -> str | int:
    """Map `auto` to Lightning's `bf16-mixed` where bf16 is native, else `32-true`."""
    if precision != "auto":
        return precision
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if bf16_supported("cuda" if cuda else "cpu") else "32-true"
