"""Feature files and the videos they make up: naming, grouping, layouts, reading.

Every reader of features goes through this file, so a folder means the same videos to make-list,
to a list file and to `infer.py --features`:
  group_videos   files -> videos: the one rule that groups crop files (every reader calls it)
  find_videos    files and folders given on a command line -> checked videos
  file_layout    (crops, T, D) of one .npy file from its header, checked
  load_video     (N, T, D) float32 of one video, checked for NaN/Inf
  read_record    the extraction record extract.py writes beside a video's features (frame times)
  degenerate     why a feature set carries no information (negligible, or the same for every snippet)

Naming. Crop k of a video is `<video>__<k>.npy`, the crop index after the *last* `__` (real
XD-Violence names contain `__#`). A file without that suffix is a whole video: (T, D) is one crop,
(T, N, D) or (N, T, D) holds all N crops. One layout from the field mixes the two: the 10-crop
UCF-Crime I3D features of the DeepMIL extraction (listed so by PEL4VAD) name crop 0 `<video>.npy`
and crops 1..9 `<video>__1.npy` .. `<video>__9.npy`; a suffix-less file beside `__1`.. files of
the same video is therefore its crop 0. A trailing `_i3d` (RTFM's `<video>_i3d.npy`) is not part
of the video's name.
"""
import json
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from core.scan import name_left_out, scan_folder
from utils import InputError, escape_name

FRAMES_PER_SNIPPET = 16
RECORD_FORMAT = "bn-wvad-features"     # the "format" field of an extraction record (see extract.py)
# Degenerate features (see `degenerate`). Real I3D features (Kinetics weights, DeepMind's clip: the
# shared i3d_kinetics fixture) have snippet norms of about 10 and a spread across the snippets of one
# clip of 0.24 of their size; a default-initialised I3D gives norms of about 1e-4 (1e-6 on real video)
# and a spread under 0.01. The bounds sit orders of magnitude below real features.
NEGLIGIBLE_NORM = 1e-2          # median snippet L2 norm below this: negligible magnitude
CONSTANT_SPREAD = 0.02          # spread across snippets (relative to their size) below this: nearly constant
DEGENERATE_SAMPLE = 32          # videos a feature set is checked on (spread evenly over it)


@dataclass
class Video:
    name: str
    paths: list                 # one feature file per crop, crop order (or the video's one file)
    normal: bool | None         # None: not known (features scored without a list)
    crops: int | None = None    # the crops this video must have (None: any count); also the N of a
                                # one-file (T, N, D) / (N, T, D) video
    crops_from: str | None = None   # the checkpoint `crops` came from, named when the count differs


def split_crop(path):
    """'dir/<video>__<k>.npy' -> ('<video>', k); a name without a crop suffix -> (name, None)."""
    stem = os.path.basename(path)
    stem = stem[:-4] if stem.endswith(".npy") else stem
    m = re.fullmatch(r"(.+)__(\d+)", stem)
    name, k = (m.group(1), int(m.group(2))) if m else (stem, None)
    return name.removesuffix("_i3d"), k


def check_crops(name, ks, places, n_crops, source, crops_from=None):
    """A video's crop indices (sorted, None for a whole-video file) must be 0..N-1, each once.

    N is n_crops, or the video's own count when n_crops is None. places: where each file was named.
    crops_from: the checkpoint N came from (its training features' count), named in the error.
    """
    if ks == [None]:
        return
    for j in range(1, len(ks)):
        if ks[j] == ks[j - 1] or ks[0] is None:     # a whole-video file beside crop files is a second copy
            raise InputError(f"{source}: video {name} appears more than once ({places[j - 1]} and {places[j]})")
    n = n_crops if n_crops is not None else ks[-1] + 1
    if crops_from and ks != list(range(n)) and ks == list(range(len(ks))):
        raise other_crop_count(name, len(ks), n, crops_from, f"{source}: video {name}, {places[0]}")
    missing = [k for k in range(n) if k not in ks]
    if missing:
        raise InputError(f"{source}: video {name} is missing crop(s) {missing} of its {n} ({places[0]})")
    if ks[-1] >= n:
        raise InputError(f"{source}: video {name} has crop {ks[-1]}, but videos have {n} crops (--crops)")


def other_crop_count(name, found, n, crops_from, where):
    """The error for a video of `found` crops where the checkpoint `crops_from` was trained on n-crop
    features, the same on every path that scores features (a test list, --features): each crop of a
    feature set is a differently cropped view, and a detector scores the mean over the crops it was
    trained with. where: the video's list line or file."""
    return InputError(f"{crops_from} was trained on {n}-crop features, but these have {found} crop(s) per video "
                      f"({where}): give --crops {found} to score them with it")


def group_videos(files, source, n_crops=None, same_count=False, crops_from=None):
    """Files -> [(video name, [(crop index, path, place)] in crop order)], first-appearance order.

    files: (path, place) pairs, place saying where the file was named (a list line, a path); source:
    the list or folder, for errors. A suffix-less file beside `__1`.. files of the same video is its
    crop 0 (the DeepMIL layout); beside a `__0` file it is the same crop twice, an error. Every video
    must have crops 0..N-1, each once: N = n_crops if given, else with same_count the most any video
    has here (a dataset has one crop count), else each video's own count. This is the one place
    that turns file names into videos. crops_from: see check_crops.
    """
    groups = {}
    for path, place in files:
        name, k = split_crop(path)
        groups.setdefault(name, []).append([k, path, place])
    for crops in groups.values():
        whole = [c for c in crops if c[0] is None]
        if whole and len(crops) > len(whole) and 0 not in [c[0] for c in crops]:
            whole[0][0] = 0                    # DeepMIL: <video>.npy is crop 0 of <video>__1.npy ..
        crops.sort(key=lambda c: -1 if c[0] is None else c[0])
    if n_crops is None and same_count:
        n_crops = max((c[0] + 1 for crops in groups.values() for c in crops if c[0] is not None), default=1)
    for name, crops in groups.items():
        check_crops(name, [c[0] for c in crops], [c[2] for c in crops], n_crops, source, crops_from)
    return [(name, [tuple(c) for c in crops]) for name, crops in groups.items()]


def header_shape(path):
    """The array shape a .npy file's header gives, or a one-line error naming the file."""
    if not os.path.isfile(path):
        raise InputError(f"feature file {path} does not exist")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception as e:
        raise InputError(f"feature file {path} is not a readable .npy file ({e})") from None


class FeatureWidth(int):
    """A feature width D that says where it comes from (a checkpoint, not --len_feature), for errors."""

    def __new__(cls, width, source):
        self = super().__new__(cls, width)
        self.source = source
        return self


def file_layout(path, len_feature, crops=None):
    """(N, T, D, crop axis) of a feature file from its header alone, checked.

    (T, D): one crop, crop axis None. (T, N, D) or (N, T, D) with N = crops: crop axis 1 or 0; a file
    whose T equals N is read as (T, N, D). len_feature None accepts any width D.
    """
    shape = header_shape(path)
    width = len_feature if len_feature is not None else "D"
    if len(shape) == 2:
        N, T, axis = 1, shape[0], None
    elif len(shape) == 3 and crops is not None and crops in shape[:2]:
        axis = 1 if shape[1] == crops else 0
        N, T = crops, shape[1 - axis]
    elif len(shape) == 3 and crops is not None:
        raise InputError(f"feature file {path} has shape {shape}; expected (snippets, {width}), (snippets, {crops}, "
                         f"{width}) or ({crops}, snippets, {width}) for {crops} crops")
    elif len(shape) == 3:
        raise InputError(f"feature file {path} has shape {shape}: give --crops to say how many crops it holds")
    else:
        raise InputError(f"feature file {path} has shape {shape}; expected (snippets, {width})")
    if len_feature is not None and shape[-1] != len_feature:
        raise InputError(f"feature file {path} has feature width {shape[-1]}; expected {int(len_feature)} "
                         f"({getattr(len_feature, 'source', '--len_feature')})")
    if T == 0:
        raise InputError(f"feature file {path} has no snippets")
    return N, T, shape[-1], axis


def feature_shape(path, len_feature, crops=None):
    """(T, D) of a feature file from its header alone, checked (see file_layout)."""
    _, T, D, _ = file_layout(path, len_feature, crops)
    return T, D


def video_shape(video, len_feature):
    """(N crops, T) of a video from its files' headers. All its crops must agree on T, and a video
    that must have video.crops crops must have that many (a lone (T, D) file is one crop)."""
    one_file = len(video.paths) == 1
    layouts = [file_layout(p, len_feature, video.crops if one_file else None) for p in video.paths]
    lengths = {T for _, T, _, _ in layouts}
    if len(lengths) != 1:
        raise InputError(f"video {video.name}: its crop files have different numbers of snippets {sorted(lengths)}")
    n = sum(N for N, _, _, _ in layouts)
    if video.crops is not None and n != video.crops and video.crops_from:
        raise other_crop_count(video.name, n, video.crops, video.crops_from, f"video {video.name}, {video.paths[0]}")
    if video.crops is not None and n != video.crops:
        raise InputError(f"video {video.name} has {n} crop ({video.paths[0]} holds (snippets, D)), but videos have "
                         f"{video.crops} crops: name crop files <video>__<k>.npy, or give --crops {n}")
    return n, lengths.pop()


def video_length(video, len_feature):
    """T of a video from its files' headers; all its crops must agree."""
    return video_shape(video, len_feature)[1]


def read_features(path):
    """The whole array of a feature file as float32, checked for NaN/Inf."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"feature file {path} could not be read ({e})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"feature file {path} contains NaN or Inf values")
    return arr


def load_features(path, len_feature):
    """The whole (T, D) float32 array of a one-crop feature file, checked for shape and NaN/Inf."""
    feature_shape(path, len_feature)
    return read_features(path)


def load_video(video, len_feature):
    """(N, T, D) float32: all crops of a video, from its crop files or its one (T, N, D) / (N, T, D) file."""
    if len(video.paths) == 1:
        _, _, _, axis = file_layout(video.paths[0], len_feature, video.crops)
        if axis is not None:
            arr = read_features(video.paths[0])
            return np.ascontiguousarray(arr.transpose(1, 0, 2)) if axis == 1 else arr
    return np.stack([load_features(p, len_feature) for p in video.paths])


def map_features(path, len_feature):
    """A feature file memory-mapped as (T, D) float32, checked for NaN/Inf (one streaming read)."""
    feature_shape(path, len_feature)
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.float32:
        return load_features(path, len_feature)
    for start in range(0, len(arr), 4096):
        if not np.isfinite(arr[start:start + 4096]).all():
            raise InputError(f"feature file {path} contains NaN or Inf values")
    return arr


def scan_features(root_dir):
    """Every .npy file under root_dir (scan.scan_folder: recursively, through links; hidden entries,
    such as a training-item .cache/, skipped): paths relative to it with '/', sorted. A broken link,
    a loop or a folder that cannot be read is named on stderr (scan.name_left_out)."""
    if not os.path.isdir(root_dir):
        raise InputError(f"feature folder {root_dir} does not exist")
    try:
        scan = scan_folder(root_dir, {".npy"}, kind="feature file (.npy)")
    except OSError as e:
        raise InputError(f"feature folder {root_dir} cannot be read ({e.strerror})") from None
    name_left_out(scan.left_out)
    if not scan.files:
        raise InputError(f"feature folder {root_dir} holds no .npy feature files")
    return [path.relative_to(scan.root).as_posix() for path in scan.files]


def find_videos(paths, len_feature, crops=None, n_crops=None, crops_from=None):
    """Feature files and folders (searched recursively for .npy) -> [Video], labels unknown (normal None).

    Crops are grouped by group_videos, each video with its own crop count, or with n_crops (--crops,
    or the count the checkpoint `crops_from` was trained on) when given, checked as a test list's are.
    A one-file video is (T, D), or (T, N, D) / (N, T, D) with N = crops. Every file's header is
    checked here, before anything is scored.
    """
    files = []
    for path in paths:
        if os.path.isdir(path):       # hidden entries (a training-item .cache/) are not videos
            files += [os.path.join(path, rel) for rel in scan_features(path)]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"--features path {path} does not exist")
    videos = []
    for name, group in group_videos([(f, f) for f in files], "--features", n_crops, crops_from=crops_from):
        own = [path for _, path, _ in group]
        whole = len(own) == 1 and len(header_shape(own[0])) == 3        # one (T, N, D) / (N, T, D) file
        video = Video(name, own, None, crops if whole else n_crops, crops_from if n_crops else None)
        video_shape(video, len_feature)
        videos.append(video)
    return videos


def record_path(folder, name):
    """Where extract.py keeps the extraction record of video `name`: <folder>/<name>.json."""
    return os.path.join(folder, f"{name}.json")


def read_record(video):
    """The extraction record beside a video's feature files (written by extract.py), or None.

    A record counts only if it names exactly these feature files; its `times` (T + 1 snippet
    boundaries in seconds, from the frames' own timestamps) must then match the features' T.
    """
    path = record_path(os.path.dirname(video.paths[0]), video.name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"extraction record {path} is not readable JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    if sorted(map(escape_name, record.get("files", []))) != sorted(escape_name(os.path.basename(p)) for p in video.paths):
        return None
    return record


def degenerate(snippets):
    """Why (S, D) snippet features (of one or many videos, any crops) carry no information, or None.

    Negligible: the median snippet L2 norm is under NEGLIGIBLE_NORM. Nearly constant: the spread
    sqrt(sum_d var_d) across the snippets, over their RMS norm sqrt(mean ||x||^2), is under
    CONSTANT_SPREAD (needs 2 snippets or more). Both come from an untrained network (see above).
    """
    x = np.asarray(snippets, dtype=np.float64).reshape(-1, np.shape(snippets)[-1])    # (S, D)
    norm = float(np.median(np.linalg.norm(x, axis=1)))
    if norm < NEGLIGIBLE_NORM:
        return f"their median snippet norm is {norm:.2g} (real I3D features: about 10)"
    if len(x) > 1:
        spread = float(np.sqrt(x.var(axis=0).sum()) / np.sqrt((x ** 2).sum(axis=1).mean()))
        if spread < CONSTANT_SPREAD:
            return (f"they are nearly the same for every snippet (spread {spread:.2g} of their size across "
                    f"{len(x)} snippets; real I3D features: about 0.2 or more)")
    return None


def warn_degenerate(videos, len_feature, what):
    """Print a warning when the features of `videos` (a sample of DEGENERATE_SAMPLE, spread evenly) are
    degenerate; `what` names them ("the training features in data/x"). Returns the reason or None."""
    if not videos:
        return None
    picked = [videos[i] for i in sorted(set(np.linspace(0, len(videos) - 1, DEGENERATE_SAMPLE).astype(int)))]
    reason = degenerate(np.concatenate([load_video(v, len_feature).reshape(-1, len_feature) for v in picked]))
    if reason:
        print(f"warning: {what} look degenerate: {reason}. Features of an untrained network (e.g. a "
              f"default-initialised I3D instead of trained weights) carry no information: a detector trained or "
              f"scored on them gives the same meaningless curve for every video", file=sys.stderr)
    return reason
