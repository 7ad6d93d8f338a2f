"""Conversions at the image/tensor boundary, with range checks.

Images outside the networks are uint8 RGB arrays (H, W, 3). Tensors inside are float in
[-1, 1], (N, 3, H, W). Reimplementations of the paper have scaled by 255 twice and read the
result as noise; every conversion here checks its input range instead.
"""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray | list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    array = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def tensor_to_images(tensor: torch.Tensor, tolerance: float = 1e-3) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3).

    A tensor far outside [-1, 1] means a scaling bug upstream, so it raises instead of clipping.
    """
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(tensor.shape)}")
    tensor = tensor.detach().float()
    if not torch.isfinite(tensor).all():
        raise ValueError("image tensor holds NaN or inf")
    low, high = tensor.min().item(), tensor.max().item()
    if low < -1 - tolerance or high > 1 + tolerance:
        raise ValueError(f"image tensor outside [-1, 1]: [{low:.3f}, {high:.3f}]")
    array = ((tensor.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()
