"""Host round trips of device code, counted on any device, the CPU included.

Every read of a device value (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``.numpy()``), every
copy between devices other than an asynchronous one (``.to(device, non_blocking=True)``), every tensor
made from Python data (``torch.tensor(list)``), and every operation whose output size depends on the
data (``nonzero``, boolean-mask indexing, indexing with a Python list) makes the host wait for the GPU
to finish everything queued. :class:`RoundTrips` counts those calls by name as they happen, whatever
the device, so a CPU test catches what would serialize a GPU step (``torch.cuda.set_sync_debug_mode``
sees them only on CUDA).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

#: Calls that always read back or copy from host data.
ALWAYS = frozenset({"item", "tolist", "numpy", "cpu", "cuda", "__bool__", "__int__", "__float__", "__index__",
                    "tensor", "as_tensor", "nonzero", "masked_select", "unique", "argwhere"})


class RoundTrips(TorchFunctionMode):
    """Counts round-trip calls while active (``with RoundTrips() as trips: ...``): ``trips.calls`` by
    name, and ``trips.transfers`` the asynchronous ``non_blocking`` copies (which do not wait)."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.transfers = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        target = _target_device(args, kwargs) if name == "to" else None
        if target is not None and kwargs.get("non_blocking"):
            self.transfers += 1
        elif target is not None and (target != args[0].device or target == "cpu"):
            self.calls["to"] += 1
        elif name in ALWAYS or (name in ("__getitem__", "__setitem__") and _data_dependent(args[1])):
            self.calls[name] += 1
        return func(*args, **kwargs)


def _target_device(args: tuple, kwargs: dict):
    """The device a ``Tensor.to`` call names: a torch.device, or the string ``"cpu"`` as written (an
    explicit readback even where the tensor already is on the CPU); None for a dtype-only call. A
    ``.to(x.device)`` that stays where it is costs nothing and is not counted."""
    for value in (*args[1:], kwargs.get("device")):
        if isinstance(value, str):
            return "cpu" if value == "cpu" else torch.device(value)
        if isinstance(value, torch.device):
            return value
        if isinstance(value, torch.Tensor):  # .to(other): other's device and dtype
            return value.device
    return None


def _data_dependent(index) -> bool:
    """Whether an index is a Python list (copied to the device) or a boolean mask (its size read back)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, list) or (isinstance(p, torch.Tensor) and p.dtype == torch.bool) for p in parts)
