"""What every evaluation report carries: strict JSON, and the machine the numbers were measured on."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def json_safe(value: Any) -> Any:
    """Non-finite floats as null, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def machine_record() -> dict[str, Any]:
    """Where the numbers were measured."""
    import os
    import platform

    return {"hostname": platform.node(), "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
