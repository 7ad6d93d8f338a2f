"""The person matte: MediaPipe's selfie segmentation network, converted to safetensors and run with torch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from skimage import data

from animate_cli.io.images import load_image
from animate_cli.landmarks import create_backend
from animate_cli.render import head_motion, person_matte

# MediaPipe's own answer (mediapipe 0.10.14, SelfieSegmentation(model_selection=0)) on scikit-image's astronaut
# (512 px), averaged over 32 x 32 blocks: the converted network run here must give the same.
MEDIAPIPE_ASTRONAUT = np.array([
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.32, 0.47, 0.13, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.00, 0.00, 0.03, 0.67, 1.00, 1.00, 0.96, 0.14, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.00, 0.00, 0.20, 1.00, 1.00, 1.00, 1.00, 0.41, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.00, 0.00, 0.04, 0.83, 1.00, 1.00, 0.99, 0.22, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.00, 0.00, 0.05, 0.43, 1.00, 1.00, 0.47, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.00, 0.11, 0.90, 1.00, 1.00, 1.00, 0.23, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.00, 0.01, 0.62, 1.00, 1.00, 1.00, 1.00, 0.96, 0.19, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.01, 0.68, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.80, 0.10, 0.00, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.39, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.81, 0.04, 0.00, 0.00, 0.00, 0.00],
    [0.00, 0.80, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.42, 0.00, 0.00, 0.00, 0.00],
    [0.11, 0.98, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.99, 1.00, 0.62, 0.26, 0.10, 0.00, 0.00],
    [0.23, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.98, 0.93, 1.00, 1.00, 1.00, 0.98, 0.47, 0.00],
    [0.57, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.23],
    [0.68, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.52],
    [0.72, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.69],
    [0.69, 1.00, 1.00, 0.97, 0.99, 0.98, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 0.99, 0.60],
])


def test_the_converted_network_gives_mediapipes_answer():
    probability = person_matte.person_probability(data.astronaut())
    assert probability.shape == (512, 512) and probability.dtype == np.float32
    blocks = probability.reshape(16, 32, 16, 32).mean(axis=(1, 3))
    difference = np.abs(blocks - MEDIAPIPE_ASTRONAUT)
    # Only the photo's shrinking to the network's input differs (area averaging here, bilinear there).
    assert difference.mean() < 0.02 and difference.max() < 0.3
    assert ((blocks > 0.5) == (MEDIAPIPE_ASTRONAUT > 0.5)).mean() > 0.97


def test_long_dark_hair_is_part_of_the_person(realdata):
    # Colour segmentation (GrabCut) called this portrait's long dark hair background: the head moved without
    # it and left a smooth smear beside the neck. The network keeps it with the person.
    image = load_image(realdata / "sadtalker_people_0.png")
    backend = create_backend("dlib", "cpu")
    points = np.asarray(backend.landmarks(image, backend.detect_faces(image)[0].box))
    matte = head_motion.segment_person(image, points)
    width = points[16, 0] - points[0, 0]
    for x, y in ((points[4, 0] - 0.3 * width, points[8, 1]), (points[12, 0] + 0.3 * width, points[8, 1]),
                 (points[0, 0] - 0.1 * width, points[19, 1] - 0.2 * width)):
        assert matte[int(y), int(x)] > 0.9
    assert matte[5, 5] < 0.05


def test_without_the_weights_the_person_is_segmented_by_colour(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(person_matte, "weights_path", lambda: tmp_path / "missing.safetensors")
    image = data.astronaut()
    backend = create_backend("dlib", "cpu")
    points = np.asarray(backend.landmarks(image, backend.detect_faces(image)[0].box))
    with caplog.at_level(logging.WARNING):
        matte = head_motion.segment_person(image, points)
    assert "missing.safetensors: no person-matte weights" in caplog.text
    assert matte[int(points[30, 1]), int(points[30, 0])] > 0.9 and matte[10, 10] < 0.1


def test_an_unknown_operator_is_refused(tmp_path):
    import json

    from safetensors.numpy import save_file

    graph = {"input": 0, "output": 1, "input_shape": [1, 8, 8, 3],
             "operators": [{"op": "SOFTMAX", "in": [0], "out": [1], "options": {}}]}
    path = tmp_path / "odd.safetensors"
    save_file({"t2": np.zeros(1, np.float32)}, str(path), metadata={"graph": json.dumps(graph)})
    with pytest.raises(ValueError, match="SOFTMAX"):
        person_matte.PersonMatteNet(path)
