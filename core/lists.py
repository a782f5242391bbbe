"""List files, labels, temporal annotations and the frame-level ground truth.

  read_list         a list file -> videos with their crops (features.group_videos) and labels
  make_lists        a feature folder -> <dataset>_train.list / _test.list, with a provenance record
  read_annotations  temporal annotations (XD, both UCF formats, `video,start,end`; frames or seconds)
  annotated_gt      the frame-level ground truth of a list from annotations and each video's T
  load_gt           a ground-truth .npy, checked against the list it is used with
  write_gt          make-gt: annotated_gt written with a sidecar naming its videos and lengths

A list file names feature files relative to --root_dir, one per line (the release's
`list/XD_Train.list` format), optionally with a label column (`path label` or CSV `path,label`;
1 abnormal, 0 normal). Whether a video is normal comes from the label column, else from the
dataset's name rule, never from its position in the list. Every text file is read by
utils.read_text_lines (UTF-8, with or without a byte-order mark, any line ends).

Ground truth (docs/method.md, "Evaluation"): per video T*16 frames, T from its feature file; a frame
f is 1 iff s <= f < e for an annotated interval (s, e); intervals are cut at T*16; videos in list
order. A gt.npy has no names in it, so one built for another order of the same videos has the same length and would
silently misalign: load_gt refuses a gt that marks a normal video's frames or leaves an abnormal
video without any, and make-gt writes `<gt>.videos.tsv` (each video and its T, in order) that later
runs check exactly. A gt without that sidecar (the real XD and UCF gts other repositories ship) is
read with a warning that its order cannot be checked beyond those two rules.
"""
import hashlib
import json
import math
import os
import re
import sys

import numpy as np

from core.features import FRAMES_PER_SNIPPET, Video, feature_shape, group_videos, scan_features, split_crop, video_shape
from utils import InputError, make_dir, read_text_lines, save_array, write_text

SPLIT_FOLDERS = {"train": "train", "training": "train", "test": "test", "testing": "test"}
VIDEO_SUFFIX = re.compile(r"\.(mp4|avi|mkv|mov|webm|mpe?g|npy)$", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
INTEGER = re.compile(r"-?\d+")


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


def label_videos(videos, labels, info, source):
    """Video.normal from explicit labels (1 abnormal, 0 normal) where given, else from the name rule."""
    for v, label in zip(videos, labels):
        if label is None and info.normal_marker is None:
            raise InputError(f"{source} gives video {v.name} no label, and the dataset has no name rule: add a label "
                             f"column (`path label`, 1 abnormal, 0 normal) or give --normal_marker")
        v.normal = info.normal_marker in v.name if label is None else label == 0


def read_list(list_file, root_dir, info):
    """Parse a list file into videos (first-appearance order), with their crops and labels checked.

    info: the dataset's conventions (crops, normal_marker). The crop files of each video are
    grouped by features.group_videos, as every other reader groups them.
    """
    files, labels, has_label = [], {}, None
    for lineno, line in enumerate(read_text_lines(list_file, "list file"), 1):
        entry = parse_list_line(line, list_file, lineno)
        if entry is None:
            continue
        path, label = entry
        if has_label is None:
            has_label = label is not None
        elif has_label != (label is not None):
            raise InputError(f"{list_file} line {lineno}: some lines have a label column and some do not")
        files.append((os.path.join(root_dir, path), f"line {lineno}"))
        labels.setdefault(split_crop(path)[0], []).append((label, lineno))
    if not files:
        raise InputError(f"list file {list_file} names no feature files")
    videos = []
    for name, crops in group_videos(files, list_file, info.crops, same_count=True, crops_from=info.crops_from):
        if len({label for label, _ in labels[name]}) > 1:
            raise InputError(f"{list_file}: the crops of video {name} have different labels (line "
                             f"{labels[name][0][1]})")
        videos.append(Video(name, [path for _, path, _ in crops], False, info.crops, info.crops_from))
    label_videos(videos, [labels[v.name][0][0] for v in videos], info, f"list file {list_file}")
    return videos


def check_labels(videos, list_file):
    """A training list needs videos of both classes."""
    n_normal = sum(v.normal for v in videos)
    if n_normal == 0 or n_normal == len(videos):
        kind = "normal" if n_normal == 0 else "abnormal"
        raise InputError(f"list file {list_file} has no {kind} videos (by its label column or the dataset's name rule)")


def video_name(token):
    """'Arson/Arson011_x264.mp4' -> 'Arson011_x264': the base name without a video or .npy extension."""
    return VIDEO_SUFFIX.sub("", os.path.basename(token))


def read_video_file(path, with_labels):
    """A file that names videos by its lines' first field (a name, a path, a list entry or an
    annotation line) -> {video: label}; with_labels: each line also has a label (`video label`)."""
    videos = {}
    for lineno, line in enumerate(read_text_lines(path, "labels file" if with_labels else "test-videos file"), 1):
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


def file_stamp(path):
    """[absolute path, size, modification time (ns)] of a file, or None for no file."""
    if path is None:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def lists_provenance(root_dir, info, test_videos, labels, len_feature, label_column, rels=None):
    """What a pair of made lists was made from: the folder, the set of its feature files, the split
    and label sources (each by path, size and modification time) and the settings that decide the
    lists' content. Two runs that give the same provenance would make the same lists."""
    rels = scan_features(root_dir) if rels is None else rels
    return dict(root_dir=os.path.abspath(root_dir), files=hashlib.sha1("\n".join(rels).encode()).hexdigest(),
                n_files=len(rels), test_videos=file_stamp(test_videos), labels=file_stamp(labels),
                normal_marker=info.normal_marker, crops=info.crops, len_feature=len_feature, label_column=label_column)


def provenance_path(list_dir, dataset):
    return os.path.join(list_dir, f"{dataset}_lists.json")


def make_lists(root_dir, dataset, info, list_dir="list", test_videos=None, labels=None, len_feature=None,
               label_column=False):
    """Scan root_dir's feature files and write <list_dir>/<dataset>_train.list and _test.list.

    Crops are grouped by features.group_videos and checked (every crop present, no video twice, one
    feature width, one T per video). The split: the videos named in the test_videos file are the
    test set, the rest train; without it, the top folders train/ and test/. Labels: a labels file,
    else the name rule. Abnormal videos come first, then normal, each sorted by path. label_column
    (or a labels file) writes a label column. Beside the lists, <dataset>_lists.json records their
    provenance (see lists_provenance), so a run can tell lists made from another folder.
    -> the two paths and a summary.
    """
    rels = scan_features(root_dir)
    source = f"feature folder {root_dir}"
    files = [(os.path.join(root_dir, rel), rel) for rel in rels]
    videos, own = [], {}
    for name, crops in group_videos(files, source, info.crops, same_count=True, crops_from=info.crops_from):
        own[name] = [rel for _, _, rel in crops]
        videos.append(Video(name, [path for _, path, _ in crops], False, info.crops, info.crops_from))

    widths = {}
    for v in videos:
        video_shape(v, len_feature)                       # readable, a known layout, one T per video
        for p in v.paths:
            widths.setdefault(feature_shape(p, len_feature, v.crops if len(v.paths) == 1 else None)[1], p)
        if len(widths) > 1:
            (d1, p1), (d2, p2) = widths.items()
            raise InputError(f"feature files {p1} and {p2} have different feature widths ({d1} and {d2})")

    given = read_video_file(labels, with_labels=True) if labels else {}
    unknown = [n for n in given if n not in own]
    if unknown:
        raise InputError(f"labels file {labels} names video {unknown[0]}, which has no feature files under {root_dir}")
    label_videos(videos, [given.get(v.name) for v in videos], info, f"labels file {labels}" if labels else source)

    if test_videos:
        wanted = read_video_file(test_videos, with_labels=False)
        absent = [n for n in wanted if n not in own]
        if absent:
            raise InputError(f"test video {absent[0]} named in {test_videos} has no feature files under {root_dir}"
                             + (f" ({len(absent)} such videos)" if len(absent) > 1 else ""))
        split = {v.name: "test" if v.name in wanted else "train" for v in videos}
    else:
        split = {v.name: split_of(v.name, own[v.name], root_dir) for v in videos}

    label_column = label_column or labels is not None
    paths = {part: os.path.join(list_dir, f"{dataset}_{part}.list") for part in ("train", "test")}
    chosen = {part: sorted((v for v in videos if split[v.name] == part), key=lambda v: (v.normal, own[v.name][0]))
              for part in paths}
    check_labels(chosen["train"], paths["train"])
    if not chosen["test"]:
        raise InputError(f"no test videos under {root_dir}")
    make_dir(list_dir, "list")
    summary = []
    for part, path in paths.items():
        lines = [rel + (f" {0 if v.normal else 1}" if label_column else "")
                 for v in chosen[part] for rel in own[v.name]]
        write_text(path, "\n".join(lines) + "\n")
        n_abnormal = sum(not v.normal for v in chosen[part])
        summary.append(f"wrote {path}: {n_abnormal} abnormal + {len(chosen[part]) - n_abnormal} normal videos, "
                       f"{len(lines)} files")
    provenance = lists_provenance(root_dir, info, test_videos, labels, len_feature, label_column, rels)
    write_text(provenance_path(list_dir, dataset), json.dumps(provenance, indent=1) + "\n")
    return paths["train"], paths["test"], summary


def seconds_to_frame(seconds, fps):
    """The first frame whose timestamp f / fps is at or after `seconds`: ceil(seconds * fps), with
    float round-off of 1e-6 frames forgiven (2.5 s at 24 fps is frame 60, not 61)."""
    return math.ceil(round(seconds * fps, 6))


def read_annotations(path, unit="frames", fps=None):
    """Temporal annotations -> {video: [(start, end), ...]} in frames, end exclusive.

    One line per video (or per interval; a video's lines add up): the video (a name or a path; a
    video extension is dropped), then optionally one integer and words (UCF's class; UR-DMU's frame
    count and class), then `start end` pairs; `-1 -1` is no interval and commas count as spaces:
      XD-Violence   <video>[.mp4] s1 e1 [s2 e2 ...]
      UCF-Crime     <video>.mp4  <class>  s1  e1  s2  e2
      UCF (UR-DMU)  <Class>/<video>.mp4 <frames> <class> s1 e1 s2 e2
      custom        <video> s1 e1 [s2 e2 ...]   or   <video>,<start>,<end>
    Only a first line with no numeric field is a header. Any other line that is not a video
    followed by start/end pairs is an error naming the file and line, as is a decimal in frames.
    unit 'seconds': the pairs are seconds (decimals allowed), converted to frames with `fps` by
    seconds_to_frame, so an interval [s, e) s holds the frames whose timestamps lie in it.
    """
    if unit not in ("frames", "seconds"):
        raise ValueError(f"unit must be 'frames' or 'seconds', got {unit!r}")
    if unit == "seconds" and not fps:
        raise InputError(f"annotations {path} in seconds need the videos' frame rate: give --fps")
    annotations = {}
    for lineno, line in enumerate(read_text_lines(path, "annotation file"), 1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        numeric = [bool(NUMBER.fullmatch(t)) for t in tokens]
        if lineno == 1 and not any(numeric):
            continue                                              # a header such as `video,start,end`
        name, rest, is_number = video_name(tokens[0]), tokens[1:], numeric[1:]
        words = [i for i, n in enumerate(is_number) if not n]
        middle, pairs = rest[:words[-1] + 1] if words else [], rest[words[-1] + 1:] if words else rest
        # between the name and the pairs: words (a class), after at most one integer (a frame count)
        if middle and (NUMBER.fullmatch(middle[0]) and not INTEGER.fullmatch(middle[0])
                       or any(NUMBER.fullmatch(t) for t in middle[1:])):
            raise InputError(f"{path} line {lineno}: expected a video, then start end pairs, got {line.strip()!r}")
        if not pairs or len(pairs) % 2:
            got = repr(" ".join(rest)) if rest else "nothing"
            raise InputError(f"{path} line {lineno}: expected start end pairs after the video name, got {got}")
        if unit == "frames":
            bad = [t for t in pairs if not INTEGER.fullmatch(t)]
            if bad:
                raise InputError(f"{path} line {lineno}: {bad[0]} is not a whole frame number; for annotations "
                                 f"in seconds give --annotation_unit seconds and --fps")
        spans = annotations.setdefault(name, [])
        for s, e in zip(pairs[::2], pairs[1::2]):
            s, e = (int(s), int(e)) if unit == "frames" else (float(s), float(e))
            if (s, e) == (-1, -1):
                continue
            if s < 0 or e <= s:
                raise InputError(f"{path} line {lineno}: interval {s} {e} of video {name} is not a start < end "
                                 f"pair of {unit}")
            if unit == "seconds":
                s, e = seconds_to_frame(s, fps), seconds_to_frame(e, fps)
            spans.append((s, e))
    if not annotations:
        raise InputError(f"annotation file {path} names no videos")
    return annotations


def examples(items, n=3):
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def frame_gt(lengths, intervals):
    """Frame-level ground truth: per video T*16 frames, 1 where s <= f < e for an interval (s, e)."""
    parts = []
    for T, spans in zip(lengths, intervals):
        g = np.zeros(T * FRAMES_PER_SNIPPET, dtype=np.uint8)
        for s, e in spans:
            g[max(s, 0):max(min(e, len(g)), 0)] = 1
        parts.append(g)
    return np.concatenate(parts)


def annotated_gt(videos, lengths, annotations, source):
    """Frame-level ground truth of `videos` (list order) with `lengths` T from an annotations dict.

    -> (gt (sum 16 T,) uint8, notes). Intervals are cut at T*16 (docs/method.md). An annotation for a video not
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


def gt_sidecar(gt_path):
    """The sidecar of a ground-truth file: 'list/xd_gt.npy' -> 'list/xd_gt.videos.tsv'."""
    gt_path = os.fspath(gt_path)
    return (gt_path[:-4] if gt_path.endswith(".npy") else gt_path) + ".videos.tsv"


def write_gt_sidecar(gt_path, names, lengths):
    """The video names and T of a ground truth, in its order (tab-separated, with a header)."""
    write_text(gt_sidecar(gt_path), "video\tsnippets\n" + "".join(f"{n}\t{int(T)}\n" for n, T in zip(names, lengths)))


def check_gt_sidecar(gt_path, videos, lengths):
    """When the ground truth has a sidecar, its videos and lengths must be the list's, in its order
    (InputError naming the first that differs). Without one: a warning that the order cannot be checked."""
    path = gt_sidecar(gt_path)
    if not os.path.isfile(path):
        print(f"warning: ground-truth file {gt_path} has no sidecar {os.path.basename(path)}: its video order cannot "
              f"be checked against the test list beyond its length and labels (make-gt writes one)", file=sys.stderr)
        return
    rows = [line.split("\t") for line in read_text_lines(path, "ground-truth sidecar")[1:] if line.strip()]
    here = [(v.name, int(T)) for v, T in zip(videos, lengths)]
    there = [(r[0], int(r[1])) if len(r) == 2 and r[1].isdigit() else None for r in rows]
    if None in there:
        raise InputError(f"{path} line {there.index(None) + 2}: expected `video<TAB>snippets`")
    if there != here:
        i = next((i for i, (a, b) in enumerate(zip(there, here)) if a != b), min(len(there), len(here)))
        theirs = f"{there[i][0]} ({there[i][1]} snippets)" if i < len(there) else "nothing"
        ours = f"{here[i][0]} ({here[i][1]} snippets)" if i < len(here) else "nothing"
        raise InputError(f"ground-truth file {gt_path} was made for another list: its video {i + 1} is {theirs} "
                         f"({path}), the test list's is {ours}; rebuild it with make-gt for this list")


def load_gt(path, videos, lengths):
    """The frame-level ground truth of `videos` (list order, lengths T) from a .npy file, checked.

    Its length must be the videos' frames (16 per snippet). It must hold only 0 and 1. Its sidecar,
    where there is one, must name these videos in this order (without one, a warning says the order
    cannot be checked). And no video that is normal (by its label or the dataset's name rule) may have
    abnormal frames, and every abnormal video must have at least one: a gt built for another order of
    the same videos has the right length and would give a wrong AUC/AP without a word.
    InputError naming the file (and the first video) otherwise.
    """
    if not os.path.isfile(path):
        raise InputError(f"ground-truth file {path} does not exist")
    try:
        gt = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"ground-truth file {path} is not a readable .npy file ({e})") from None
    gt = np.asarray(gt).reshape(-1)
    n_frames = int(np.sum(lengths)) * FRAMES_PER_SNIPPET
    if len(gt) != n_frames:
        raise InputError(f"ground-truth file {path} has {len(gt)} frames, but the test features give "
                         f"{n_frames} (16 per snippet, videos in list order)")
    if not np.isin(gt, (0, 1)).all():
        raise InputError(f"ground-truth file {path} holds values other than 0 and 1")
    check_gt_sidecar(path, videos, lengths)
    per_video = np.add.reduceat(gt.astype(np.int64), np.r_[0, np.cumsum(lengths)[:-1]] * FRAMES_PER_SNIPPET)
    wrong = [v.name for v, n in zip(videos, per_video) if v.normal and n > 0]
    if wrong:
        raise InputError(f"ground-truth file {path} marks abnormal frames in video {wrong[0]}, which is normal (by its "
                         f"label or the dataset's name rule): the ground truth probably follows another list's "
                         f"order ({len(wrong)} such videos); rebuild it for this list with make-gt")
    empty = [v.name for v, n in zip(videos, per_video) if v.normal is False and n == 0]
    if empty:
        raise InputError(f"ground-truth file {path} marks no abnormal frame in video {empty[0]}, which is abnormal (by "
                         f"its label or the dataset's name rule): the ground truth probably follows another list's "
                         f"order ({len(empty)} such videos); rebuild it for this list with make-gt")
    return gt.astype(np.uint8)


def write_gt(test_list, root_dir, info, annotations, out, len_feature=None, unit="frames", fps=None):
    """make-gt: the test list's frame-level ground truth from annotations and each video's T (headers
    only), written to `out` with its sidecar (the videos and their T, in order)."""
    videos = read_list(test_list, root_dir, info)
    lengths = [video_shape(v, len_feature)[1] for v in videos]
    gt, notes = annotated_gt(videos, lengths, read_annotations(annotations, unit, fps), annotations)
    report(notes)
    make_dir(os.path.dirname(out) or ".", "output")

    save_array(out, gt)
    write_gt_sidecar(out, [v.name for v in videos], lengths)
    return f"wrote {out}: {len(videos)} test videos, {len(gt)} frames, {int(gt.sum())} abnormal"
