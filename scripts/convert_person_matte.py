"""Convert MediaPipe's selfie segmentation model (a .tflite file) to the project's person-matte weights.

    pip install mediapipe==0.10.14 tflite      # in a separate environment: only to read the model
    python scripts/convert_person_matte.py \
        <site-packages>/mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite \
        weights/person_matte.safetensors

The model (Apache-2.0, "MediaPipe Selfie Segmentation", general 256 x 256 variant, 2021-01-19) is a small
MobileNetV3-like encoder-decoder: 256 x 256 RGB in [0, 1] in, a person probability per pixel out. The output
file holds its constants as safetensors tensors ``t<index>`` (float16 weights kept float16) and its graph (the
operators in order, their tensor indices and options) as JSON in the safetensors metadata, which
``animate_cli/render/person_matte.py`` runs with torch. Nothing here runs at install or run time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tflite
from safetensors.numpy import save_file

PADDING = {0: "same", 1: "valid"}
ACTIVATION = {0: None, 1: "relu", 3: "relu6"}
OPERATORS = {value: key for key, value in tflite.BuiltinOperator.__dict__.items() if not key.startswith("_")}
NUMPY_TYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
               tflite.TensorType.INT32: np.int32}


def _options(op, name: str) -> dict:
    """The options of one operator that the runner needs."""
    table = op.BuiltinOptions()
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
        options = cls()
        options.Init(table.Bytes, table.Pos)
        if options.DilationWFactor() != 1 or options.DilationHFactor() != 1:
            raise ValueError(f"{name}: dilation is not supported")
        return {"padding": PADDING[options.Padding()], "stride": [options.StrideH(), options.StrideW()],
                "activation": ACTIVATION[options.FusedActivationFunction()]}
    if name == "AVERAGE_POOL_2D":
        options = tflite.Pool2DOptions()
        options.Init(table.Bytes, table.Pos)
        return {"padding": PADDING[options.Padding()], "stride": [options.StrideH(), options.StrideW()],
                "size": [options.FilterHeight(), options.FilterWidth()],
                "activation": ACTIVATION[options.FusedActivationFunction()]}
    if name in ("ADD", "MUL"):
        options = tflite.AddOptions() if name == "ADD" else tflite.MulOptions()
        options.Init(table.Bytes, table.Pos)
        return {"activation": ACTIVATION[options.FusedActivationFunction()]}
    if name == "RESIZE_BILINEAR":
        options = tflite.ResizeBilinearOptions()
        options.Init(table.Bytes, table.Pos)
        return {"align_corners": bool(options.AlignCorners()), "half_pixel_centers": bool(options.HalfPixelCenters())}
    if name == "CUSTOM:Convolution2DTransposeBias":
        # MediaPipe's custom op: its options are the raw struct (padding, stride width, stride height).
        padding, stride_w, stride_h = np.frombuffer(op.CustomOptionsAsNumpy().tobytes(), np.int32)
        return {"padding": {1: "same", 2: "valid"}[int(padding)], "stride": [int(stride_h), int(stride_w)]}
    return {}


def convert(source: Path, target: Path) -> None:
    data = source.read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError("expected one subgraph")
    graph = model.Subgraphs(0)
    constants: dict[str, np.ndarray] = {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength():
            values = np.frombuffer(buffer.DataAsNumpy().tobytes(), NUMPY_TYPES[tensor.Type()])
            constants[f"t{index}"] = values.reshape(tensor.ShapeAsNumpy()).copy()
    operators = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = OPERATORS[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name == "CUSTOM":
            name = "CUSTOM:" + code.CustomCode().decode()
        operators.append({"op": name, "in": [int(i) for i in op.InputsAsNumpy()],
                          "out": [int(i) for i in op.OutputsAsNumpy()], "options": _options(op, name)})
    spec = {"input": int(graph.Inputs(0)), "output": int(graph.Outputs(0)),
            "input_shape": graph.Tensors(graph.Inputs(0)).ShapeAsNumpy().tolist(), "operators": operators}
    metadata = {"graph": json.dumps(spec), "source": source.name,
                "model": model.Description().decode(errors="replace"),
                "licence": "Apache-2.0 (MediaPipe, Google LLC)"}
    save_file(constants, str(target), metadata=metadata)
    print(f"{target}: {len(operators)} operators, {len(constants)} constants, {target.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="selfie_segmentation.tflite")
    parser.add_argument("target", type=Path, help="the .safetensors to write")
    args = parser.parse_args()
    convert(args.source, args.target)


if __name__ == "__main__":
    main()
