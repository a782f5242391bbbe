"""The videos a review page links: paths relative to the page, and whether a browser can play them
(container and codec, read with PyAV), with a playable copy preferred when one sits beside.
"""
import os
import re


def is_absolute(path):
    """True for absolute paths of this or another machine (/..., ~/..., C:\\...)."""
    return os.path.isabs(path) or path.startswith("~") or re.match(r"[A-Za-z]:[\\/]", path) is not None


def media_path(path, folder):
    """A video or clip path as the page uses it: relative to the page's folder, forward slashes;
    None when empty. An absolute path (outside the contract) is made relative to the folder."""
    if not path:
        return None
    if is_absolute(path):
        path = os.path.relpath(path, folder)
    return path.replace("\\", "/")


# what a browser's <video> plays: these containers, by preference, holding these codecs
BROWSER_CONTAINERS = (".mp4", ".webm", ".m4v", ".ogv", ".mov")
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1", "theora"}
CODEC_NAMES = {"mpeg4": "MPEG-4 Part 2", "hevc": "HEVC (H.265)", "msmpeg4v3": "MS MPEG-4 v3", "mjpeg": "Motion JPEG",
               "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1"}


def playback_problem(path):
    """Why a browser is unlikely to play the video file at `path` (its container or its video codec, as
    PyAV reads them from the header), or None when it should play."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in BROWSER_CONTAINERS:
        return f"its container ({ext or 'no extension'}) is not one browsers play"
    try:
        import av
        from video.decode import select_stream     # the stream the features came from, not a thumbnail before it
        with av.open(path) as container:
            codec = select_stream(container, path).codec_context.name
    except Exception:   # unreadable here, or no video: nothing to say about it (the page shows what the browser does)
        return None
    if codec is not None and codec not in BROWSER_CODECS:
        return f"its video is {CODEC_NAMES.get(codec, codec)}, which browsers do not decode"
    return None


def playable_copy(path):
    """The ffmpeg command that writes a copy of the video browsers play (H.264 in MP4) beside it."""
    copy = os.path.splitext(path)[0] + (".browser.mp4" if path.lower().endswith(".mp4") else ".mp4")
    return f"ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p -movflags +faststart -an {copy}"


def choose_source(paths):
    """(the file of a video the page should link, the line to say about it or None) from the files
    that share its name: one the browser plays first (an MP4 or WebM before an AVI beside it), then by
    container preference, then path order; a warning names the others when there are several."""
    rank = lambda p: (playback_problem(p) is not None, (BROWSER_CONTAINERS + (os.path.splitext(p)[1].lower(),))
                      .index(os.path.splitext(p)[1].lower()), p)
    chosen = min(paths, key=rank)
    if len(paths) == 1:
        return chosen, None
    others = ", ".join(p for p in sorted(paths) if p != chosen)
    return chosen, f"{len(paths)} files share the name {os.path.splitext(os.path.basename(chosen))[0]!r}: " \
                   f"linking {chosen}, not {others}"


def playback_warnings(videos, folder):
    """A warning line for each linked video (the page's, relative to `folder`) a browser is unlikely to play."""
    out = []
    for video in videos:
        source = video.get("source")
        if not source or re.match(r"^[a-z]+://", source):
            continue
        path = os.path.normpath(os.path.join(folder, source))
        problem = playback_problem(path) if os.path.isfile(path) else None
        if problem:
            out.append(f"{video['name']}: {path} is unlikely to play in a browser ({problem}); a playable copy: "
                       f"{playable_copy(path)}")
    return out
