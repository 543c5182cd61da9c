"""Clips of trajectory segments for a browser: MP4 (H.264) by default, GIF as the fallback.

MP4 goes through the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships (no system ffmpeg
needed); H.264 with the yuv420p pixel format plays in every browser, and ``+faststart`` puts the
index first so that playback starts before the file is fully loaded. When ffmpeg is missing or fails
the clip is written as a looping GIF, which every browser shows as an image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np

__all__ = ["CLIP_FORMATS", "MEDIA_TYPES", "write_clip"]

ClipFormat = Literal["mp4", "gif"]
CLIP_FORMATS: tuple[ClipFormat, ...] = ("mp4", "gif")
MEDIA_TYPES = {".mp4": "video/mp4", ".gif": "image/gif"}


def _even(frames: np.ndarray) -> np.ndarray:
    # H.264 in yuv420p needs even widths and heights; padding by one edge pixel keeps the picture unscaled.
    pad_height, pad_width = frames.shape[1] % 2, frames.shape[2] % 2
    if not pad_height and not pad_width:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_height), (0, pad_width), (0, 0)), mode="edge")


def write_clip(
    frames: np.ndarray, stem: str | os.PathLike, fps: float, clip_format: ClipFormat = "mp4"
) -> Path:
    """Write image frames [T, H, W, 3] (uint8) as ``<stem>.mp4`` or ``<stem>.gif``; returns the path.

    The file appears under its final name only once it is complete (written to a temporary name and
    renamed). An MP4 that cannot be written (no ffmpeg) falls back to a GIF with a warning.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"clip frames must be a non-empty uint8 array [T, H, W, 3], got {frames.dtype} {frames.shape}; "
            "collect segments from an env with render_mode='rgb_array' and render=True"
        )
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if clip_format not in CLIP_FORMATS:
        raise ValueError(f"clip_format must be one of {CLIP_FORMATS}, got {clip_format!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if clip_format == "mp4":
        target = stem.with_name(stem.name + ".mp4")
        temporary = stem.with_name(stem.name + ".partial.mp4")
        try:
            iio.imwrite(
                temporary,
                _even(frames),
                # By name: without imageio-ffmpeg, imageio would try any other plugin that claims .mp4
                # (tifffile, where installed, fails on fps with a TypeError) instead of raising ImportError.
                plugin="FFMPEG",
                fps=fps,
                codec="libx264",
                macro_block_size=2,
                output_params=["-movflags", "+faststart"],
                ffmpeg_log_level="error",
            )
        except (ImportError, OSError, RuntimeError) as error:
            temporary.unlink(missing_ok=True)
            warnings.warn(f"cannot write an MP4 clip ({error}); writing a GIF instead", stacklevel=2)
        else:
            os.replace(temporary, target)
            return target
    target = stem.with_name(stem.name + ".gif")
    temporary = stem.with_name(stem.name + ".partial.gif")
    iio.imwrite(temporary, frames, duration=1000 / fps, loop=0)
    os.replace(temporary, target)
    return target
