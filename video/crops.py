"""Frame sizes and the I3D crops: resizing's target size, and the 1, 5 or 10 crops of 224x224.

Crop order, k = 0..9 (1 crop keeps k = 0, 5 keep 0..4, so a 10-crop run contains both):
    0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right,
    5..9 the same five crops mirrored left-right.
"""
import numpy as np

from options import CROP


def resized_size(width, height, resize):
    """(width, height) after resizing: an int scales the short side to it, a (W, H) pair is taken as is."""
    if isinstance(resize, int):
        scale = resize / min(width, height)
        return round(width * scale), round(height * scale)
    return tuple(resize)


def crop_boxes(height, width, crops=10):
    """(top, left, mirrored) of each 224x224 crop, in the documented order."""
    if crops not in (1, 5, 10):
        raise ValueError(f'crops must be 1, 5 or 10, got {crops}')
    if height < CROP or width < CROP:
        raise ValueError(f'frames of {width}x{height} are smaller than a {CROP}x{CROP} crop')
    bottom, right = height - CROP, width - CROP
    corners = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    boxes = [(top, left, False) for top, left in corners] + [(top, left, True) for top, left in corners]
    return boxes[:crops]


def crop_frames(frames, crops=10):
    """(..., H, W, 3) -> (crops, ..., 224, 224, 3): every crop of the frames, in crop order."""
    height, width = frames.shape[-3:-1]
    out = []
    for top, left, mirrored in crop_boxes(height, width, crops):
        crop = frames[..., top:top + CROP, left:left + CROP, :]
        out.append(crop[..., ::-1, :] if mirrored else crop)
    return np.stack(out)
