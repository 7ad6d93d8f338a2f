"""Measure how deep the outline's ellipses are (OUTLINE_DEPTH in animate_cli/render/head3d.py).

    python scripts/measure_outline_depth.py ../shared/data/lfw-deepfunneled-250.tar [--faces 1500]

dlib's outline (landmarks 0-16) is where a face's side meets what lies behind it as seen. ``mean_face_seen``
models each outline point as the silhouette of a level ellipse through its mean-face point, its depth a
fraction of its half-width (0 gives fixed points of the face). For LFW photos (a fixed random choice) this
fits the mean face to dlib's stable points with each fraction (``fit_mean_face``) and prints the mean
distance left on the outline and on the stable points, in eye-corner distances, by how far the face is
turned. The best fraction fits the turned faces closest.
"""

from __future__ import annotations

import argparse
import random
import tarfile

import cv2
import numpy as np

from animate_cli.landmarks.dlib_backend import DlibBackend
from animate_cli.landmarks.tracking import detect_photo_landmarks
from animate_cli.render import head3d
from animate_cli.render.head3d import fit_mean_face, mean_face_seen, yaw_pitch_roll

DEPTHS = (0.0, 0.4, 0.6, 0.8, 1.0, 1.2)
TURNS = ((0, 10), (10, 20), (20, 30), (30, 90))


def lfw_landmarks(path: str, count: int) -> np.ndarray:
    backend = DlibBackend()
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        random.Random(0).shuffle(members)
        found = []
        for member in members[:count]:
            data = np.frombuffer(tar.extractfile(member).read(), np.uint8)
            image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            try:
                found.append(detect_photo_landmarks(backend, image))
            except Exception:          # no face, or too small: skipped
                continue
    return np.stack(found).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tar")
    parser.add_argument("--faces", type=int, default=1500)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    faces = lfw_landmarks(args.tar, args.faces)
    stable = head3d._STABLE
    print(f"{len(faces)} faces; mean distance left (eye-corner distances): outline / stable points")
    print("depth  all            " + "  ".join(f"{lo}-{hi} deg".ljust(22) for lo, hi in TURNS))
    for depth in DEPTHS:
        head3d.OUTLINE_DEPTH = depth
        turns, outline, kept = [], [], []
        for points in faces:
            scale, rotation, offset = fit_mean_face(points)
            left = np.linalg.norm(points - scale * (mean_face_seen(rotation) @ rotation.T)[:, :2] - offset, axis=1)
            turns.append(abs(np.degrees(yaw_pitch_roll(rotation)[0])))
            outline.append(left[:17].mean() / scale)
            kept.append(left[stable].mean() / scale)
        turns, outline, kept = map(np.asarray, (turns, outline, kept))
        row = f"{depth:<6.1f} {outline.mean():.4f} / {kept.mean():.4f}"
        for lo, hi in TURNS:
            chosen = (turns >= lo) & (turns < hi)
            row += f"  n {chosen.sum():4d}: {outline[chosen].mean():.4f} / {kept[chosen].mean():.4f}"
        print(row)


if __name__ == "__main__":
    main()
