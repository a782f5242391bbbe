"""Feature lists, videos, training items, ground truth, and the per-dataset conventions.

A list file names feature files relative to --root_dir, one per line (the release's
`list/XD_Train.list` format), optionally with a label column (`path label` or CSV `path,label`;
1 abnormal, 0 normal). Crops of one video are `<video>__<k>.npy`, the crop index after the *last*
`__`; a file without that suffix is one video: (T, D) is a single crop, (T, N, D) or (N, T, D)
holds all N crops. Whether a video is normal comes from the label column, else from the dataset's
name rule, never from its position in the list.

Everything is read and checked once, up front, so bad input fails before training starts:
  TrainItems  every training item resampled to --num_segments segments, kept in memory, or in a
              memory-mapped cache file that later runs reuse (see item_cache)
  TestSet     every test video at full length with all its crops, and its frame-level ground truth
              (memory-mapped instead of read into memory when the files would not fit in RAM)

It also writes lists and ground truth from a user's folders (`python dataset.py make-list|make-gt`):
  make_lists      scan a feature folder, group and check crops, split train/test, label the videos
  annotated_gt    the frame-level ground truth from temporal annotations and each video's T
"""
import hashlib
import json
import mmap
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from utils import InputError, atomic_write, make_dir, run_cli, write_text

FRAMES_PER_SNIPPET = 16


@dataclass(frozen=True)
class DatasetInfo:
    """Per-dataset conventions and the option defaults that differ from options.py's."""
    crops: int | None           # crops per video in the feature layout (None: inferred from the crop files)
    normal_marker: str | None   # a video is normal iff its name contains this (None: lists carry labels)
    defaults: dict = field(default_factory=dict)


DATASETS = {
    # XD-Violence, 5-crop I3D features; the authors' release settings (options.py's defaults)
    "xd": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/xd", train_list="list/xd_train.list", test_list="list/xd_test.list",
        gt="list/xd_gt.npy")),
    # UCF-Crime, 10-crop I3D features `<Class>/<video>__<k>.npy` (or one (T, 10, D) / (10, T, D) file
    # per video). The authors released no UCF settings; ratio_sample 0.1 and ratio_batch 0.2 are
    # what community ports of BN-WVAD use (they report AUC 83 to 84.8 against the published 87.24)
    "ucf": DatasetInfo(crops=10, normal_marker="Normal", defaults=dict(
        root_dir="data/ucf", train_list="list/ucf_train.list", test_list="list/ucf_test.list",
        gt="list/ucf_gt.npy", ratio_sample=0.1, ratio_batch=0.2)),
    # any feature folder: labels from the lists' label column (or --normal_marker), crop count
    # from the crop files (or --crops), width from --len_feature; the XD settings otherwise
    "custom": DatasetInfo(crops=None, normal_marker=None, defaults=dict(
        root_dir="data/custom", train_list="list/custom_train.list", test_list="list/custom_test.list",
        gt="list/custom_gt.npy")),
    # synthetic features in the XD layout, generated on first use (see make_demo); settings
    # chosen so that a run fits in a few minutes on a 2-core CPU
    "demo": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/demo", train_list="{root_dir}/demo_train.list", test_list="{root_dir}/demo_test.list",
        gt="{root_dir}/demo_gt.npy", batch_size=16, num_segments=64, lr="[0.0005]*150", plot_freq=10)),
}


def dataset_info(args):
    """The dataset's conventions with --crops and --normal_marker applied."""
    info = DATASETS[args.dataset]
    return replace(info, crops=getattr(args, "crops", None) or info.crops,
                   normal_marker=getattr(args, "normal_marker", None) or info.normal_marker)


@dataclass
class Video:
    name: str
    paths: list                 # one feature file per crop, crop order (or the video's one file)
    normal: bool
    crops: int | None = None    # crops in a one-file (T, N, D) / (N, T, D) video: the dataset's count


def split_crop(path):
    """'dir/<video>__<k>.npy' -> ('<video>', k); a name without a crop suffix -> (name, None).

    A trailing `_i3d` (RTFM's per-video feature files, `<video>_i3d.npy`) is not part of the name,
    so the video matches its annotations.
    """
    stem = os.path.basename(path)
    stem = stem[:-4] if stem.endswith(".npy") else stem
    m = re.fullmatch(r"(.+)__(\d+)", stem)
    name, k = (m.group(1), int(m.group(2))) if m else (stem, None)
    return name.removesuffix("_i3d"), k


def text_lines(path, what):
    """The lines of a UTF-8 text file, or a one-line error naming it."""
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path} is not a readable text file ({e})") from None


def parse_list_line(line, list_file, lineno):
    """'path', 'path label' or 'path,label' -> (path, label: 1 abnormal, 0 normal, None if absent).

    None for a blank line or a CSV header (`path,label` on line 1).
    """
    parts = line.split()
    if len(parts) == 1 and "," in parts[0]:
        parts = parts[0].rsplit(",", 1)
        if lineno == 1 and parts[1].lower() == "label":
            return None
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2 and parts[1] in ("0", "1"):
        return parts[0], int(parts[1])
    raise InputError(f"{list_file} line {lineno}: expected `path`, `path label` or `path,label` with label "
                     f"1 (abnormal) or 0 (normal), got {line.strip()!r}")


def check_crops(name, ks, places, n_crops, source):
    """A video's crop indices must be 0..n_crops-1, each once and in order (or one file without a suffix).

    ks: crop index per file (None: no crop suffix); places: where each file was named (for the error).
    """
    if ks == [None]:
        return
    for j, k in enumerate(ks):
        earlier = [i for i in range(j) if ks[i] == k or k is None or ks[i] is None]
        if earlier:
            raise InputError(f"{source}: video {name} appears more than once ({places[earlier[0]]} and {places[j]})")
    missing = [k for k in range(n_crops) if k not in ks]
    if missing:
        raise InputError(f"{source}: video {name} is missing crop(s) {missing} of its {n_crops} ({places[0]})")
    if max(ks) >= n_crops:
        raise InputError(f"{source}: video {name} has crop {max(ks)}, but videos have {n_crops} crops (--crops)")
    if ks != sorted(ks):
        raise InputError(f"{source}: the crops of video {name} are out of order ({places[0]}); list them "
                         f"0..{n_crops - 1}")


def crop_count(info, groups):
    """The dataset's crops per video, or for a dataset without one the most any video has here."""
    if info.crops is not None:
        return info.crops
    return max((k + 1 for ks in groups for k in ks if k is not None), default=1)


def label_videos(videos, labels, info, source):
    """Video.normal from explicit labels (1 abnormal, 0 normal) where given, else from the name rule."""
    for v, label in zip(videos, labels):
        if label is None and info.normal_marker is None:
            raise InputError(f"{source} gives video {v.name} no label, and the dataset has no name rule: add a label "
                             f"column (`path label`, 1 abnormal, 0 normal) or give --normal_marker")
        v.normal = info.normal_marker in v.name if label is None else label == 0


def read_list(list_file, root_dir, info):
    """Parse a list file into videos (first-appearance order), with their crops and labels checked."""
    groups, has_label = {}, None
    for lineno, line in enumerate(text_lines(list_file, "list file"), 1):
        entry = parse_list_line(line, list_file, lineno)
        if entry is None:
            continue
        path, label = entry
        if has_label is None:
            has_label = label is not None
        elif has_label != (label is not None):
            raise InputError(f"{list_file} line {lineno}: some lines have a label column and some do not")
        video, k = split_crop(path)
        groups.setdefault(video, []).append((k, os.path.join(root_dir, path), lineno, label))
    if not groups:
        raise InputError(f"list file {list_file} names no feature files")
    n_crops = crop_count(info, [[c[0] for c in crops] for crops in groups.values()])
    videos, labels = [], []
    for name, crops in groups.items():
        check_crops(name, [c[0] for c in crops], [f"line {c[2]}" for c in crops], n_crops, list_file)
        if len({c[3] for c in crops}) > 1:
            raise InputError(f"{list_file}: the crops of video {name} have different labels (line {crops[0][2]})")
        videos.append(Video(name, [c[1] for c in crops], False, info.crops))
        labels.append(crops[0][3])
    label_videos(videos, labels, info, f"list file {list_file}")
    return videos


def check_labels(videos, list_file):
    n_normal = sum(v.normal for v in videos)
    if n_normal == 0 or n_normal == len(videos):
        kind = "normal" if n_normal == 0 else "abnormal"
        raise InputError(f"list file {list_file} has no {kind} videos (by its label column or the dataset's name rule)")


def file_layout(path, len_feature, crops=None):
    """(N, T, D, crop axis) of a feature file from its header alone, checked.

    (T, D): one crop, crop axis None. (T, N, D) or (N, T, D) with N = crops: crop axis 1 or 0; a file
    whose T equals N is read as (T, N, D). len_feature None accepts any width D.
    """
    if not os.path.isfile(path):
        raise InputError(f"feature file {path} does not exist")
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception as e:
        raise InputError(f"feature file {path} is not a readable .npy file ({e})") from None
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
        raise InputError(f"feature file {path} has feature width {shape[-1]}; expected {len_feature} "
                         f"(--len_feature)")
    if T == 0:
        raise InputError(f"feature file {path} has no snippets")
    return N, T, shape[-1], axis


def feature_shape(path, len_feature, crops=None):
    """(T, D) of a feature file from its header alone, checked (see file_layout)."""
    _, T, D, _ = file_layout(path, len_feature, crops)
    return T, D


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


def resample(features, num_segments):
    """(T, D) -> (num_segments, D) as the release does: boundaries floor(linspace(0, T, S + 1)),
    segment i the mean of rows [b_i, b_{i+1}), or row b_i when the two are equal.

    Boundaries are int64 (the release's uint16 overflows past 65,535 snippets).
    """
    T = features.shape[0]
    bounds = np.linspace(0, T, num_segments + 1).astype(np.int64)
    starts = bounds[:-1]
    ends = np.maximum(bounds[1:], starts + 1)          # an empty segment takes row b_i
    # one float64 sum per segment: ~10x faster than np.add.reduceat over a float64 copy of the
    # whole video (long videos), equal to float64 round-off
    sums = np.stack([features[a:e].sum(0, dtype=np.float64) for a, e in zip(starts, ends)])  # (S, D)
    return (sums / (ends - starts)[:, None]).astype(np.float32)


def _parallel_map(fn, items, num_workers):
    if num_workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(num_workers) as pool:       # np.load releases the GIL while reading
        return list(pool.map(fn, items))


CACHE_VERSION = 1       # bump when the cache file layout or the resampling changes


def item_cache(paths, num_segments, len_feature, cache_dir, dtype, all_crops):
    """(cache .npy path, fingerprint) of these training items.

    The file name hashes what the items are (paths, segments, width, storage dtype, crops per item); the
    fingerprint holds each file's size and modification time, and a cache whose fingerprint
    differs is stale and gets rebuilt in place.
    """
    what = json.dumps([CACHE_VERSION, [os.path.abspath(p) for p in paths], num_segments, len_feature,
                       np.dtype(dtype).name, all_crops])
    name = "items-" + hashlib.sha1(what.encode()).hexdigest()[:20] + ".npy"
    stats = [os.stat(p) for p in paths]
    return os.path.join(cache_dir, name), [[st.st_size, st.st_mtime_ns] for st in stats]


def read_item_cache(path, fingerprint, shape, dtype):
    """The memory-mapped cached items, or None when absent, stale or unreadable.

    shape: the items' trailing shape, (num_segments, D), or (N, num_segments, D) with all crops."""
    try:
        with open(path + ".json") as f:
            if json.load(f) != fingerprint:
                return None
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return populated(path, data) if data.shape[1:] == shape and data.dtype == dtype else None


def populated(path, data):
    """The memory-mapped .npy `data` mapped again with MAP_POPULATE where Linux offers it: the pages
    (usually in the OS page cache) are mapped in one call instead of one page fault per 4 KB."""
    flag = getattr(mmap, "MAP_POPULATE", 0)
    if not flag:
        return data
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | flag, prot=mmap.PROT_READ)
    return np.frombuffer(m, data.dtype, count=data.size, offset=data.offset).reshape(data.shape)


def write_item_cache(path, fingerprint, data):
    """The .npy first, its fingerprint last: a crash in between leaves a cache that reads as stale.
    A cache folder that cannot be written only costs the speed-up (a note, no error)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda tmp: np.save(tmp, data))
        write_text(path + ".json", json.dumps(fingerprint))
    except OSError as e:
        print(f"note: training-item cache {path} not written ({e.strerror or e})")


class TrainItems:
    """The training items of one class, resampled once: `data` (n_items, num_segments, D) float32,
    or float16 when cached with fp16 storage (`batch` always gives float32).

    As in the release, each crop is its own training item. With all_crops each video is one item
    holding all its N crops, `data` (n_videos, N, num_segments, D); the model averages over crops.
    With a cache_dir the items are
    written to <cache_dir>/items-<hash>.npy (plus a .json fingerprint of the files' sizes and
    modification times) and later runs memory-map that file instead of reading the features.
    """

    def __init__(self, videos, num_segments, len_feature, num_workers=0, all_crops=False, cache_dir=None,
                 fp16=False):
        self.paths = [p for v in videos for p in v.paths]
        self.cache_path, self.from_cache = None, False
        self._gathered = self._batch = None
        dtype = np.dtype(np.float16 if fp16 else np.float32)
        if cache_dir is not None:
            self.cache_path, fingerprint = item_cache(self.paths, num_segments, len_feature, cache_dir, dtype,
                                                      all_crops)
            item_shape = (num_segments, len_feature)
            if all_crops:
                item_shape = (video_shape(videos[0], len_feature)[0],) + item_shape
            self.data = read_item_cache(self.cache_path, fingerprint, item_shape, dtype)
            if self.data is not None:
                self.from_cache = True
                return
        per_video = _parallel_map(   # (N, num_segments, D) each
            lambda v: np.stack([resample(c, num_segments) for c in load_video(v, len_feature)]), videos, num_workers)
        data = np.stack(per_video) if all_crops else np.concatenate(per_video)
        self.data = data.astype(dtype, copy=False)
        if cache_dir is not None:
            # the .npy first, its fingerprint last: a crash in between leaves a cache that reads as stale
            write_item_cache(self.cache_path, fingerprint, self.data)

    def __len__(self):
        return len(self.data)

    def batch(self, index):
        """Items at a numpy index array as a float32 tensor (n, num_segments, D).

        The tensor is a buffer that the next call overwrites: gathering into memory that is already
        mapped is several times faster than into a fresh allocation, which page-faults on every page.
        """
        with warnings.catch_warnings():               # the memory-mapped cache is read-only; it is only read
            warnings.simplefilter("ignore", UserWarning)
            source = torch.from_numpy(self.data)      # a view, no copy
        shape = (len(index),) + tuple(source.shape[1:])
        if self._gathered is None or tuple(self._gathered.shape) != shape:
            self._gathered = torch.empty(shape, dtype=source.dtype)
            self._batch = self._gathered if source.dtype == torch.float32 else torch.empty(shape)
        torch.index_select(source, 0, torch.as_tensor(index), out=self._gathered)
        if self._batch is not self._gathered:         # float16 storage: converted in place
            self._batch.copy_(self._gathered)
        return self._batch


class BatchStream:
    """Shuffled batches of item indices, dropping the last partial batch, reshuffled when exhausted."""

    def __init__(self, n_items, batch_size, generator):
        self.n_items, self.batch_size, self.generator = n_items, batch_size, generator
        self.per_epoch = n_items // batch_size
        self.order, self.pos = None, self.per_epoch

    def next(self):
        if self.pos == self.per_epoch:
            self.order = torch.randperm(self.n_items, generator=self.generator).numpy()
            self.pos = 0
        batch = self.order[self.pos * self.batch_size:(self.pos + 1) * self.batch_size]
        self.pos += 1
        return batch

    def state_dict(self):
        """The permutation being drawn from, the position in it, and the generator's state."""
        order = None if self.order is None else torch.from_numpy(self.order.copy())
        return dict(order=order, pos=self.pos, generator=self.generator.get_state())

    def load_state_dict(self, state):
        self.order = None if state["order"] is None else state["order"].numpy()
        self.pos = state["pos"]
        self.generator.set_state(state["generator"])


class TestSet:
    """Test videos at full length with all their crops, and the frame-level ground truth.

    features[i]: (N, T_i, D) float32; gt: (sum_i 16 T_i,) in list order; abnormal_frames: the mask
    of frames that belong to abnormal videos (for AUC_sub / AP_sub). The ground truth's length is
    checked against the feature files' headers before any feature is read.
    """
    __test__ = False    # not a pytest test class

    def __init__(self, videos, len_feature, gt_path=None, num_workers=0, annotations=None):
        self.videos = videos
        self.lengths = np.array([video_length(v, len_feature) for v in videos])
        self.n_frames = int(self.lengths.sum()) * FRAMES_PER_SNIPPET
        self.abnormal_frames = np.repeat([not v.normal for v in videos], self.lengths * FRAMES_PER_SNIPPET)
        if annotations is not None:       # built from the annotations and the headers' T
            gt, notes = annotated_gt(videos, self.lengths, read_annotations(annotations), annotations)
            report(notes)
            if gt.min() == gt.max():
                raise InputError(f"annotations {annotations} mark {'every' if gt.min() else 'no'} frame of the test "
                                 f"videos as abnormal; AUC and AP need both classes")
            self.gt = gt
        else:
            self.gt = None if gt_path is None else load_gt(gt_path, self.n_frames)
        n_bytes = sum(video_shape(v, len_feature)[0] * int(T) * len_feature * 4 for v, T in zip(videos, self.lengths))
        self.mapped = n_bytes > available_memory() // 2

        def load(v):    # mapped: a crop-file video is a list of N memory-mapped (T, D) crops
            return [map_features(p, len_feature) for p in v.paths] if self.mapped and len(v.paths) > 1 \
                else load_video(v, len_feature)
        self.features = _parallel_map(load, videos, num_workers)


def video_shape(video, len_feature):
    """(N crops, T) of a video from its files' headers; all its crops must agree on T."""
    crops = video.crops if len(video.paths) == 1 else None
    layouts = [file_layout(p, len_feature, crops) for p in video.paths]
    lengths = {T for _, T, _, _ in layouts}
    if len(lengths) != 1:
        raise InputError(f"video {video.name}: its crop files have different numbers of snippets {sorted(lengths)}")
    return sum(N for N, _, _, _ in layouts), lengths.pop()


def available_memory():
    """Bytes of RAM available now (Linux MemAvailable; elsewhere free pages, or 0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


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


def video_length(video, len_feature):
    """T of a video from its files' headers; all its crops must agree."""
    return video_shape(video, len_feature)[1]


def check_disjoint(train, test, train_list, test_list):
    train_names = {v.name for v in train}
    both = [v.name for v in test if v.name in train_names]
    if both:
        raise InputError(f"video {both[0]} is in both the training list {train_list} and the test list {test_list}"
                         + (f" ({len(both)} such videos)" if len(both) > 1 else ""))


def load_test_set(args, train=()):
    """The test list's videos with their ground truth (--gt, or built from --annotations), checked, then loaded.

    train: the training videos, none of which may be in the test list.
    """
    test = read_list(args.test_list, args.root_dir, dataset_info(args))
    check_disjoint(train, test, getattr(args, "train_list", None), args.test_list)
    return TestSet(test, args.len_feature, args.gt, args.num_workers, getattr(args, "annotations", None))


def load_splits(args):
    """Read and check both lists and every file's header, then load: (normal, abnormal TrainItems, TestSet).

    The cheap checks (lists, labels, headers, batch size, ground-truth length) all run before any
    feature is read. --train_crops all makes each video one item with all its crops.
    """
    train = read_list(args.train_list, args.root_dir, dataset_info(args))
    check_labels(train, args.train_list)
    all_crops = getattr(args, "train_crops", "each") == "all"
    n_crops = {v.name: video_shape(v, args.len_feature)[0] for v in train}
    if all_crops and len(set(n_crops.values())) > 1:
        a, na = next(iter(n_crops.items()))
        b, nb = next((v, n) for v, n in n_crops.items() if n != na)
        raise InputError(f"--train_crops all needs the same number of crops in every training video; video {a} "
                         f"has {na} and video {b} has {nb}")
    by_class = [[v for v in train if v.normal == normal] for normal in (True, False)]
    for kind, videos in zip(("normal", "abnormal"), by_class):
        n_items = len(videos) if all_crops else sum(n_crops[v.name] for v in videos)
        if n_items < args.batch_size:
            raise InputError(f"list file {args.train_list} has {n_items} {kind} training items, fewer than "
                             f"--batch_size {args.batch_size}")
    test_set = load_test_set(args, train)
    cache_dir = None if args.cache_dir == "none" else args.cache_dir or os.path.join(args.root_dir, ".cache")
    normal, abnormal = (TrainItems(videos, args.num_segments, args.len_feature, args.num_workers, all_crops,
                                   cache_dir, args.cache_fp16) for videos in by_class)
    return normal, abnormal, test_set


def load_gt(path, n_frames):
    if not os.path.isfile(path):
        raise InputError(f"ground-truth file {path} does not exist")
    try:
        gt = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"ground-truth file {path} is not a readable .npy file ({e})") from None
    gt = np.asarray(gt).reshape(-1)
    if len(gt) != n_frames:
        raise InputError(f"ground-truth file {path} has {len(gt)} frames, but the test features give "
                         f"{n_frames} (16 per snippet, videos in list order)")
    if not np.isin(gt, (0, 1)).all():
        raise InputError(f"ground-truth file {path} holds values other than 0 and 1")
    if gt.min() == gt.max():
        raise InputError(f"ground-truth file {path} has only one class; AUC and AP need both")
    return gt.astype(np.uint8)


def frame_gt(lengths, intervals):
    """Frame-level ground truth: per video T*16 frames, 1 where s <= f < e for an interval (s, e)."""
    parts = []
    for T, spans in zip(lengths, intervals):
        g = np.zeros(T * FRAMES_PER_SNIPPET, dtype=np.uint8)
        for s, e in spans:
            g[max(s, 0):max(min(e, len(g)), 0)] = 1
        parts.append(g)
    return np.concatenate(parts)


VIDEO_SUFFIX = re.compile(r"\.(mp4|avi|mkv|mov|webm|mpe?g|npy)$", re.IGNORECASE)


def video_name(token):
    """'Arson/Arson011_x264.mp4' -> 'Arson011_x264': the base name without a video or .npy extension."""
    return VIDEO_SUFFIX.sub("", os.path.basename(token))


def read_annotations(path):
    """Temporal annotations -> {video: [(start, end), ...]} in frames, end exclusive.

    One line per video (or per interval; a video's lines add up): the video (a name or a path; a
    video extension is dropped), then any words, then `start end` pairs; `-1 -1` is no interval and
    commas count as spaces. This reads
      XD-Violence   <video>[.mp4] s1 e1 [s2 e2 ...]
      UCF-Crime     <video>.mp4  <class>  s1  e1  s2  e2
      UCF (UR-DMU)  <Class>/<video>.mp4 <frames> <class> s1 e1 s2 e2
      custom        <video> s1 e1 [s2 e2 ...]   or   <video>,<start>,<end>
    The pairs are the numbers after the last word, so UR-DMU's frame count is skipped.
    """
    annotations = {}
    for lineno, line in enumerate(text_lines(path, "annotation file"), 1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        rest = tokens[1:]
        words = [i for i, t in enumerate(rest) if not re.fullmatch(r"-?\d+", t)]
        if lineno == 1 and rest and len(words) == len(rest):
            continue  # a header such as `video,start,end`
        numbers = [int(t) for t in rest[words[-1] + 1 if words else 0:]]
        if len(numbers) % 2:
            raise InputError(f"{path} line {lineno}: expected start end pairs after the video name, got "
                             f"{' '.join(rest)!r}")
        spans = annotations.setdefault(video_name(tokens[0]), [])
        for s, e in zip(numbers[::2], numbers[1::2]):
            if (s, e) == (-1, -1):
                continue
            if s < 0 or e <= s:
                raise InputError(f"{path} line {lineno}: interval {s} {e} of video {video_name(tokens[0])} is not "
                                 f"a start < end pair of frames")
            spans.append((s, e))
    if not annotations:
        raise InputError(f"annotation file {path} names no videos")
    return annotations


def examples(items, n=3):
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def annotated_gt(videos, lengths, annotations, source):
    """Frame-level ground truth of `videos` (list order) with `lengths` T from an annotations dict.

    -> (gt (sum 16 T,) uint8, notes). Intervals are cut at T*16 (SPEC). An annotation for a video not
    in the list is an error; abnormal videos without an interval, normal videos with one, and
    intervals that run past the video's T*16 frames are returned as notes to report.
    """
    names = {v.name for v in videos}
    unknown = [n for n in annotations if n not in names]
    if unknown:
        raise InputError(f"annotation file {source} names video {unknown[0]}, which is not in the test list"
                         + (f" ({len(unknown)} such videos)" if len(unknown) > 1 else ""))
    notes = []
    missing = [v.name for v in videos if not v.normal and not annotations.get(v.name)]
    if missing:
        notes.append(f"{len(missing)} abnormal test videos have no annotated interval in {source}, so all their "
                     f"frames count as normal: {examples(missing)}")
    labelled = [v.name for v in videos if v.normal and annotations.get(v.name)]
    if labelled:
        notes.append(f"{len(labelled)} normal test videos have annotated intervals in {source}, which count as "
                     f"abnormal frames: {examples(labelled)}")
    cut, outside = [], []
    for v, T in zip(videos, lengths):
        n_frames = int(T) * FRAMES_PER_SNIPPET
        for s, e in annotations.get(v.name, []):
            if s >= n_frames:
                outside.append(f"{v.name} [{s}, {e}) of {n_frames} frames")
            elif e > n_frames:
                cut.append(f"{v.name} [{s}, {e}) of {n_frames} frames")
    if cut:
        notes.append(f"{len(cut)} annotated intervals end after their video's last frame (T*16) and are cut there: "
                     f"{examples(cut)}")
    if outside:
        notes.append(f"{len(outside)} annotated intervals start after their video's last frame (T*16) and are "
                     f"ignored: {examples(outside)}")
    return frame_gt(lengths, [annotations.get(v.name, []) for v in videos]), notes


def report(notes):
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)


def make_demo(root_dir, seed=0, len_feature=1024, crops=5, n_train=32, n_test=16):
    """Write the synthetic demo dataset under root_dir unless it is already complete.

    XD layout: `train/` and `test/` hold `<video>__<k>.npy` (T, len_feature) float32, names carry
    `_label_A` (normal) or `_label_B1-0-0` (abnormal); lists `demo_train.list` / `demo_test.list`
    (abnormal videos first, as in XD), annotations `demo_annotations.txt` (XD format, frames) and
    the frame-level ground truth `demo_gt.npy`. Features: a per-video scene vector plus smooth
    noise; abnormal stretches add one of a few event patterns, which the detector has to find
    with video-level labels only.
    """
    done = os.path.join(root_dir, ".complete")
    if os.path.exists(done):
        return
    make_dir(root_dir, "demo data")
    rng = np.random.default_rng(seed)
    events = np.abs(rng.normal(0, 1, (3, len_feature))) * (rng.random((3, len_feature)) < 0.1)

    def video(T, spans):
        scene = np.abs(rng.normal(0.4, 0.2, len_feature))
        noise = rng.normal(0, 0.25, (T + 4, len_feature))
        x = scene + (noise[:-4] + noise[1:-3] + noise[2:-2] + noise[3:-1] + noise[4:]) / 5 ** 0.5 * 0.5
        for s, e in spans:
            a, b = s // FRAMES_PER_SNIPPET, -(-e // FRAMES_PER_SNIPPET)
            x[a:b] += 0.35 * events[rng.integers(len(events))]
        return [(x + rng.normal(0, 0.05, x.shape)).astype(np.float32) for _ in range(crops)]

    def spans_for(T):
        spans, n = [], rng.integers(1, 3)
        for _ in range(n):
            length = int(rng.integers(T // 8 + 1, T // 3 + 2)) * FRAMES_PER_SNIPPET
            start = int(rng.integers(0, T * FRAMES_PER_SNIPPET - length + 1))
            spans.append((start, start + length))
        return spans

    annotations, lengths, intervals = [], [], []
    for split, n_each, (lo, hi) in (("train", n_train, (32, 128)), ("test", n_test, (40, 160))):
        os.makedirs(os.path.join(root_dir, split), exist_ok=True)
        lines = []
        for i in range(2 * n_each):
            abnormal = i < n_each
            name = f"demo_{split}_{i:03d}_label_{'B1-0-0' if abnormal else 'A'}"
            T = int(rng.integers(lo, hi + 1))
            spans = spans_for(T) if abnormal else []
            for k, crop in enumerate(video(T, spans)):
                rel = f"{split}/{name}__{k}.npy"
                np.save(os.path.join(root_dir, rel), crop)
                lines.append(rel)
            if split == "test":
                lengths.append(T)
                intervals.append(spans)
                if spans:
                    annotations.append(" ".join([name] + [f"{s} {e}" for s, e in spans]))
        with open(os.path.join(root_dir, f"demo_{split}.list"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(root_dir, "demo_annotations.txt"), "w") as f:
        f.write("\n".join(annotations) + "\n")
    atomic_write(os.path.join(root_dir, "demo_gt.npy"), lambda tmp: np.save(tmp, frame_gt(lengths, intervals)))
    open(done, "w").close()


SPLIT_FOLDERS = {"train": "train", "training": "train", "test": "test", "testing": "test"}


def scan_features(root_dir):
    """Every .npy file under root_dir: paths relative to it with '/', sorted (hidden entries skipped)."""
    if not os.path.isdir(root_dir):
        raise InputError(f"feature folder {root_dir} does not exist")
    found = []
    for folder, dirs, files in os.walk(root_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), root_dir).replace(os.sep, "/")
                  for f in files if f.endswith(".npy") and not f.startswith(".")]
    if not found:
        raise InputError(f"feature folder {root_dir} holds no .npy feature files")
    return sorted(found)


def read_video_file(path, with_labels):
    """A file that names videos by its lines' first field (a name, a path, a list entry or an
    annotation line) -> {video: label}; with_labels: each line also has a label (`video label`)."""
    videos = {}
    for lineno, line in enumerate(text_lines(path, "labels file" if with_labels else "test-videos file"), 1):
        if with_labels:
            entry = parse_list_line(line, path, lineno)
            if entry is not None and entry[1] is None:
                raise InputError(f"{path} line {lineno}: expected `video label` (1 abnormal, 0 normal)")
        else:
            entry = (line.replace(",", " ").split() or [None])[0], None
        if entry is not None and entry[0] is not None:
            videos[split_crop(video_name(entry[0]))[0]] = entry[1]
    if not videos:
        raise InputError(f"{path} names no videos")
    return videos


def split_of(name, rels, root_dir):
    """'train' or 'test' from the top folder of a video's files under root_dir."""
    kinds = {SPLIT_FOLDERS.get(rel.split("/")[0].lower()) if "/" in rel else None for rel in rels}
    if len(kinds) > 1 or None in kinds:
        raise InputError(f"video {name} ({rels[0]}) is not inside one train/ or test/ folder of {root_dir}: give "
                         f"--test_videos FILE to split the videos by name")
    return kinds.pop()


def make_lists(root_dir, dataset, info, list_dir="list", test_videos=None, labels=None, len_feature=None):
    """Scan root_dir's feature files and write <list_dir>/<dataset>_train.list and _test.list.

    Crops are grouped by video and checked (every crop present, no video twice, one feature width,
    one T per video). The split: the videos named in the test_videos file are the test set, the rest
    train; without it, the top folders train/ and test/. Labels: a labels file, else the name rule.
    Abnormal videos come first, then normal, each sorted by path. A label column is written when a
    labels file is given or the dataset has no name rule of its own. -> the two paths and a summary.
    """
    groups = {}
    for rel in scan_features(root_dir):
        name, k = split_crop(rel)
        groups.setdefault(name, []).append((k, rel))
    n_crops = crop_count(info, [[k for k, _ in g] for g in groups.values()])
    videos, rels = [], {}
    for name, g in groups.items():
        g.sort(key=lambda c: -1 if c[0] is None else c[0])
        rels[name] = [rel for _, rel in g]
        check_crops(name, [k for k, _ in g], rels[name], n_crops, f"feature folder {root_dir}")
        videos.append(Video(name, [os.path.join(root_dir, rel) for rel in rels[name]], False, info.crops))

    widths = {}
    for v in videos:
        video_shape(v, len_feature)                       # readable, a known layout, one T per video
        for p in v.paths:
            widths.setdefault(feature_shape(p, len_feature, v.crops if len(v.paths) == 1 else None)[1], p)
        if len(widths) > 1:
            (d1, p1), (d2, p2) = widths.items()
            raise InputError(f"feature files {p1} and {p2} have different feature widths ({d1} and {d2})")

    given = read_video_file(labels, with_labels=True) if labels else {}
    unknown = [n for n in given if n not in groups]
    if unknown:
        raise InputError(f"labels file {labels} names video {unknown[0]}, which has no feature files under {root_dir}")
    label_videos(videos, [given.get(v.name) for v in videos], info,
                 f"labels file {labels}" if labels else f"feature folder {root_dir}")

    if test_videos:
        wanted = read_video_file(test_videos, with_labels=False)
        absent = [n for n in wanted if n not in groups]
        if absent:
            raise InputError(f"test video {absent[0]} named in {test_videos} has no feature files under {root_dir}"
                             + (f" ({len(absent)} such videos)" if len(absent) > 1 else ""))
        split = {v.name: "test" if v.name in wanted else "train" for v in videos}
    else:
        split = {v.name: split_of(v.name, rels[v.name], root_dir) for v in videos}

    with_labels = labels is not None or DATASETS[dataset].normal_marker is None
    paths = {part: os.path.join(list_dir, f"{dataset}_{part}.list") for part in ("train", "test")}
    chosen = {part: sorted((v for v in videos if split[v.name] == part), key=lambda v: (v.normal, rels[v.name][0]))
              for part in paths}
    check_labels(chosen["train"], paths["train"])
    if not chosen["test"]:
        raise InputError(f"no test videos under {root_dir}")
    make_dir(list_dir, "list")
    summary = []
    for part, path in paths.items():
        lines = [rel + (f" {0 if v.normal else 1}" if with_labels else "")
                 for v in chosen[part] for rel in rels[v.name]]
        write_text(path, "\n".join(lines) + "\n")
        n_abnormal = sum(not v.normal for v in chosen[part])
        summary.append(f"wrote {path}: {n_abnormal} abnormal + {len(chosen[part]) - n_abnormal} normal videos, "
                       f"{len(lines)} files")
    return paths["train"], paths["test"], summary


def ensure_lists(args):
    """Make the dataset's default lists from --root_dir (as make-list does) when they are missing and
    neither --train_list nor --test_list was given."""
    defaults = DATASETS[args.dataset].defaults
    lists = [args.train_list, args.test_list]
    if all(os.path.isfile(p) for p in lists) or \
            lists != [defaults[k].format(root_dir=args.root_dir) for k in ("train_list", "test_list")]:
        return
    print(f"{' and '.join(p for p in lists if not os.path.isfile(p))} missing: making the lists from {args.root_dir}")
    _, _, summary = make_lists(args.root_dir, args.dataset, dataset_info(args), os.path.dirname(args.train_list),
                               args.test_videos, args.labels, args.len_feature)
    print("\n".join(summary))


def write_gt(args):
    """make-gt: the test list's frame-level ground truth from annotations and each video's T (headers only)."""
    videos = read_list(args.test_list, args.root_dir, dataset_info(args))
    lengths = [video_length(v, args.len_feature) for v in videos]
    gt, notes = annotated_gt(videos, lengths, read_annotations(args.annotations), args.annotations)
    report(notes)
    make_dir(os.path.dirname(args.out) or ".", "output")

    def save(tmp):
        with open(tmp, "wb") as f:
            np.save(f, gt)
    atomic_write(args.out, save)
    print(f"wrote {args.out}: {len(videos)} test videos, {len(gt)} frames, {int(gt.sum())} abnormal")


def cli(argv=None):
    """python dataset.py make-list ... | make-gt ... (flags in options.parse_tool_args)."""
    from options import parse_tool_args   # options imports DATASETS from here
    args = parse_tool_args(argv)
    if args.command == "make-list":
        _, _, summary = make_lists(args.root_dir, args.dataset, dataset_info(args), args.list_dir, args.test_videos,
                                   args.labels, args.len_feature)
        print("\n".join(summary))
    else:
        write_gt(args)


if __name__ == "__main__":
    run_cli(cli)
