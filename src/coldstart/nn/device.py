"""Where a model trains: one device choice and one mixed-precision switch shared by every model.

    resolve_device("auto")    cuda when torch sees a GPU, else cpu
    resolve_device("cuda:1")  that GPU, or a DataError naming `device` when it is absent
    autocast(device, amp)     bf16 autocast on CUDA when amp is on; a no-op context on the CPU

A model keeps its CPU path free of device code: moving a CPU tensor to the CPU returns the same tensor, so a
model written as "draw on the CPU, move to the device, compute, bring the [B, I] scores back" runs bit for bit as
before on a CPU-only machine, and the same lines run on CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

import torch

from coldstart.errors import DataError

#: The values a `device` setting may take (besides "cuda:N").
DEVICES = ("auto", "cpu", "cuda")
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_device(value: str, field: str = "device") -> None:
    """DataError naming `field` unless `value` is "auto", "cpu", "cuda" or "cuda:N" (checked without a GPU, so a
    config written for a GPU machine still loads on a CPU-only one)."""
    if not isinstance(value, str) or (value not in DEVICES and not _CUDA_INDEX.fullmatch(value)):
        raise DataError(f"must be auto, cpu, cuda or cuda:N, got {value!r}", field=field)


@dataclasses.dataclass(frozen=True)
class DeviceSetting:
    """Mixin for a model's Config: the `device` setting, checked after the other settings' own checks.

    Attributes:
        device: where the model trains and scores: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu",
            "cuda" or "cuda:N"; scores always come back on the CPU.
    """

    device: str = "auto"

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)  # the other base's checks, when it has any
        if parent is not None:
            parent()
        check_device(self.device)


def resolve_device(wanted: str, field: str = "device") -> torch.device:
    """The torch.device a `device` setting names on this machine.

    Args:
        wanted: "auto" (cuda when torch sees a GPU, else cpu), "cpu", "cuda" (the current GPU: under torchrun the
            rank's own, which distributed.init_process_group selects) or "cuda:N".
        field: the setting's name, for the error message.

    Raises:
        DataError: an unknown value, or a GPU asked for that torch does not see (no silent fallback to the CPU:
            a run that was meant for a GPU and would take hours on the CPU should stop at once).
    """
    check_device(wanted, field)
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DataError(f"device {wanted!r} asked for, but torch sees no CUDA device", field=field)
    match = _CUDA_INDEX.fullmatch(wanted)
    if match and int(match.group(1)) >= torch.cuda.device_count():
        raise DataError(f"device {wanted!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)",
                        field=field)
    return torch.device(wanted)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on a CUDA device when `enabled`; otherwise (and always on the CPU) a context that does nothing.

    bf16 keeps float32's exponent range, so logits and norms cannot overflow as in fp16 and no loss scaler is needed.
    The CPU path stays float32: CPU bf16 matmuls are slower than float32 ones on most CPUs, and CPU numbers must not
    change.
    """
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
