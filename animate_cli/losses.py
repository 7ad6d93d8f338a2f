"""Losses of the paper (section 3.2): content (perceptual), adversarial (hinge + feature
matching) and embedding match.

The perceptual networks (VGG19, VGGFace) are plain ``nn.Sequential`` stacks loaded from
safetensors files; when none can be had (no file, no network), ``ContentLoss`` falls back to
an offline substitute and says so in ``mode`` / ``description``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import WeightsError

logger = logging.getLogger(__name__)

VGG19_ENV = "ANIMATE_FACE_VGG19"
VGGFACE_ENV = "ANIMATE_FACE_VGGFACE"
VGG19_HUB_REPO = "timm/vgg19.tv_in1k"
VGG19_HUB_FILE = "model.safetensors"

# Paper weights of the two perceptual terms, as used by the public reimplementations
# (e.g. vincent-thevenin/Realistic-Neural-Talking-Head-Models): 1.5e-1 VGG19, 2.5e-2 VGGFace.
VGG19_WEIGHT = 1.5e-1
VGGFACE_WEIGHT = 2.5e-2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGGFace (Parkhi et al. 2015) was trained on RGB in [0, 255] minus this mean, no scaling.
VGGFACE_MEAN_255 = (129.186279296875, 104.76238250732422, 93.59396362304688)


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - real)) + mean(relu(1 + fake)).

    The ReLUs are the hinge: without them (a known reimplementation bug) the discriminator
    is rewarded without bound for confident scores and training diverges.
    """
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-mean(fake): the generator raises the discriminator's score of its frames."""
    return -fake_scores.mean()


def feature_matching_loss(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Sum over discriminator blocks of the mean L1 distance; real activations are constants."""
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError("feature lists must be non-empty and of equal length")
    return sum(F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features))


def match_loss(w_columns: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """L_MCH: mean L1 between discriminator columns W_i (N, emb) and embeddings e_i (N, emb)."""
    if w_columns.shape != embeddings.shape:
        raise ValueError(f"shapes differ: {tuple(w_columns.shape)} vs {tuple(embeddings.shape)}")
    return F.l1_loss(w_columns, embeddings)


# VGG layer layouts in torchvision/timm order: channel counts, "M" for max pooling.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGGFeatures(nn.Module):
    """The convolutional part of a VGG up to relu5_1, with ``features.N`` indices as in
    torchvision and timm, returning the ReLU outputs after conv1_1 ... conv5_1."""

    def __init__(self, layout: tuple[int | str, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        self.conv_names: dict[str, int] = {}  # "conv3_2" -> index in features
        self.taps: list[int] = []  # indices of the ReLUs after convN_1
        in_channels, block, position = 3, 1, 1
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                block, position = block + 1, 1
                continue
            self.conv_names[f"conv{block}_{position}"] = len(layers)
            layers.append(nn.Conv2d(in_channels, int(item), 3, padding=1))
            if position == 1:
                self.taps.append(len(layers))
            layers.append(nn.ReLU())
            in_channels, position = int(item), position + 1
        # Nothing past relu5_1 is used.
        self.features = nn.Sequential(*layers[: self.taps[-1] + 1])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs

    def load_weights(self, path: str | Path) -> "VGGFeatures":
        """Load ``features.N.weight/bias`` (torchvision/timm layout) or ``convB_P.weight/bias``
        (VGGFace conversions) from a safetensors file; other keys (classifier) are ignored."""
        path = Path(path)
        if not path.is_file():
            raise WeightsError("VGG weights file not found", path)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise WeightsError(f"corrupt or truncated VGG weights file ({str(error).splitlines()[0]})", path) from error
        by_index = {}
        for key, tensor in tensors.items():
            match = re.fullmatch(r"(?:.*\.)?(?:features\.(\d+)|(conv\d_\d))\.(weight|bias)", key)
            if not match:
                continue
            index = int(match.group(1)) if match.group(1) else self.conv_names.get(match.group(2))
            if index is not None and index < len(self.features):
                by_index[f"features.{index}.{match.group(3)}"] = tensor
        expected = self.state_dict()
        missing = sorted(set(expected) - set(by_index))
        if missing:
            raise WeightsError(f"not a VGG weights file of this architecture: missing {', '.join(missing[:3])}", path)
        for key, tensor in expected.items():
            if by_index[key].shape != tensor.shape:
                raise WeightsError(f"VGG weights do not fit: {key} has shape {tuple(by_index[key].shape)}, "
                                   f"expected {tuple(tensor.shape)}", path)
        self.load_state_dict({key: by_index[key].float() for key in expected})
        return self


def vgg19() -> VGGFeatures:
    """VGG19 features up to relu5_1 (random weights until ``load_weights``)."""
    return VGGFeatures(VGG19_LAYOUT)


def vggface() -> VGGFeatures:
    """VGGFace (VGG16 architecture) features up to relu5_1."""
    return VGGFeatures(VGG16_LAYOUT)


def sobel_gradients(images: torch.Tensor) -> torch.Tensor:
    """Per-channel horizontal and vertical Sobel responses, (N, 2C, H, W)."""
    kernel_x = images.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernels = torch.stack([kernel_x, kernel_x.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    channels = images.shape[1]
    kernels = kernels.repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernels, groups=channels)


class ContentLoss(nn.Module):
    """L_CNT between generated and ground-truth frames, both (N, 3, H, W) in [-1, 1].

    ``mode == "perceptual"`` (the paper): ``VGG19_WEIGHT`` (1.5e-1) times the sum over VGG19's
    relu1_1 ... relu5_1 of the mean L1 distance of activations (inputs ImageNet-normalised
    [0, 1]), plus ``VGGFACE_WEIGHT`` (2.5e-2) times the same over VGGFace's (VGG16) matching
    layers (inputs RGB [0, 255] minus the VGGFace mean). Either network may be absent.

    ``mode == "substitute"`` (no VGG weights here, e.g. offline): mean L1 on a 3-level image
    pyramid (full, 1/2, 1/4 by 2x2 average pooling, summed) plus the mean L1 between Sobel
    gradients at full resolution. It is zero for identical images and grows with blur and
    misalignment, but it is only a pixel-space proxy: expect blurrier results than with VGG.

    A ``face_loss`` (:class:`FaceLoss`, dlib's face-trained ResNet) plays VGGFace's part when no
    VGGFace weights are given: it is added to either mode, and then ``forward`` needs the target's
    landmarks (``points``, (N, 68, 2) in the images' pixels) to cut the aligned face chips.
    """

    def __init__(self, vgg19_net: VGGFeatures | None = None, vggface_net: VGGFeatures | None = None,
                 vgg19_weight: float = VGG19_WEIGHT, vggface_weight: float = VGGFACE_WEIGHT,
                 face_loss: "FaceLoss | None" = None):
        super().__init__()
        self.vgg19 = vgg19_net
        self.vggface = vggface_net
        self.vgg19_weight = vgg19_weight
        self.vggface_weight = vggface_weight
        self.face = face_loss
        self.register_buffer("imagenet_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("imagenet_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("vggface_mean", torch.tensor(VGGFACE_MEAN_255).view(1, 3, 1, 1), persistent=False)
        if vgg19_net is None and vggface_net is None:
            self.mode = "substitute"
            self.description = "substitute content loss: L1 on a 3-level image pyramid + L1 on Sobel gradients"
        else:
            self.mode = "perceptual"
            parts = [f"VGG19 x {vgg19_weight:g}"] if vgg19_net is not None else []
            parts += [f"VGGFace x {vggface_weight:g}"] if vggface_net is not None else []
            self.description = "perceptual content loss: " + " + ".join(parts)
        if face_loss is not None:
            self.description += f" + {face_loss.description}"

    @property
    def needs_points(self) -> bool:
        """True when ``forward`` needs the target's landmarks (the face-trained term is on)."""
        return self.face is not None

    @classmethod
    def from_available(cls, vgg19: str | Path | None = None, vggface: str | Path | None = None,
                       allow_download: bool = True, face: bool = True) -> "ContentLoss":
        """Build the best content loss the machine allows.

        ``vgg19`` / ``vggface`` are local safetensors files (defaults: the environment variables
        ANIMATE_FACE_VGG19 / ANIMATE_FACE_VGGFACE); a given file that cannot be loaded raises
        WeightsError. Without a local VGG19 and with ``allow_download``, timm's VGG19 is fetched
        from the Hugging Face Hub; if that fails for lack of network or access, one line is
        logged and the loss runs without it (the substitute if no network remains).
        Without VGGFace and with ``face``, dlib's face-trained ResNet (installed with
        face-recognition-models) takes its place; if it cannot be loaded, one line says so.
        """
        vgg19_path = vgg19 or os.environ.get(VGG19_ENV) or None
        vggface_path = vggface or os.environ.get(VGGFACE_ENV) or None
        if vgg19_path is None and allow_download:
            vgg19_path = _download_vgg19()
        vgg19_net = None if vgg19_path is None else VGGFeatures(VGG19_LAYOUT).load_weights(vgg19_path)
        vggface_net = None if vggface_path is None else VGGFeatures(VGG16_LAYOUT).load_weights(vggface_path)
        face_loss = None
        if face and vggface_net is None:
            try:
                face_loss = FaceLoss.installed()
            except WeightsError as error:
                logger.warning("the face-trained loss is unavailable (%s); continuing without it", error)
        loss = cls(vgg19_net, vggface_net, face_loss=face_loss)
        logger.debug("%s", loss.description)
        return loss

    def forward(self, generated: torch.Tensor, target: torch.Tensor,
                points: torch.Tensor | None = None) -> torch.Tensor:
        total = self._image_terms(generated, target)
        if self.face is not None:
            if points is None:
                raise ValueError("the face-trained content loss needs the target's landmarks (points)")
            total = total + self.face(generated, target, points)
        return total

    def _image_terms(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == "substitute":
            return self._substitute(generated, target)
        total = generated.new_zeros(())
        if self.vgg19 is not None:
            total = total + self.vgg19_weight * self._perceptual(self.vgg19, self._imagenet(generated),
                                                                 self._imagenet(target))
        if self.vggface is not None:
            total = total + self.vggface_weight * self._perceptual(self.vggface, self._vggface_input(generated),
                                                                   self._vggface_input(target))
        return total

    def _imagenet(self, images: torch.Tensor) -> torch.Tensor:
        return ((images + 1.0) / 2.0 - self.imagenet_mean) / self.imagenet_std

    def _vggface_input(self, images: torch.Tensor) -> torch.Tensor:
        return (images + 1.0) * 127.5 - self.vggface_mean

    @staticmethod
    def _perceptual(network: VGGFeatures, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = network(target)
        return sum(F.l1_loss(fake, real) for fake, real in zip(network(generated), target_features))

    @staticmethod
    def _substitute(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.detach()
        loss = F.l1_loss(sobel_gradients(generated), sobel_gradients(target))
        for level in range(3):
            if level:
                generated, target = F.avg_pool2d(generated, 2), F.avg_pool2d(target, 2)
            loss = loss + F.l1_loss(generated, target)
        return loss


# FaceLoss weights. Measured between the warp and the real frame on held-out video frames (128 px
# crops): pixel substitute 0.41, perceptual 0.35, identity 0.36. At these weights the face terms
# (0.35 + 0.18) carry a little over half of the content loss; identity at half weight because its
# gradient reaches the pixels only through the 128-d descriptor (docs/training.md, "The face-trained loss").
FACE_PERCEPTUAL_WEIGHT = 1.0
FACE_IDENTITY_WEIGHT = 0.5
# The chip's stages compared: 35, 17, 8 and 4 px (the 2 px stage feeds the descriptor).
FACE_STAGES = 4


class FaceLoss(nn.Module):
    """Perceptual and identity distance through dlib's face-descriptor ResNet, the offline
    stand-in for the paper's VGGFace term.

    Generated and real images (N, 3, H, W) in [-1, 1] are cut into 150 px chips by the same
    similarity from the real frame's landmarks (:func:`face_chips`), so the network sees what
    dlib sees. Perceptual: for each of the first ``FACE_STAGES`` stages, the mean L1 distance of
    activations relative to the real activations' mean magnitude (so every depth counts alike and
    the loss is scale-free). Identity: the Euclidean distance of the 128-d descriptors (dlib calls
    < 0.6 the same person). Both are zero for identical images.
    """

    def __init__(self, network: nn.Module, perceptual_weight: float = FACE_PERCEPTUAL_WEIGHT,
                 identity_weight: float = FACE_IDENTITY_WEIGHT, stages: int = FACE_STAGES):
        super().__init__()
        self.network = network.requires_grad_(False).eval()
        self.perceptual_weight = perceptual_weight
        self.identity_weight = identity_weight
        self.stages = stages
        self.description = (f"dlib face ResNet: perceptual x {perceptual_weight:g} "
                            f"+ identity x {identity_weight:g}")

    @classmethod
    def installed(cls, **weights: float) -> "FaceLoss":
        """The loss on the network of the installed face-recognition-models package (cached)."""
        from .models.face_resnet import load_face_resnet

        return cls(load_face_resnet(), **weights)

    def terms(self, generated: torch.Tensor, target: torch.Tensor,
              points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(perceptual, identity), each the mean over the batch."""
        from .models.face_resnet import face_chips

        points = torch.as_tensor(points, dtype=torch.float32, device=generated.device)
        to_pixels = lambda images: (images.float() + 1.0) * 127.5  # noqa: E731
        # Chip coordinates in float32 even under autocast (half precision moves a 128 px grid by ~0.1 px).
        with torch.autocast(generated.device.type, enabled=False):
            real_chips = face_chips(to_pixels(target.detach()), points)
            fake_chips = face_chips(to_pixels(generated), points)
        with torch.no_grad():
            real = self.network.features(real_chips)
        fake = self.network.features(fake_chips)
        perceptual = generated.new_zeros(())
        for fake_stage, real_stage in zip(fake.stages[:self.stages], real.stages[:self.stages]):
            perceptual = perceptual + F.l1_loss(fake_stage, real_stage) / (real_stage.abs().mean() + 1e-6)
        perceptual = perceptual / self.stages
        identity = torch.sqrt(((fake.descriptor - real.descriptor) ** 2).sum(dim=1) + 1e-12).mean()
        return perceptual, identity

    def forward(self, generated: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        perceptual, identity = self.terms(generated, target, points)
        return self.perceptual_weight * perceptual + self.identity_weight * identity


def _download_vgg19() -> str | None:
    """Path of timm's VGG19 weights from the Hub (or its cache), or None when unreachable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    network_errors: tuple[type[BaseException], ...] = (LocalEntryNotFoundError, HfHubHTTPError,
                                                       OfflineModeIsEnabled, ConnectionError, TimeoutError)
    try:
        import httpx

        network_errors += (httpx.HTTPError,)
    except ImportError:
        pass
    try:
        return hf_hub_download(VGG19_HUB_REPO, VGG19_HUB_FILE, local_files_only=True)
    except network_errors:
        pass
    if not _hub_reachable():
        logger.info("VGG19 weights unavailable (the Hub cannot be reached); continuing without VGG19")
        return None
    try:
        return hf_hub_download(VGG19_HUB_REPO, VGG19_HUB_FILE)
    except network_errors as error:
        logger.warning("VGG19 weights unavailable (%s: %s); continuing without VGG19",
                       type(error).__name__, str(error).splitlines()[0][:160])
        return None


def _hub_reachable(timeout: float = 2.0) -> bool:
    """A quick TCP check of the Hub endpoint, so an offline machine does not sit through retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
