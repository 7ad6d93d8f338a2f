"""Write the generator's ONNX graph beside a checkpoint's weights, so that no run on a CPU exports it.

    python scripts/bundle_graph.py [WEIGHTS_DIR]      # default: the bundled weights/

The graph (``export.generator_graph_bytes``: the AdaIN parameters an input, so one graph serves every
person rendered with these weights) is written as ``WEIGHTS_DIR/generator.onnx`` with a key of the weights,
the config, the opset and the generator's code in its metadata (``render/onnx_cache.py``). A run uses it
only while that key holds; after the generator's code or the weights change, rerun this script (the test
``test_the_shipped_graph_is_that_of_the_shipped_weights`` says when).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from animate_cli.export import DEFAULT_OPSET, generator_graph_bytes
from animate_cli.models import TalkingHeadModel
from animate_cli.render.onnx_cache import bundle_graph

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", default=str(HERE.parent / "weights"), help="a checkpoint folder")
    args = parser.parse_args()
    model = TalkingHeadModel.from_pretrained(args.weights, device=torch.device("cpu")).eval()
    path = bundle_graph(model.config, model.generator.state_dict(), generator_graph_bytes(model), DEFAULT_OPSET,
                        args.weights)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
