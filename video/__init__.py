"""The video subsystem: decoding (decode, clock), crops, the I3D network (i3d, weights, backends),
snippet features (snippets), records and the manifest, and extraction of many videos (extraction).

Imported only by the commands that read videos (extract.py, stream.py, infer.py --video, export.py
--i3d), never by training.
"""
class VideoError(ValueError):
    """A video that gives no features; the message is one line that names the file."""
