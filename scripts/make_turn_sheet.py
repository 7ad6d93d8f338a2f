"""Make the README's sheet of a turning head: the sample portrait driven by a talker who turns, at the
driving frames of largest turn.

    python scripts/make_turn_sheet.py DRIVER.mp4 [--photo samples/portrait.jpg] [-o docs/turn.jpg]

The photo is animated with the defaults (``render_frames``, as the main job does). The frames shown are the
driver's two largest turns to each side (yaw about the clip's median, by ``eval.cross.head_pose``; at least
``SPACING`` frames apart). The driver's row shows its landmarks drawn on black, not its pixels, so the sheet
holds nothing of a driving video that may not be redistributed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.eval.cross import head_pose
from animate_cli.io.images import load_image, save_image
from animate_cli.jobs import build_engine
from animate_cli.render.pipeline import load_driver, render_frames
from animate_cli.render.preview import contact_sheet, driver_frame, keep_frames

REPO = Path(__file__).resolve().parents[1]
SPACING = 10
PER_SIDE = 2


def largest_turns(yaw: np.ndarray, per_side: int = PER_SIDE, spacing: int = SPACING) -> list[int]:
    """Frame numbers of the ``per_side`` largest turns each way about the median, ``spacing`` frames apart."""
    turn = yaw - np.nanmedian(yaw)
    chosen: list[int] = []
    for sign in (-1.0, 1.0):
        side = []
        for index in np.argsort(-sign * np.nan_to_num(turn, nan=0.0)):
            if all(abs(int(index) - other) >= spacing for other in chosen + side):
                side.append(int(index))
            if len(side) == per_side:
                break
        chosen += side
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("driver")
    parser.add_argument("--photo", default=str(REPO / "samples" / "portrait.jpg"))
    parser.add_argument("-o", "--output", default=str(REPO / "docs" / "turn.jpg"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    engine = build_engine(None)
    person = engine.make_person([args.photo], FinetuneConfig(steps=0))
    config = RenderConfig(audio=False)
    driver = load_driver(args.driver, engine.backend, config.smoothing)
    track = driver.track
    wanted = largest_turns(head_pose(track.points)[:, 0])
    kept: dict[int, np.ndarray] = {}
    for _ in keep_frames(render_frames(engine.frame_renderer(person), person, driver, config).frames, wanted, kept):
        pass
    drivers = [(i, driver_frame(Path(args.driver), False, track.fps, i, track.points[i], track.frame_size))
               for i in wanted]
    sheet = contact_sheet(load_image(args.photo), drivers, [(i, kept[i]) for i in wanted])
    save_image(args.output, sheet)
    print(f"wrote {args.output}: frames {wanted}")


if __name__ == "__main__":
    main()
