"""One person's generator as an inference graph: in torch (for rendering) and in ONNX (for export).

A person's generator is the (fine-tuned) generator with the person's AdaIN parameters psi baked in
as a constant and spectral norm folded into plain weights, so a call is only
``landmark_images (+ warped (+ region)) -> frames``: no power iteration, no projection, no person inputs.

The ONNX renderer uses a variant, ``generator_graph_bytes``: the same folded generator with psi as an
input (``adain_params``), one graph for every person who shares the generator's weights, which is what
lets it be cached on disk (``render.onnx_cache``).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig
from .io.atomic import atomic_output
from .models import Generator, TalkingHeadModel
from .models.blocks import fold_spectral_norm
from .person import Person

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAMES = ("landmark_images", "warped", "region")
OUTPUT_NAME = "frames"
# The AdaIN parameters psi as an input of ``generator_graph_bytes``'s graph: (1, adain_size) float32.
ADAIN_INPUT = "adain_params"


class PersonGenerator(nn.Module):
    """G(y, psi') with psi' fixed: (N, 3, S, S) landmark images [+ warped shots [+ blend regions]]
    -> frames."""

    def __init__(self, generator: Generator, adain_params: torch.Tensor):
        super().__init__()
        self.generator = generator
        # (1, adain_size): AdaIN broadcasts it over the batch, so no per-batch expand is needed.
        self.register_buffer("adain_params", adain_params.detach().reshape(1, -1).clone())

    def forward(self, landmark_images: torch.Tensor, warped: torch.Tensor | None = None,
                region: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(landmark_images, self.adain_params, warped, region)


def inference_generator(model: TalkingHeadModel, generator_state: dict[str, torch.Tensor] | None = None,
                        device: torch.device | str = "cpu") -> Generator:
    """A new generator with ``generator_state`` (the model's own weights when None) ready for inference:
    eval mode, spectral norm folded, on ``device``.

    The model's own generator is never changed: it is shared by every person of a batch and
    fine-tuning needs its spectral norm. A new generator is built and loaded rather than
    deep-copied, because a deep copy shares its parametrized classes with the original, and
    folding the copy would delete the original's ``weight`` property.
    """
    generator = Generator(model.config)
    generator.load_state_dict(generator_state if generator_state is not None else model.generator.state_dict())
    # Eval first: folding evaluates the parametrization, which must not run a power iteration.
    return fold_spectral_norm(generator.to(device).float().eval())


def person_generator(model: TalkingHeadModel, person: Person, device: torch.device | str = "cpu") -> PersonGenerator:
    """The person's generator ready for inference (eval mode, spectral norm folded, on ``device``)."""
    generator = inference_generator(model, person.generator_state, device)
    return PersonGenerator(generator, person.adain_params.to(device).float()).eval()


def _image_inputs(config: ModelConfig, size: int, batch: int = 2) -> dict[str, torch.Tensor]:
    """Example inputs for tracing, by input name: landmark images [, warped shots [, blend regions]]."""
    images = [torch.zeros(batch, 3, size, size)]
    if config.guidance == "warp":
        images.append(torch.zeros(batch, 3, size, size))
        if config.uses_region:
            images.append(torch.ones(batch, 1, size, size))
    return dict(zip(INPUT_NAMES, images))


def _export(module: nn.Module, inputs: dict[str, torch.Tensor], target: str | Path | io.BytesIO, opset: int,
            fixed: tuple[str, ...] = ()) -> None:
    """Trace ``module`` (on the CPU) with ``inputs`` (in its argument order) to ``target``; every input
    but those named in ``fixed`` and the output have a dynamic batch dimension."""
    module = module.to("cpu").eval()
    dynamic_axes = {name: {0: "batch"} for name in [*inputs, OUTPUT_NAME] if name not in fixed}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns about traced shape arithmetic and its own deprecation;
        # neither concerns the user (onnxscript, which the new exporter needs, is not a dependency).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), target, input_names=list(inputs),
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


def write_onnx(module: PersonGenerator, image_size: int, target: str | Path | io.BytesIO,
               opset: int = DEFAULT_OPSET) -> None:
    """Export ``module`` (on the CPU) to ``target`` with a dynamic batch dimension."""
    _export(module, _image_inputs(module.generator.config, image_size), target, opset)


def generator_onnx_bytes(model: TalkingHeadModel, person: Person, opset: int = DEFAULT_OPSET) -> bytes:
    """The person's generator as a serialised ONNX model, built in memory."""
    buffer = io.BytesIO()
    write_onnx(person_generator(model, person), model.config.image_size, buffer, opset)
    return buffer.getvalue()


def generator_graph_bytes(model: TalkingHeadModel, generator_state: dict[str, torch.Tensor] | None = None,
                          opset: int = DEFAULT_OPSET) -> bytes:
    """The generator with ``generator_state`` (the model's own when None) as a serialised ONNX model,
    built in memory, with the AdaIN parameters as an input: ``adain_params`` (1, adain_size) float32
    beside the inputs of ``generator_onnx_bytes``'s graph, and the same output."""
    generator = inference_generator(model, generator_state)
    landmark_images, *others = _image_inputs(model.config, model.config.image_size).items()
    # Generator.forward's argument order: landmark images, psi, then warped shots and regions.
    inputs = dict([landmark_images, (ADAIN_INPUT, torch.zeros(1, generator.adain_size)), *others])
    buffer = io.BytesIO()
    _export(generator, inputs, buffer, opset, fixed=(ADAIN_INPUT,))
    return buffer.getvalue()


def export_generator(model: TalkingHeadModel, person: Person, path: str | Path, opset: int = DEFAULT_OPSET,
                     overwrite: bool = False) -> Path:
    """Write the person's generator to ``path`` as ONNX, atomically.

    Inputs: ``landmark_images`` (N, 3, S, S) float32 in [-1, 1], ``warped`` (N, 3, S, S) when the
    model uses warp guidance, and ``region`` (N, 1, S, S) in [0, 1] (``landmarks.regions``) when it
    blends only in a region; output ``frames`` (N, 3, S, S) in [-1, 1]; N is dynamic.
    """
    path = Path(path)
    # Inside the block: a refused target fails before the export's work, a failed export leaves nothing.
    with atomic_output(path, overwrite=overwrite) as temporary:
        data = generator_onnx_bytes(model, person, opset)
        temporary.write_bytes(data)
    log.info("exported the generator (%d inputs, opset %d, %.1f MB) to %s",
             1 + model.generator.warp + model.config.uses_region, opset, len(data) / 1e6, path)
    return path
