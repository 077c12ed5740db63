"""Host arrays to the device in one copy.

Everything a batch needs from the host (window positions, augmentation draws, simulated
layouts and labels) is packed into one buffer, pinned on CUDA, and crosses with one
``non_blocking`` copy; the device tensors are views into it. Each separate small copy would
make the host wait for the GPU, and the GPU for the host, every step.
"""

from __future__ import annotations

import numpy as np
import torch

#: Byte alignment of each array in the buffer (the widest element: int64 / float64).
_ALIGN = 8
_DTYPES = {np.dtype(k): v for k, v in ((np.bool_, torch.bool), (np.uint8, torch.uint8), (np.int32, torch.int32),
                                        (np.int64, torch.int64), (np.float16, torch.float16),
                                        (np.float32, torch.float32), (np.float64, torch.float64))}


def to_device(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """``arrays`` as tensors on ``device`` (same names, shapes and dtypes), moved in one copy.

    The buffer is new for every call, so a copy still in flight never sees its bytes change.
    """
    layout, total = [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        layout.append((name, array, total))
        total += -(-array.nbytes // _ALIGN) * _ALIGN
    host = np.empty(max(total, _ALIGN), dtype=np.uint8)
    for _, array, at in layout:
        host[at : at + array.nbytes] = array.reshape(-1).view(np.uint8)
    buffer = torch.from_numpy(host)
    # Pinned (page-locked), the copy runs asynchronously: the host goes on to build the next batch.
    moved = (buffer.pin_memory() if device.type == "cuda" else buffer).to(device, non_blocking=True)
    return {name: moved[at : at + array.nbytes].view(_DTYPES[array.dtype]).view(array.shape)
            for name, array, at in layout}
