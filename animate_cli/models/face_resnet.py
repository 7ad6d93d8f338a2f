"""dlib's 128-d face-descriptor ResNet in torch, read from the ``.dat`` file that
``face-recognition-models`` installs: a face-trained deep network available offline.

The architecture is dlib's ``dnn_face_recognition_ex``: a 7x7 stem, 14 residual blocks (32, 64,
128, 256 channels, then one more downsampling 256 block), global average pooling and a 256 -> 128
linear layer without bias. Inputs are 150 px RGB face chips in [0, 255]; dlib subtracts the
per-channel means stored in the file and divides by 256. The descriptor is not normalised.

``read_dlib_resnet`` parses the file (dlib's serialization; no C++ and no pickle); ``load_face_resnet``
caches the tensors as safetensors in the user's cache folder so later loads skip the parse.
``face_chips`` is the differentiable counterpart of dlib's ``get_face_chip``: one similarity
transform from the 68 landmarks, applied by ``grid_sample``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import WeightsError

logger = logging.getLogger(__name__)

DAT_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CACHE_NAME = "dlib_face_resnet_v1.safetensors"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# (channels, blocks, the first block downsamples): dlib's alevel4 ... alevel0.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
NUM_CONVS = 1 + 2 * sum(blocks for _, blocks, _ in STAGES)
DESCRIPTOR_SIZE = 128

# dlib's 5-point template (get_face_chip_details, in chip units before padding): outer and inner
# corner of the image-right eye, outer and inner corner of the image-left eye, the base of the
# nose. The 68-point landmarks with the same meaning are 45, 42, 36, 39 and 33.
CHIP_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                          [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                          [0.4901123135679, 0.6277975316475]])
CHIP_POINTS_68 = (45, 42, 36, 39, 33)


# ----------------------------------------------------------------------------------------------
# The file


class _Reader:
    """dlib's serialization: integers as a control byte (low 4 bits: byte count, 0x80: negative)
    and little-endian magnitude; strings as length then bytes; floats as mantissa and exponent;
    tensors as version 2, four dimensions, then raw little-endian float32."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, problem: str) -> WeightsError:
        return WeightsError(f"not dlib's face-descriptor network ({problem} at byte {self.pos})", self.path)

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("file ends early")
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8 or self.pos + 1 + size > len(self.data):
            raise self.fail("bad integer")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail("bad string")
        text = self.data[self.pos:self.pos + size].decode("latin-1")
        self.pos += size
        return text

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            raise self.fail("unknown tensor version")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if min(shape) < 0 or end > len(self.data):
            raise self.fail("bad tensor size")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos = end
        return values

    def next_tag(self, tags: tuple[str, ...]) -> str | None:
        """Move past the nearest of ``tags`` (as serialized strings) and return it; None at the end."""
        best, best_at = None, len(self.data)
        for tag in tags:
            at = self.data.find(bytes([1, len(tag)]) + tag.encode(), self.pos)
            if 0 <= at < best_at:
                best, best_at = tag, at
        if best is None:
            return None
        self.pos = best_at + 2 + len(best)
        return best


LAYER_TAGS = ("input_rgb_image_sized", "con_4", "affine_", "max_pool_2", "avg_pool_2", "fc_2")


def read_dlib_resnet(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's tensors from dlib's ``.dat`` file, keyed as in :class:`FaceResNet`.

    Layer details come input-first in the file, so the convolutions and affines appear in forward
    order. Raises WeightsError when the file is not this network (missing, truncated, other layers).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"cannot read the face-descriptor network ({error.strerror or error})", path) from error
    reader = _Reader(data, path)
    if reader.integer() != 1 or reader.string() != "loss_metric_2":
        raise reader.fail("no metric loss layer")
    means, convs, affines, fc = None, [], [], None
    conv_specs = _conv_specs()
    while (tag := reader.next_tag(LAYER_TAGS)) is not None:
        if tag == "input_rgb_image_sized":
            means = [reader.real() for _ in range(3)]
            if (reader.integer(), reader.integer()) != (CHIP_SIZE, CHIP_SIZE):
                raise reader.fail("input is not 150x150")
        elif tag == "con_4":
            params = reader.tensor()
            fields = [reader.integer() for _ in range(7)]  # filters, nr, nc, stride y/x, padding y/x
            if len(convs) >= len(conv_specs):
                raise reader.fail("more convolutions than expected")
            out_channels, in_channels, kernel, stride, padding = conv_specs[len(convs)]
            if fields != [out_channels, kernel, kernel, stride, stride, padding, padding]:
                raise reader.fail(f"convolution {len(convs)} is {fields}")
            weight_count = out_channels * in_channels * kernel * kernel
            if params.size != weight_count + out_channels:
                raise reader.fail(f"convolution {len(convs)} has {params.size} parameters")
            convs.append((params[:weight_count].reshape(out_channels, in_channels, kernel, kernel),
                          params[weight_count:]))
        elif tag == "affine_":
            params = reader.tensor()
            half = params.size // 2
            affines.append((params[:half], params[half:]))
        elif tag in ("max_pool_2", "avg_pool_2"):
            for _ in range(6):  # window, stride and padding: fixed by the architecture
                reader.integer()
        elif tag == "fc_2":
            outputs, inputs = reader.integer(), reader.integer()
            params = reader.tensor()
            if (outputs, inputs) != (DESCRIPTOR_SIZE, STAGES[-1][0]) or params.size != outputs * inputs:
                raise reader.fail(f"fully connected layer {inputs} -> {outputs} with {params.size} parameters")
            fc = params.reshape(inputs, outputs).T  # stored for y = x W
    if means is None or fc is None or len(convs) != NUM_CONVS or len(affines) != NUM_CONVS:
        raise reader.fail(f"found {len(convs)} convolutions and {len(affines)} affines, expected {NUM_CONVS}")
    for index, ((weight, _), (gamma, _)) in enumerate(zip(convs, affines)):
        if gamma.size != weight.shape[0]:
            raise reader.fail(f"affine {index} has {gamma.size} channels, expected {weight.shape[0]}")
    tensors = {"mean": torch.tensor(means, dtype=torch.float32),
               "fc.weight": torch.from_numpy(np.ascontiguousarray(fc))}
    for index, ((weight, bias), (gamma, beta)) in enumerate(zip(convs, affines)):
        name = _conv_name(index)
        tensors[f"{name}.weight"] = torch.from_numpy(weight.copy())
        tensors[f"{name}.bias"] = torch.from_numpy(bias.copy())
        tensors[f"{name}.gamma"] = torch.from_numpy(gamma.copy())
        tensors[f"{name}.beta"] = torch.from_numpy(beta.copy())
    return tensors


def _conv_specs() -> list[tuple[int, int, int, int, int]]:
    """(out channels, in channels, kernel, stride, padding) of every convolution, forward order."""
    specs = [(32, 3, 7, 2, 0)]
    channels = 32
    for width, blocks, downsamples in STAGES:
        for block in range(blocks):
            stride = 2 if downsamples and block == 0 else 1
            specs.append((width, channels, 3, stride, 0 if stride == 2 else 1))
            specs.append((width, width, 3, 1, 1))
            channels = width
    return specs


def _conv_name(index: int) -> str:
    if index == 0:
        return "stem"
    block, second = divmod(index - 1, 2)
    return f"blocks.{block}.conv{second + 1}"


# ----------------------------------------------------------------------------------------------
# The network


class _ConvAffine(nn.Module):
    """A convolution followed by dlib's affine layer (a frozen batch norm: gamma * x + beta)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gamma = nn.Parameter(torch.ones(out_channels))
        self.beta = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev for unequal shapes: both zero-padded to the larger one at the end of the
    channel, row and column axes (top-left aligned), then added."""
    channels = max(a.shape[1], b.shape[1])
    rows, cols = max(a.shape[2], b.shape[2]), max(a.shape[3], b.shape[3])

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, cols - t.shape[3], 0, rows - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


class _Residual(nn.Module):
    def __init__(self, in_channels: int, width: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = _ConvAffine(in_channels, width, 3, stride, 0 if downsample else 1)
        self.conv2 = _ConvAffine(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(_add_padded(y, shortcut))


@dataclass
class FaceFeatures:
    """The outputs of each stage (35, 17, 8, 4, 2 px for a 150 px chip) and the 128-d descriptor."""

    stages: list[torch.Tensor]
    descriptor: torch.Tensor


class FaceResNet(nn.Module):
    """dlib's face-descriptor ResNet; ``forward`` takes (N, 3, 150, 150) RGB chips in [0, 255].

    Loaded weights are frozen (``requires_grad_(False)``, eval mode); gradients still flow to the input.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]))
        self.stem = _ConvAffine(3, 32, 7, 2, 0)
        blocks, channels = [], 32
        self.stage_ends: list[int] = []
        for width, count, downsamples in STAGES:
            for block in range(count):
                blocks.append(_Residual(channels, width, downsamples and block == 0))
                channels = width
            self.stage_ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(STAGES[-1][0], DESCRIPTOR_SIZE, bias=False)

    def stage_outputs(self, chips: torch.Tensor, count: int | None = None) -> list[torch.Tensor]:
        """The outputs of the first ``count`` stages (all by default); later blocks are not run."""
        x = (chips - self.mean.view(1, 3, 1, 1)) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        stages = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.stage_ends:
                stages.append(x)
                if len(stages) == count:
                    break
        return stages

    def features(self, chips: torch.Tensor) -> FaceFeatures:
        stages = self.stage_outputs(chips)   # the last block ends the last stage
        return FaceFeatures(stages=stages, descriptor=self.fc(stages[-1].mean(dim=(2, 3))))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """The 128-d descriptors (N, 128)."""
        return self.features(chips).descriptor

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], path: Path | None = None) -> "FaceResNet":
        net = cls()
        expected = net.state_dict()
        if set(tensors) != set(expected) or any(tensors[k].shape != v.shape for k, v in expected.items()):
            raise WeightsError("the face-descriptor tensors do not fit the network", path)
        net.load_state_dict(tensors)
        return net.requires_grad_(False).eval()


def installed_dat_path() -> Path:
    """The network file inside the installed face_recognition_models package."""
    from ..landmarks.dlib_backend import face_model_path

    return face_model_path(DAT_FILE, "the face-trained loss and perceptual metric")


def default_cache_dir() -> Path:
    root = os.environ.get("ANIMATE_FACE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"),
                                                               "animate-face")
    return Path(root).expanduser()


def load_face_resnet(dat_path: str | Path | None = None, cache_dir: str | Path | None = None) -> FaceResNet:
    """The network, from the safetensors cache when it was made from this very ``.dat`` file
    (same size and modification time), else parsed from the file and cached (a cache that cannot
    be written is only logged). Loaded once per process for the same arguments."""
    dat = Path(dat_path) if dat_path is not None else installed_dat_path()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _load(str(dat), str(cache))


@functools.lru_cache(maxsize=4)
def _load(dat_path: str, cache_dir: str) -> FaceResNet:
    dat = Path(dat_path)
    try:
        stat = dat.stat()
    except OSError as error:
        raise WeightsError(f"the face-descriptor network is missing ({error.strerror or error})", dat) from error
    source = {"source": str(dat.resolve()), "size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}
    cached = Path(cache_dir) / CACHE_NAME
    if cached.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cached), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if all(metadata.get(k) == v for k, v in source.items()):
                return FaceResNet.from_tensors(load_file(str(cached)), cached)
        except (SafetensorError, OSError, WeightsError) as error:
            logger.info("ignoring a broken face-network cache %s (%s)", cached, error)
    tensors = read_dlib_resnet(dat)
    net = FaceResNet.from_tensors(tensors, dat)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        save_file(tensors, str(temporary), metadata=source)
        os.replace(temporary, cached)
        logger.debug("cached the face-descriptor network in %s", cached)
    except OSError as error:
        logger.info("cannot cache the face-descriptor network in %s (%s)", cached, error.strerror or error)
    return net


# ----------------------------------------------------------------------------------------------
# Face chips


def chip_matrix(points: np.ndarray | torch.Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
                ) -> torch.Tensor:
    """The similarity (N, 2, 3) mapping chip pixels to image pixels, fitted (least squares, as
    dlib's ``find_similarity_transform``) from dlib's 5-point chip template to the 68 landmarks'
    eye corners and nose base. ``points`` (N, 68, 2) or (68, 2)."""
    points = torch.as_tensor(points, dtype=torch.float32)
    single = points.dim() == 2
    points = points[None] if single else points
    template = torch.as_tensor((CHIP_TEMPLATE + padding) / (2 * padding + 1) * size, dtype=torch.float32,
                               device=points.device)
    target = points[:, list(CHIP_POINTS_68)]
    # Umeyama without reflection, closed form for 2-D similarity: image = s R chip + t.
    src_mean, dst_mean = template.mean(0), target.mean(1)
    src, dst = template - src_mean, target - dst_mean[:, None]
    dot = (src[None] * dst).sum(dim=(1, 2))
    cross = (src[None, :, 0] * dst[:, :, 1] - src[None, :, 1] * dst[:, :, 0]).sum(dim=1)
    variance = (src**2).sum()
    a, b = dot / variance, cross / variance  # s cos, s sin
    rotation = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    # dlib's chip rectangle is centred on the template's point (size/2, size/2), is size * scale - 1
    # image pixels wide (a centred drectangle) and spreads that over the size - 1 pixel steps.
    centre = dst_mean + rotation @ (torch.full((2,), size / 2, device=points.device) - src_mean)
    scale = torch.sqrt(a**2 + b**2)
    rotation = rotation * ((size * scale - 1) / (scale * (size - 1)))[:, None, None]
    translation = centre - rotation @ torch.full((2,), (size - 1) / 2, device=points.device)
    matrix = torch.cat([rotation, translation[..., None]], dim=-1)
    return matrix[0] if single else matrix


def face_chips(images: torch.Tensor, points: torch.Tensor | np.ndarray, size: int = CHIP_SIZE,
               padding: float = CHIP_PADDING) -> torch.Tensor:
    """Differentiable aligned chips (N, C, size, size) of ``images`` (N, C, H, W), sampled
    bilinearly at the similarity of :func:`chip_matrix`; outside the image is the border colour.

    The same transform for real and generated images makes a loss compare like with like. For faces
    shrunk more than 2x the chip is sampled from an area-averaged copy (dlib pre-shrinks with a
    pyramid), so it does not alias.
    """
    points = torch.as_tensor(points, dtype=torch.float32, device=images.device)
    matrix = chip_matrix(points, size, padding)
    scale = float(torch.linalg.matrix_norm(matrix[:, :, :2], ord=2).max())
    shrink = int(scale // 2) if scale >= 2 else 1
    if shrink > 1:
        images = F.avg_pool2d(images, shrink, shrink, ceil_mode=True)
    # The pooled image spans shrink times its size in original pixels.
    height, width = images.shape[-2] * shrink, images.shape[-1] * shrink
    # Chip pixel centres -> image pixel centres -> grid_sample's [-1, 1] (align_corners=False).
    coords = torch.arange(size, dtype=torch.float32, device=images.device)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    chip = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).view(1, -1, 3)
    image_xy = chip @ matrix.transpose(1, 2)  # (N, size*size, 2), pixel centres at integers
    norm = torch.tensor([width, height], dtype=torch.float32, device=images.device)
    grid = ((image_xy + 0.5) / norm * 2 - 1).view(-1, size, size, 2)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
