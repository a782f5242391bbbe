"""Snippets (16 frames each) through the I3D network: features of a video, and Kinetics classes.

Every snippet of every crop goes through the RGB I3D as `rgb / 255 * 2 - 1`; snippet t of crop k
becomes row t of that crop's (T, 1024) features. T = floor(frames / 16); pad_last repeats the last
frame to complete a last partial snippet. Decoding and cropping run in a background thread, ahead
of the network.
"""
import queue
import sys
import threading
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.features import FRAMES_PER_SNIPPET
from options import RESIZE
from video import VideoError
from video.crops import crop_frames
from video.decode import Decoding, decode_frames


SNIPPET = FRAMES_PER_SNIPPET  # frames per snippet, one feature row each
def snippets(frames, pad_last=False, times=None):
    """Group (start, end, frame) triples into non-overlapping (16, H, W, 3) snippets; a last partial one
    is padded (its last frame repeated) or dropped. times: a list that gets each snippet's (start of
    its first frame, end of its last real frame) in seconds."""
    buffer = []
    for start, end, frame in frames:
        buffer.append((start, end, frame))
        if len(buffer) == SNIPPET:
            if times is not None:
                times.append((float(buffer[0][0]), float(buffer[-1][1])))
            yield np.stack([f for _, _, f in buffer])
            buffer = []
    if pad_last and buffer:
        if times is not None:
            times.append((float(buffer[0][0]), float(buffer[-1][1])))
        images = [f for _, _, f in buffer]
        yield np.stack(images + [images[-1]] * (SNIPPET - len(images)))


def snippet_batches(path, crops=10, resize=RESIZE, fps=None, pad_last=False, batch_size=4, decoding=None):
    """Yield (B, crops, 16, 224, 224, 3) uint8 batches of a video's cropped snippets, in time order.
    decoding: a Decoding that gets the decoding facts and each snippet's times."""
    decoding = decoding if decoding is not None else Decoding()
    batch = []
    for snippet in snippets(decode_frames(path, resize, fps, decoding), pad_last, decoding.snippet_times):
        batch.append(crop_frames(snippet, crops))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def background(iterable, ahead=2):
    """Iterate `iterable` in a daemon thread, up to `ahead` items in advance; its errors re-raise here."""
    items = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def put(entry):
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in iterable:
                if not put((item, None)):
                    return
            put((done, None))
        except Exception as error:
            put((None, error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


@torch.inference_mode()
def snippet_features(model, batch, amp=False):
    """(B, K, 16, 224, 224, 3) uint8 cropped snippets (as snippet_batches gives them) -> (B, K, 1024)
    float32 features on the CPU, in one forward pass of `model` (an I3D from load_i3d, or any module
    with `.features(x)`) on its parameters' device, as `rgb / 255 * 2 - 1`. amp: float16 autocast
    (callers check that the device is CUDA)."""
    x = network_input(batch, next(model.parameters()).device)  # (B*K, 3, 16, 224, 224)
    with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp):
        f = model.features(x)  # (B*K, 1024)
    return f.float().view(batch.shape[0], batch.shape[1], -1).cpu()  # (B, K, 1024)


def network_input(batch, device):
    """(B, K, 16, 224, 224, 3) uint8 -> (B*K, 3, 16, 224, 224) float32 on `device`, as rgb / 255 * 2 - 1."""
    x = torch.from_numpy(batch).to(device)  # (B, K, 16, 224, 224, 3) uint8
    # laid out channels first while still uint8, then scaled in place: the same values as
    # `x.float() / 255 * 2 - 1`, three times faster on a CPU
    x = x.flatten(0, 1).permute(0, 4, 1, 2, 3).contiguous().float()  # (B*K, 3, 16, 224, 224)
    return x.div_(255).mul_(2).sub_(1)


@torch.inference_mode()
def video_features(path, model, crops=10, resize=RESIZE, fps=None, pad_last=False, batch_size=4, amp=False,
                   progress=False, decoding=None):
    """
    (crops, T, 1024) float32 features of one video; nothing is written. `model` is an I3D from
    load_i3d (any module with `.features(x)` and parameters on the device to run on); `batch_size`
    snippets, each with all its crops, go through it per forward pass. `decoding` (a Decoding) gets
    what decoding found, each snippet's (start, end) times among it.
    """
    device = next(model.parameters()).device
    if amp and device.type != 'cuda':
        raise ValueError(f'amp needs a CUDA device, the model is on {device}')
    decoding = decoding if decoding is not None else Decoding()
    features = []
    with tqdm(desc=Path(path).name, unit='snippet', leave=False, disable=not progress) as bar:
        for batch in background(snippet_batches(path, crops, resize, fps, pad_last, batch_size, decoding)):
            features.append(snippet_features(model, batch, amp))  # (B, K, 1024)
            bar.update(len(batch))
    if not features:
        hint = '' if pad_last else ' (--pad_last keeps a partial one)'
        raise VideoError(f'{path}: shorter than one {SNIPPET}-frame snippet{hint}')
    return torch.cat(features).transpose(0, 1).numpy()  # (K, T, 1024)


@torch.inference_mode()
def video_logits(path, model, resize=RESIZE, fps=None, pad_last=False, batch_size=4):
    """(T, classes) float32 class logits of each 16-frame snippet of the video's centre crop (the
    network's own logits: `model(x)`, averaged over the positions of its last feature map), decoded
    and cut as video_features does. Raises VideoError for a video shorter than one snippet."""
    device = next(model.parameters()).device
    logits = [model(network_input(batch, device)).float().cpu()      # (B, classes)
              for batch in background(snippet_batches(path, 1, resize, fps, pad_last, batch_size))]
    if not logits:
        hint = '' if pad_last else ' (--pad_last keeps a partial one)'
        raise VideoError(f'{path}: shorter than one {SNIPPET}-frame snippet{hint}')
    return torch.cat(logits).numpy()


def top_classes(logits, labels, k=5):
    """[(class name, logit)] of the k largest of (classes,) logits, largest first."""
    order = np.argsort(-logits, kind='stable')[:k]     # ties: the lower class index first
    return [(labels[i], float(logits[i])) for i in order]


def classify_videos(videos, model, labels, **options):
    """Print each video's top-5 Kinetics classes with their logits (video_logits averaged over its
    snippets), a video that fails as one error line; returns the number that failed. `options` are
    video_logits'."""
    failed = 0
    for video in videos:
        try:
            logits = video_logits(video, model, **options)  # (T, classes)
        except VideoError as e:
            print(f'error: {e}', file=sys.stderr)
            failed += 1
            continue
        print(f'{video}: {len(logits)} snippets, centre crop, logits averaged over the snippets')
        for name, value in top_classes(logits.mean(0), labels):
            print(f'  {value:8.3f}  {name}')
    return failed
