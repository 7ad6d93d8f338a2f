"""The neural renderer through onnxruntime: the generator as an ONNX graph with the person's AdaIN
parameters as an input, shipped with the weights (``onnx_cache.bundle_graph``) or from the disk cache
(``onnx_cache``) when these weights were exported before, else exported in memory (and cached).

Everything but the network call (landmark images, warped shots, the detail path) is shared with the
torch renderer through :class:`GeneratorRenderer`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..export import ADAIN_INPUT, DEFAULT_OPSET, OUTPUT_NAME, generator_graph_bytes
from ..hub import GRAPH_FILE
from ..models import TalkingHeadModel
from ..person import Person
from ..tensors import images_to_tensor, tensor_to_images
from .onnx_cache import KEY_PROPERTY, graph_key, graph_path, read_graph, store_graph, with_key
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


def _keyed_session(path: Path, data: bytes, key: str, device: torch.device, kind: str):
    """A session of the graph ``data`` read from ``path`` when it is whole and holds ``key``, else None
    (logged at info level: a ``kind`` graph that is broken, cut short or of other weights)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf

    try:
        session = create_session(data, device)
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf) as error:
        log.info("ignoring a broken %s ONNX graph %s (%s)", kind, path, error)
        return None
    if session.get_modelmeta().custom_metadata_map.get(KEY_PROPERTY) != key:
        log.info("ignoring a %s ONNX graph %s without this graph's key (cut short, of other weights or of another "
                 "version of the generator)", kind, path)
        return None
    log.debug("loaded the generator's ONNX graph from %s", path)
    return session


def bundled_session(model: TalkingHeadModel, folder: Path, device: torch.device):
    """A session of the graph shipped in the checkpoint ``folder`` (``hub.GRAPH_FILE``) when it is the graph of
    the model's own weights and this code, else None."""
    path = Path(folder) / GRAPH_FILE
    if not path.is_file():
        return None
    try:
        key = graph_key(model.config, model.generator.state_dict(), DEFAULT_OPSET, portable=True)
    except OSError:
        return None
    data = read_graph(path, cached=False)
    return None if data is None else _keyed_session(path, data, key, device, "bundled")


def generator_session(model: TalkingHeadModel, generator_state: dict[str, torch.Tensor] | None,
                      device: torch.device, cache_dir: str | Path | None = None, bundled: Path | None = None):
    """A session of ``generator_graph_bytes``'s graph (the AdaIN parameters an input) for
    ``generator_state`` (the model's own weights when None): for the model's own weights the graph shipped in
    the checkpoint folder ``bundled`` when it holds theirs (``bundled_session``); else loaded from the cache in
    ``cache_dir`` (``default_cache_dir()`` when None) when these weights were exported before, else exported
    and cached. A cache that cannot be read or written is only logged."""
    if generator_state is None and bundled is not None:
        session = bundled_session(model, bundled, device)
        if session is not None:
            return session
    state = generator_state if generator_state is not None else model.generator.state_dict()
    try:
        key = graph_key(model.config, state, DEFAULT_OPSET)
    except OSError as error:
        log.info("not caching the generator's ONNX graph (%s)", error.strerror or error)
        return create_session(generator_graph_bytes(model, generator_state), device)
    path = graph_path(key, cache_dir)
    data = read_graph(path)
    if data is not None:
        session = _keyed_session(path, data, key, device, "cached")
        if session is not None:
            return session
    data = with_key(generator_graph_bytes(model, generator_state), key)
    store_graph(path, data)
    return create_session(data, device)


class OnnxRenderer(GeneratorRenderer):
    """The person's generator run by onnxruntime (same inputs, outputs and detail path as
    :class:`NeuralRenderer`). By default the graph comes from ``generator_session`` (shipped in the
    checkpoint folder ``weights_dir``, or cached on disk) and takes the person's AdaIN parameters at each
    call; ``onnx_model``, a serialised model from ``generator_onnx_bytes`` (the person baked in) or
    ``generator_graph_bytes``, is used instead when given."""

    def __init__(self, model: TalkingHeadModel, person: Person, device: torch.device,
                 detail_size: int | None = None, onnx_model: bytes | None = None,
                 parts: "LearnedParts | None" = None, part_names: tuple[str, ...] | None = None,
                 weights_dir: Path | None = None):
        super().__init__(model.config, person, detail_size, parts, part_names)
        self.device = torch.device(device)
        self.session = (create_session(onnx_model, self.device) if onnx_model is not None
                        else generator_session(model, person.generator_state, self.device, bundled=weights_dir))
        names = [entry.name for entry in self.session.get_inputs()]
        # The person's inputs: psi, unless the graph has it baked in.
        self.person_inputs = ({ADAIN_INPUT: person.adain_params.detach().to("cpu", torch.float32).reshape(1, -1)
                               .numpy()} if ADAIN_INPUT in names else {})
        self.input_names = [name for name in names if name not in self.person_inputs]

    def generate(self, landmark_images: np.ndarray, warped: np.ndarray | None,
                 region: np.ndarray | None = None) -> np.ndarray:
        arrays = [images_to_tensor(images).numpy() for images in (landmark_images, warped) if images is not None]
        if region is not None:
            arrays.append(np.ascontiguousarray(region, np.float32))
        if len(arrays) != len(self.input_names):
            raise ValueError(f"the ONNX generator takes {self.input_names}, got {len(arrays)} inputs")
        (frames,) = self.session.run([OUTPUT_NAME], {**dict(zip(self.input_names, arrays)), **self.person_inputs})
        return tensor_to_images(torch.from_numpy(frames))
