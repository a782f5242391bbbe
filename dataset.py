"""Feature lists, videos, training items, ground truth, and the per-dataset conventions.

A list file names feature files relative to --root_dir, one per line (the release's
`list/XD_Train.list` format). Crops of one video are `<video>__<k>.npy`, the crop index after the
*last* `__`; a file without that suffix is a single-crop video. Whether a video is normal is decided
by the dataset's name rule, never by its position in the list.

Everything is read and checked once, up front, so bad input fails before training starts:
  TrainItems  every training item resampled to --num_segments segments, kept in memory, or in a
              memory-mapped cache file that later runs reuse (see item_cache)
  TestSet     every test video at full length with all its crops, and its frame-level ground truth
              (memory-mapped instead of read into memory when the files would not fit in RAM)
"""
import hashlib
import json
import mmap
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from utils import InputError, atomic_write, write_text

FRAMES_PER_SNIPPET = 16


@dataclass(frozen=True)
class DatasetInfo:
    """Per-dataset conventions and the option defaults that differ from options.py's."""
    crops: int                  # crops per video in the feature layout
    normal_marker: str          # a video is normal iff its name contains this
    defaults: dict = field(default_factory=dict)


DATASETS = {
    # XD-Violence, 5-crop I3D features; the authors' release settings (options.py's defaults)
    "xd": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/xd", train_list="list/XD_Train.list", test_list="list/XD_Test.list",
        gt="list/xd_gt.npy")),
    # synthetic features in the XD layout, generated on first use (see make_demo); settings
    # chosen so that a run fits in a few minutes on a 2-core CPU
    "demo": DatasetInfo(crops=5, normal_marker="_label_A", defaults=dict(
        root_dir="data/demo", train_list="{root_dir}/demo_train.list", test_list="{root_dir}/demo_test.list",
        gt="{root_dir}/demo_gt.npy", batch_size=16, num_segments=64, lr="[0.0005]*150", plot_freq=10)),
}


@dataclass
class Video:
    name: str
    paths: list                 # one feature file per crop, crop order
    normal: bool


def split_crop(path):
    """'dir/<video>__<k>.npy' -> ('<video>', k); a name without a crop suffix -> (name, None)."""
    stem = os.path.basename(path)
    stem = stem[:-4] if stem.endswith(".npy") else stem
    m = re.fullmatch(r"(.+)__(\d+)", stem)
    return (m.group(1), int(m.group(2))) if m else (stem, None)


def read_list(list_file, root_dir, info):
    """Parse a list file into videos (first-appearance order), with their crops checked."""
    if not os.path.isfile(list_file):
        raise InputError(f"list file {list_file} does not exist")
    groups = {}
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            video, k = split_crop(parts[0])
            groups.setdefault(video, []).append((k, os.path.join(root_dir, parts[0]), lineno))
    if not groups:
        raise InputError(f"list file {list_file} names no feature files")
    videos = []
    for name, crops in groups.items():
        ks = [k for k, _, _ in crops]
        expected = list(range(info.crops)) if ks[0] is not None else [None]
        if ks != expected:
            raise InputError(f"{list_file}: video {name} has crops {ks} (line {crops[0][2]}); expected "
                             f"{expected}, each once and in order")
        videos.append(Video(name, [p for _, p, _ in crops], info.normal_marker in name))
    return videos


def check_labels(videos, list_file):
    n_normal = sum(v.normal for v in videos)
    if n_normal == 0 or n_normal == len(videos):
        kind = "normal" if n_normal == 0 else "abnormal"
        raise InputError(f"list file {list_file} has no {kind} videos (checked by the dataset's name rule)")


def feature_shape(path, len_feature):
    """(T, D) of a feature file from its header alone, checked."""
    if not os.path.isfile(path):
        raise InputError(f"feature file {path} does not exist")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise InputError(f"feature file {path} is not a readable .npy file ({e})") from None
    if arr.ndim != 2:
        raise InputError(f"feature file {path} has shape {arr.shape}; expected (snippets, {len_feature})")
    if arr.shape[1] != len_feature:
        raise InputError(f"feature file {path} has feature width {arr.shape[1]}; expected {len_feature} "
                         f"(--len_feature)")
    if arr.shape[0] == 0:
        raise InputError(f"feature file {path} has no snippets")
    return arr.shape


def load_features(path, len_feature):
    """The whole (T, D) float32 array of a feature file, checked for shape and NaN/Inf."""
    feature_shape(path, len_feature)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"feature file {path} could not be read ({e})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"feature file {path} contains NaN or Inf values")
    return arr


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


def item_cache(paths, num_segments, len_feature, cache_dir, dtype):
    """(cache .npy path, fingerprint) of these training items.

    The file name hashes what the items are (paths, segments, width, storage dtype); the
    fingerprint holds each file's size and modification time, and a cache whose fingerprint
    differs is stale and gets rebuilt in place.
    """
    what = json.dumps([CACHE_VERSION, [os.path.abspath(p) for p in paths], num_segments, len_feature,
                       np.dtype(dtype).name])
    name = "items-" + hashlib.sha1(what.encode()).hexdigest()[:20] + ".npy"
    stats = [os.stat(p) for p in paths]
    return os.path.join(cache_dir, name), [[st.st_size, st.st_mtime_ns] for st in stats]


def read_item_cache(path, fingerprint, shape, dtype):
    """The memory-mapped cached items, or None when absent, stale or unreadable."""
    try:
        with open(path + ".json") as f:
            if json.load(f) != fingerprint:
                return None
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return populated(path, data) if data.shape == shape and data.dtype == dtype else None


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

    As in the release, each crop file is its own training item. With a cache_dir the items are
    written to <cache_dir>/items-<hash>.npy (plus a .json fingerprint of the files' sizes and
    modification times) and later runs memory-map that file instead of reading the features.
    """

    def __init__(self, videos, num_segments, len_feature, num_workers=0, cache_dir=None, fp16=False):
        paths = [p for v in videos for p in v.paths]
        self.paths = paths
        self.cache_path, self.from_cache = None, False
        dtype = np.dtype(np.float16 if fp16 else np.float32)
        if cache_dir is not None:
            self.cache_path, fingerprint = item_cache(paths, num_segments, len_feature, cache_dir, dtype)
            self.data = read_item_cache(self.cache_path, fingerprint, (len(paths), num_segments, len_feature), dtype)
            if self.data is not None:
                self.from_cache = True
                return
        data = np.stack(_parallel_map(
            lambda p: resample(load_features(p, len_feature), num_segments), paths, num_workers))
        self.data = data.astype(dtype, copy=False)
        if cache_dir is not None:
            # the .npy first, its fingerprint last: a crash in between leaves a cache that reads as stale
            write_item_cache(self.cache_path, fingerprint, self.data)

    def __len__(self):
        return len(self.data)

    def batch(self, index):
        """Items at a numpy index array as a float32 tensor (n, num_segments, D)."""
        return torch.from_numpy(np.asarray(self.data[index], dtype=np.float32))


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


class TestSet:
    """Test videos at full length with all their crops, and the frame-level ground truth.

    features[i]: (N, T_i, D) float32; gt: (sum_i 16 T_i,) in list order; abnormal_frames: the mask
    of frames that belong to abnormal videos (for AUC_sub / AP_sub). The ground truth's length is
    checked against the feature files' headers before any feature is read.
    """

    def __init__(self, videos, len_feature, gt_path=None, num_workers=0):
        self.videos = videos
        self.lengths = np.array([video_length(v, len_feature) for v in videos])
        self.n_frames = int(self.lengths.sum()) * FRAMES_PER_SNIPPET
        self.abnormal_frames = np.repeat([not v.normal for v in videos], self.lengths * FRAMES_PER_SNIPPET)
        self.gt = None if gt_path is None else load_gt(gt_path, self.n_frames)
        n_bytes = sum(len(v.paths) * int(T) * len_feature * 4 for v, T in zip(videos, self.lengths))
        self.mapped = n_bytes > available_memory() // 2
        if self.mapped:     # features[i] is then a list of N memory-mapped (T, D) crops
            load = lambda v: [map_features(p, len_feature) for p in v.paths]
        else:
            load = lambda v: np.stack([load_features(p, len_feature) for p in v.paths])
        self.features = _parallel_map(load, videos, num_workers)


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
    lengths = {feature_shape(p, len_feature)[0] for p in video.paths}
    if len(lengths) != 1:
        raise InputError(f"video {video.name}: its crop files have different numbers of snippets {sorted(lengths)}")
    return lengths.pop()


def load_test_set(args):
    """The test list's videos with their ground truth, checked, then loaded."""
    test = read_list(args.test_list, args.root_dir, DATASETS[args.dataset])
    return TestSet(test, args.len_feature, args.gt, args.num_workers)


def load_splits(args):
    """Read and check both lists and every file's header, then load: (normal, abnormal TrainItems, TestSet).

    The cheap checks (lists, labels, batch size, headers, ground-truth length) all run before any
    feature is read.
    """
    train = read_list(args.train_list, args.root_dir, DATASETS[args.dataset])
    check_labels(train, args.train_list)
    by_class = [[v for v in train if v.normal == normal] for normal in (True, False)]
    for kind, videos in zip(("normal", "abnormal"), by_class):
        n_items = sum(len(v.paths) for v in videos)
        if n_items < args.batch_size:
            raise InputError(f"list file {args.train_list} has {n_items} {kind} training items, fewer than "
                             f"--batch_size {args.batch_size}")
    for v in train:
        video_length(v, args.len_feature)
    test_set = load_test_set(args)
    cache_dir = None if args.cache_dir == "none" else args.cache_dir or os.path.join(args.root_dir, ".cache")
    normal, abnormal = (TrainItems(videos, args.num_segments, args.len_feature, args.num_workers, cache_dir,
                                   args.cache_fp16) for videos in by_class)
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


def make_demo(root_dir, seed=0, len_feature=1024, crops=5):
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
    rng = np.random.default_rng(seed)
    events = np.abs(rng.normal(0, 1, (3, len_feature))) * (rng.random((3, len_feature)) < 0.1)

    def video(T, spans):
        scene = np.abs(rng.normal(0.4, 0.2, len_feature))
        noise = rng.normal(0, 0.25, (T + 4, len_feature))
        x = scene + (noise[:-4] + noise[1:-3] + noise[2:-2] + noise[3:-1] + noise[4:]) / 5 ** 0.5 * 0.5
        for s, e in spans:
            a, b = s // FRAMES_PER_SNIPPET, -(-e // FRAMES_PER_SNIPPET)
            x[a:b] += 0.6 * events[rng.integers(len(events))]
        return [(x + rng.normal(0, 0.05, x.shape)).astype(np.float32) for _ in range(crops)]

    def spans_for(T):
        spans, n = [], rng.integers(1, 3)
        for _ in range(n):
            length = int(rng.integers(T // 8 + 1, T // 3 + 2)) * FRAMES_PER_SNIPPET
            start = int(rng.integers(0, T * FRAMES_PER_SNIPPET - length + 1))
            spans.append((start, start + length))
        return spans

    os.makedirs(root_dir, exist_ok=True)
    annotations, lengths, intervals = [], [], []
    for split, n_each, (lo, hi) in (("train", 32, (32, 128)), ("test", 16, (40, 160))):
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
