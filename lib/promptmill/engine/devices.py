"""Where a model runs and in which precision: one rule for every local model (generate, caption)."""

from __future__ import annotations

from promptmill.core.errors import BadInput

DTYPES = ("auto", "fp16", "bf16", "fp32")


def pick_device(requested: str, local_rank: int = 0) -> str:
    """'auto' is this process's GPU (cuda:LOCAL_RANK) when CUDA is there, else the CPU."""
    import torch

    if requested == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {requested}: CUDA is not available here")
    return requested


def torch_dtype(name: str, device: str):
    """(name, torch dtype); 'auto' is fp16 on CUDA and fp32 on CPU (CPU half precision is slow or unsupported)."""
    import torch

    if name == "auto":
        name = "fp16" if device.startswith("cuda") else "fp32"
    return name, {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
