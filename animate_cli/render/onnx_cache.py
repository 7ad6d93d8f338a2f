"""A disk cache of the ONNX renderer's generator graph (``export.generator_graph_bytes``).

Exporting the generator takes about 2.3 s a run on a 2-core CPU (0.8 s of it importing ``onnx``), and
gives the same graph to everyone rendered with the same weights: the graph takes the AdaIN parameters as
an input, so it depends only on the generator's weights (the model's own, or a person's fine-tuned ones),
the model's config, the opset, torch (which traces and writes it) and the code it is traced from. A
hash of all of these names the file, ``<cache>/onnx/generator-<hash>.onnx`` in ``default_cache_dir()``,
and is also written into the graph's metadata, which a serialised model holds after the graph, so
that a file which is not whole, or not that graph, is never used.

The cache only saves time: a folder that cannot be written or a file that cannot be read is logged at
info level and the graph is exported in memory, as without it. The newest ``KEEP_GRAPHS`` files by
modification time are kept (a file is touched when it is used).

A checkpoint may ship the graph of its own weights beside them (``hub.GRAPH_FILE``, written by
``bundle_graph``; the bundled ``weights/`` do), so that even a first run exports nothing. Its key
(``graph_key(..., portable=True)``) leaves torch's version out: a graph traced by one torch version
runs the same under onnxruntime whichever torch the user has. A bundled graph whose key is not that of
the weights and code at hand (other weights, an edited generator) is ignored, and the graph is exported
as without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from .. import export as export_module
from ..config import ModelConfig
from ..hub import GRAPH_FILE
from ..io import disk_cache
from ..io.atomic import atomic_output
from ..models import blocks as blocks_module
from ..models import generator as generator_module
from ..models.face_resnet import default_cache_dir

log = logging.getLogger(__name__)

# Bump when the cached graph's inputs, outputs or metadata change meaning.
GRAPH_FORMAT = 1
# A file a few MB each at the shipped model's size; one per set of generator weights rendered with.
KEEP_GRAPHS = 8
# The graph's metadata entry that holds its key.
KEY_PROPERTY = "animate_face.graph_key"
# The modules the graph is traced from: editing them (a new version, or a developer's checkout)
# makes a new graph.
TRACED_MODULES = (generator_module, blocks_module, export_module)


def graph_key(config: ModelConfig, generator_state: Mapping[str, torch.Tensor], opset: int,
              portable: bool = False) -> str:
    """The hash of everything the graph is made from (``portable``: but torch's version, for a graph
    shipped with the weights). Raises OSError when a traced module's source cannot be read (an unusual
    install): such a graph is not cached."""
    digest = hashlib.sha256()
    header = {"format": GRAPH_FORMAT, "opset": opset, "config": config.to_dict()}
    if not portable:
        header["torch"] = torch.__version__
    digest.update(json.dumps(header, sort_keys=True).encode())
    for module in TRACED_MODULES:
        digest.update(Path(module.__file__).read_bytes())
    for name in sorted(generator_state):
        tensor = generator_state[name].detach().to("cpu").contiguous()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def graph_path(key: str, cache_dir: str | Path | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "onnx" / f"generator-{key}.onnx"


def with_key(data: bytes, key: str) -> bytes:
    """A serialised ONNX model with ``key`` added to its metadata (``KEY_PROPERTY``).

    Only after an export: ``onnx``, which torch's exporter has imported already, parses the model.
    """
    import onnx

    model = onnx.load_model_from_string(data)
    onnx.helper.set_model_props(model, {KEY_PROPERTY: key})
    return model.SerializeToString()


def read_graph(path: Path, cached: bool = True) -> bytes | None:
    """The file's bytes (a ``cached`` one is touched), or None when there is none or it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.info("cannot read the %s ONNX graph %s (%s)", "cached" if cached else "bundled", path,
                 error.strerror or error)
        return None
    if cached:
        disk_cache.touch(path)
    return data


def store_graph(path: Path, data: bytes, keep: int = KEEP_GRAPHS) -> None:
    """Write ``data`` to ``path`` atomically, then keep the newest ``keep`` graphs beside it; a
    cache that cannot be written is only logged."""
    disk_cache.store(path, lambda stream: stream.write(data), "the generator's ONNX graph", keep, log)


def bundle_graph(config: ModelConfig, generator_state: Mapping[str, torch.Tensor], graph: bytes, opset: int,
                 folder: str | Path) -> Path:
    """Write ``graph`` (the generator's, from ``export.generator_graph_bytes``, for ``generator_state``)
    into the checkpoint ``folder`` as ``hub.GRAPH_FILE``, keyed portably, atomically; returns its path."""
    path = Path(folder) / GRAPH_FILE
    data = with_key(graph, graph_key(config, generator_state, opset, portable=True))
    with atomic_output(path, overwrite=True) as temporary:
        temporary.write_bytes(data)
    return path
