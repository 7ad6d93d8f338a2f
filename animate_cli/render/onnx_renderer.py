"""The neural renderer through onnxruntime: the person's generator exported to ONNX in memory.

Everything but the network call (landmark images, warped shots, the detail path) is shared with the
torch renderer through :class:`GeneratorRenderer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import logging

import numpy as np
import torch

from ..export import OUTPUT_NAME, generator_onnx_bytes
from ..models import TalkingHeadModel
from ..person import Person
from ..tensors import images_to_tensor, tensor_to_images
from .renderers import GeneratorRenderer

log = logging.getLogger(__name__)

# onnxruntime's own log: errors and fatal only (its warnings and info are loading noise to a user).
ORT_LOG_ERRORS_ONLY = 3

if TYPE_CHECKING:
    from ..parts import LearnedParts


def onnx_providers(device: torch.device) -> list[str]:
    """The CUDA provider when rendering on a GPU that onnxruntime can use, else the CPU provider."""
    import onnxruntime as ort

    if (device.type == "cuda" and torch.cuda.is_available()
            and "CUDAExecutionProvider" in ort.get_available_providers()):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(onnx_model: bytes, device: torch.device):
    """An onnxruntime session for a serialised model, quiet while loading."""
    import onnxruntime as ort

    ort.set_default_logger_severity(ORT_LOG_ERRORS_ONLY)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    # Its threads otherwise spin for a while after each run, taking the cores from what runs next
    # in this process (warps, the part models in torch): with the learned mouth the neural renderer
    # measured 75.4 against 69.4 fps (benchmarks/parts.py, 2 cores), the same without it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # As many threads as torch uses: by default both take one per physical core, and a process told
    # to use fewer (a Ray worker, one thread each: ray_batch.py) keeps to it in onnxruntime too.
    options.intra_op_num_threads = torch.get_num_threads()
    providers = onnx_providers(device)
    session = ort.InferenceSession(onnx_model, options, providers=providers)
    if providers[0] not in session.get_providers():
        log.warning("onnxruntime could not use %s; rendering on the CPU", providers[0])
    return session


class OnnxRenderer(GeneratorRenderer):
    """The person's generator run by onnxruntime (same inputs, outputs and detail path as
    :class:`NeuralRenderer`). ``onnx_model`` is a serialised model from ``generator_onnx_bytes``;
    by default it is built here, in memory."""

    def __init__(self, model: TalkingHeadModel, person: Person, device: torch.device,
                 detail_size: int | None = None, onnx_model: bytes | None = None,
                 parts: "LearnedParts | None" = None, part_names: tuple[str, ...] | None = None):
        super().__init__(model.config, person, detail_size, parts, part_names)
        self.device = torch.device(device)
        self.session = create_session(onnx_model or generator_onnx_bytes(model, person), self.device)
        self.input_names = [entry.name for entry in self.session.get_inputs()]

    def generate(self, landmark_images: np.ndarray, warped: np.ndarray | None,
                 region: np.ndarray | None = None) -> np.ndarray:
        arrays = [images_to_tensor(images).numpy() for images in (landmark_images, warped) if images is not None]
        if region is not None:
            arrays.append(np.ascontiguousarray(region, np.float32))
        if len(arrays) != len(self.input_names):
            raise ValueError(f"the ONNX generator takes {self.input_names}, got {len(arrays)} inputs")
        (frames,) = self.session.run([OUTPUT_NAME], dict(zip(self.input_names, arrays)))
        return tensor_to_images(torch.from_numpy(frames))
