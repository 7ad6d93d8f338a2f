"""The person's matte from a small pretrained segmentation network, run with torch.

The network is MediaPipe's selfie segmentation (Apache-2.0, Google LLC; the general 256 x 256 model of
2021-01-19), a MobileNetV3-like encoder-decoder that gives each pixel a probability of being the person,
hair and clothes included. Its weights and graph were converted once from the .tflite file in the
``mediapipe`` wheel (``scripts/convert_person_matte.py``) into ``weights/person_matte.safetensors``, which
ships with the package; this module runs that graph with torch (no MediaPipe, no TFLite runtime). The
segmentation by colour it replaces (GrabCut, ``head_motion.segment_person``) called long dark hair and
a painting's headscarf background, so the head left them behind as a smear when it moved.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open


WEIGHTS_NAME = "person_matte.safetensors"


def weights_path() -> Path:
    """The bundled person-matte weights (the same whichever talking-head weights a job uses)."""
    from ..hub import bundled_weights_dir

    return bundled_weights_dir() / WEIGHTS_NAME


class PersonMatteNet:
    """The converted graph (``scripts/convert_person_matte.py``): operators run in order over NCHW tensors."""

    def __init__(self, path: str | Path):
        with safe_open(str(path), "pt") as weights:
            spec = json.loads(weights.metadata()["graph"])
            self.constants = {int(name[1:]): weights.get_tensor(name).float() for name in weights.keys()}
        self.operators = spec["operators"]
        self.input, self.output = spec["input"], spec["output"]
        self.size = tuple(spec["input_shape"][1:3])
        known = {"DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "RELU", "LOGISTIC", "ADD", "MUL",
                 "AVERAGE_POOL_2D", "RESIZE_BILINEAR", "CUSTOM:Convolution2DTransposeBias"}
        unknown = {op["op"] for op in self.operators} - known
        if unknown:
            raise ValueError(f"{path}: operators this runner does not know: {', '.join(sorted(unknown))}")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] at the input size -> (N, 1, H, W) person probability."""
        values: dict[int, torch.Tensor] = {self.input: images.float()}

        def get(index: int) -> torch.Tensor:
            return values[index] if index in values else self.constants[index]

        for op in self.operators:
            name, inputs, options = op["op"], op["in"], op["options"]
            if name == "DEQUANTIZE":
                result = get(inputs[0])
            elif name == "CONV_2D":
                weight = get(inputs[1]).permute(0, 3, 1, 2)        # OHWI -> OIHW
                x = _pad(get(inputs[0]), weight.shape[2:], options)
                result = F.conv2d(x, weight, get(inputs[2]), stride=options["stride"])
            elif name == "DEPTHWISE_CONV_2D":
                weight = get(inputs[1])[0].permute(2, 0, 1)[:, None]  # 1HWC -> C1HW
                x = _pad(get(inputs[0]), weight.shape[2:], options)
                result = F.conv2d(x, weight, get(inputs[2]), stride=options["stride"], groups=x.shape[1])
            elif name == "AVERAGE_POOL_2D":
                if options["padding"] != "valid":
                    raise ValueError("AVERAGE_POOL_2D with padding is not supported")
                result = F.avg_pool2d(get(inputs[0]), options["size"], options["stride"])
            elif name == "RESIZE_BILINEAR":
                height, width = (int(v) for v in self.constants[inputs[1]].tolist())
                if not options["half_pixel_centers"] or options["align_corners"]:
                    raise ValueError("RESIZE_BILINEAR is supported with half-pixel centres only")
                result = F.interpolate(get(inputs[0]), size=(height, width), mode="bilinear", align_corners=False)
            elif name == "CUSTOM:Convolution2DTransposeBias":
                weight = get(inputs[1]).permute(3, 0, 1, 2)        # OHWI -> IOHW
                stride = options["stride"]
                result = F.conv_transpose2d(get(inputs[0]), weight, get(inputs[2]), stride=stride)
                if options["padding"] == "same":
                    # The full output cropped to input x stride, the extra split as TensorFlow does.
                    extra = [result.shape[2] - values[inputs[0]].shape[2] * stride[0],
                             result.shape[3] - values[inputs[0]].shape[3] * stride[1]]
                    top, left = extra[0] // 2, extra[1] // 2
                    result = result[:, :, top:result.shape[2] - (extra[0] - top),
                                    left:result.shape[3] - (extra[1] - left)]
            elif name == "ADD":
                result = get(inputs[0]) + get(inputs[1])
            elif name == "MUL":
                result = get(inputs[0]) * get(inputs[1])
            elif name == "HARD_SWISH":
                result = F.hardswish(get(inputs[0]))
            elif name == "RELU":
                result = torch.relu(get(inputs[0]))
            else:  # LOGISTIC
                result = torch.sigmoid(get(inputs[0]))
            activation = options.get("activation")
            if activation == "relu":
                result = torch.relu(result)
            elif activation == "relu6":
                result = torch.clamp(result, 0.0, 6.0)
            values[op["out"][0]] = result
        return values[self.output]


def _pad(x: torch.Tensor, kernel: tuple[int, int], options: dict) -> torch.Tensor:
    """``x`` padded as TensorFlow's SAME padding does (the extra row or column at the end), or as is."""
    if options["padding"] != "same":
        return x
    pads = []
    for size, k, stride in zip(x.shape[2:], kernel, options["stride"]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom))


@lru_cache(maxsize=1)
def _network(path: str) -> PersonMatteNet:
    return PersonMatteNet(path)


def person_probability(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how likely each pixel of the RGB ``image`` (H, W, 3) uint8 is the person.
    The photo is squeezed to the network's square input and its answer stretched back (bilinear)."""
    net = _network(str(path or weights_path()))
    height, width = image.shape[:2]
    small = cv2.resize(image, net.size[::-1], interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float() / 255.0
    probability = net(tensor)[0, 0].numpy()
    return np.clip(cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
