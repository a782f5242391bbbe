"""Datasets: the per-dataset conventions, the training items and their cache, the test set, the demo.

  DATASETS     (from options.py) the per-dataset conventions and defaults, applied to the flags by
               options.dataset_info
  TrainItems   every training item resampled to --num_segments segments, kept in memory, or in a
               memory-mapped cache file that later runs reuse (see item_cache)
  TestSet      every test video at full length with all its crops, and its frame-level ground truth
               (memory-mapped instead of read into memory when the files would not fit in RAM)
  Labelled     a list with frame-level ground truth (test, or held-out selection) and its source
  load_splits  the lists read and every file's header checked, then the items, the test set and the
               selection set (Splits, with the batch size as used)
  ensure_lists the dataset's default lists made (or remade, when made from another folder)
  make_demo    the synthetic demo dataset

Everything is read and checked once, up front, so bad input fails before training starts. How
files become videos lives in core/features.py; lists, annotations and ground truth in core/lists.py.
`python dataset.py make-list|make-gt` writes lists and ground truth from a user's folders.
"""
import hashlib
import json
import mmap
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from core.features import FRAMES_PER_SNIPPET, load_video, map_features, video_length, video_shape
from core.lists import (annotated_gt, check_labels, frame_gt, lists_provenance, load_gt, make_lists, provenance_path,
                   read_annotations, read_list, report, write_gt, write_gt_sidecar)
from options import DATASETS, DatasetInfo, dataset_info, parse_tool_args  # noqa: F401 (DatasetInfo: this module's API)
from utils import InputError, make_dir, run_cli, save_array, write_text


def resample_segments(features, num_segments):
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
        save_array(path, data)
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
        self.videos = videos
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
            lambda v: np.stack([resample_segments(c, num_segments) for c in load_video(v, len_feature)]), videos,
            num_workers)
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

    def __init__(self, videos, len_feature, gt_path=None, num_workers=0, annotations=None, annotation_unit="frames",
                 fps=None, both_classes=True):
        self.videos = videos
        self.lengths = np.array([video_length(v, len_feature) for v in videos])
        self.n_frames = int(self.lengths.sum()) * FRAMES_PER_SNIPPET
        self.abnormal_frames = np.repeat([not v.normal for v in videos], self.lengths * FRAMES_PER_SNIPPET)
        self.gt, self.one_class = None, None
        if annotations is not None:       # built from the annotations and the headers' T
            gt, notes = annotated_gt(videos, self.lengths, read_annotations(annotations, annotation_unit, fps),
                                     annotations)
            report(notes)
            self.gt, source = gt, f"annotations {annotations}"
        elif gt_path is not None:
            self.gt, source = load_gt(gt_path, videos, self.lengths), f"ground-truth file {gt_path}"
        if self.gt is not None and self.gt.min() == self.gt.max():
            # AUC and AP are undefined; training cannot choose a checkpoint, scoring can still report
            self.one_class = (f"{source} marks {'every' if self.gt.min() else 'no'} frame of the test videos as "
                              f"abnormal; AUC and AP need both classes")
            if both_classes:
                raise InputError(self.one_class)
        n_bytes = sum(video_shape(v, len_feature)[0] * int(T) * len_feature * 4 for v, T in zip(videos, self.lengths))
        self.mapped = n_bytes > available_memory() // 2

        def load(v):    # mapped: a crop-file video is a list of N memory-mapped (T, D) crops
            return [map_features(p, len_feature) for p in v.paths] if self.mapped and len(v.paths) > 1 \
                else load_video(v, len_feature)
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


def check_disjoint(first, second, first_list, second_list):
    """One-line error when a video is in both lists (training and test, or a selection list and either);
    first_list, second_list: the lists as the message names them ("the training list list/x.list")."""
    names = {v.name for v in first}
    both = [v.name for v in second if v.name in names]
    if both:
        raise InputError(f"video {both[0]} is in both {first_list} and {second_list}"
                         + (f" ({len(both)} such videos)" if len(both) > 1 else ""))


@dataclass(frozen=True)
class Labelled:
    """A list of videos with frame-level ground truth (the test list, or a held-out selection list) and
    where that ground truth comes from: a .npy (`gt`), or temporal `annotations` in `annotation_unit`
    (seconds converted with `fps`)."""
    list: str
    gt: str | None = None
    annotations: str | None = None
    annotation_unit: str = "frames"
    fps: float | None = None


def load_test_set(labelled, root_dir, info, len_feature, num_workers=0, disjoint_from=(), both_classes=True,
                  what="the test list"):
    """The videos of `labelled` (a Labelled) with their ground truth, checked, then loaded -> TestSet.

    disjoint_from: (videos, "the training list <path>") pairs, none of whose videos may be in this
    list (`what`, as error messages name it). both_classes: a ground truth of one class is an error (training); else
    TestSet.one_class says why there are no metrics.
    """
    videos = read_list(labelled.list, root_dir, info)
    for others, others_list in disjoint_from:
        check_disjoint(others, videos, others_list, f"{what} {labelled.list}")
    return TestSet(videos, len_feature, labelled.gt, num_workers, labelled.annotations, labelled.annotation_unit,
                   labelled.fps, both_classes)


@dataclass
class Splits:
    """What training reads: the training items of each class, the test set, the held-out selection set
    (None without one), and the batch size as used."""
    normal: TrainItems
    abnormal: TrainItems
    test: TestSet
    val: TestSet | None
    batch_size: int


def load_splits(train_list, root_dir, info, len_feature, test, val=None, batch_size=64, batch_size_given=True,
                train_crops="each", num_segments=200, cache_dir=None, cache_fp16=False, num_workers=0):
    """Read and check the lists and every file's header, then load the data -> Splits.

    test, val: Labelled (val None: no selection set). The cheap checks (lists, labels, headers, batch
    size, ground-truth length, no video in two lists) all run before any feature is read. A
    batch_size larger than the smaller class's item count is an error when given (batch_size_given),
    else lowered to that count with a note: Splits.batch_size is the one to use. train_crops "all"
    makes each video one item with all its crops. cache_dir None: no item cache.
    """
    train = read_list(train_list, root_dir, info)
    check_labels(train, train_list)
    all_crops = train_crops == "all"
    n_crops = {v.name: video_shape(v, len_feature)[0] for v in train}
    if all_crops and len(set(n_crops.values())) > 1:
        a, na = next(iter(n_crops.items()))
        b, nb = next((v, n) for v, n in n_crops.items() if n != na)
        raise InputError(f"--train_crops all needs the same number of crops in every training video; video {a} "
                         f"has {na} and video {b} has {nb}")
    by_class = [[v for v in train if v.normal == normal] for normal in (True, False)]
    counts = {kind: len(videos) if all_crops else sum(n_crops[v.name] for v in videos)
              for kind, videos in zip(("normal", "abnormal"), by_class)}
    kind, fewest = min(counts.items(), key=lambda c: c[1])
    if fewest < batch_size:
        if batch_size_given:
            raise InputError(f"list file {train_list} has {fewest} {kind} training items, fewer than "
                             f"--batch_size {batch_size}")
        print(f"note: list file {train_list} has {fewest} {kind} training items, fewer than the default "
              f"--batch_size {batch_size}: using --batch_size {fewest}")
        batch_size = fewest
    trained_on = (train, f"the training list {train_list}")
    test_set = load_test_set(test, root_dir, info, len_feature, num_workers, [trained_on])
    val_set = None
    if val is not None:
        val_set = load_test_set(val, root_dir, info, len_feature, num_workers,
                                [trained_on, (test_set.videos, f"the test list {test.list}")],
                                what="the selection list")
    normal, abnormal = (TrainItems(videos, num_segments, len_feature, num_workers, all_crops, cache_dir, cache_fp16)
                        for videos in by_class)
    return Splits(normal, abnormal, test_set, val_set, batch_size)


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

    annotations, lengths, intervals, test_names = [], [], [], []
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
                save_array(os.path.join(root_dir, rel), crop)
                lines.append(rel)
            if split == "test":
                lengths.append(T)
                test_names.append(name)
                intervals.append(spans)
                if spans:
                    annotations.append(" ".join([name] + [f"{s} {e}" for s, e in spans]))
        write_text(os.path.join(root_dir, f"demo_{split}.list"), "\n".join(lines) + "\n")
    write_text(os.path.join(root_dir, "demo_annotations.txt"), "\n".join(annotations) + "\n")
    gt_path = os.path.join(root_dir, "demo_gt.npy")
    save_array(gt_path, frame_gt(lengths, intervals))
    write_gt_sidecar(gt_path, test_names, lengths)
    write_text(done, "")


def ensure_lists(dataset, root_dir, train_list, test_list, info, test_videos=None, labels=None, len_feature=None,
                 given=()):
    """The dataset's default lists, made from root_dir (as make-list makes them) when they are
    missing, or when core/lists.py's provenance record says they were made from another folder, another
    set of feature files, or other split and label sources than this command gives. Lists other than
    the dataset's defaults are the user's and are never made; default lists without a record are used
    as they are. info: the DatasetInfo the lists are read with; test_videos, labels, len_feature: as
    make-list takes them; given: the flags the command line gave (what it leaves unsaid is no change)."""
    defaults = DATASETS[dataset].defaults
    lists = [train_list, test_list]
    if lists != [defaults[k].format(root_dir=root_dir) for k in ("train_list", "test_list")]:
        return
    list_dir = os.path.dirname(train_list)
    label_column = labels is not None or DATASETS[dataset].normal_marker is None
    record = provenance_path(list_dir, dataset)
    if all(os.path.isfile(p) for p in lists):
        if not os.path.isfile(record):
            return
        with open(record, encoding="utf-8") as f:
            made = json.load(f)
        now = lists_provenance(root_dir, info, test_videos, labels, len_feature, label_column)
        # what this command leaves unsaid (no --test_videos, say, or a --crops from a checkpoint) is no change
        given = {"root_dir", "files"} | set(given)
        changed = [k for k in ("root_dir", "files", "test_videos", "labels", "normal_marker", "crops")
                   if made.get(k) != now[k] and k in given]
        if not changed:
            return
        print(f"{' and '.join(lists)} were made from {made.get('root_dir')}; this run differs in "
              f"{', '.join(changed)}: making them again from {root_dir}")
    else:
        print(f"{' and '.join(p for p in lists if not os.path.isfile(p))} missing: making the lists from "
              f"{root_dir}")
    _, _, summary = make_lists(root_dir, dataset, info, list_dir, test_videos, labels, len_feature, label_column)
    print("\n".join(summary))


def cli(args):
    """python dataset.py make-list ... | make-gt ...: `args` from options.parse_tool_args."""
    if args.command == "make-list":
        label_column = args.labels is not None or DATASETS[args.dataset].normal_marker is None
        _, _, summary = make_lists(args.root_dir, args.dataset, dataset_info(args), args.list_dir, args.test_videos,
                                   args.labels, args.len_feature, label_column)
        print("\n".join(summary))
    else:
        print(write_gt(args.test_list, args.root_dir, dataset_info(args), args.annotations, args.out,
                       args.len_feature, args.annotation_unit, args.fps))


if __name__ == "__main__":
    run_cli(lambda: cli(parse_tool_args()))
