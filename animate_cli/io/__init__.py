"""File input and output: images, streaming video, atomic writes."""

from animate_cli.io.atomic import atomic_output
from animate_cli.io.images import IMAGE_EXTENSIONS, list_images, load_image, save_image
from animate_cli.io.video import VideoInfo, VideoWriter, even_size, iter_frames, probe_output, probe_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "VideoInfo",
    "VideoWriter",
    "atomic_output",
    "even_size",
    "iter_frames",
    "list_images",
    "load_image",
    "probe_output",
    "probe_video",
    "save_image",
]
