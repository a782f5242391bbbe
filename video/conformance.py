"""The decoding contract checked against the ffmpeg command line, over a generated matrix of inputs.

Each cell of the matrix is a small video that ffmpeg makes here (containers, codecs and pixel
formats, sizes, sample aspect ratios, rotations, stream layouts, size changes, timestamp faults).
Its frames as video.decode.decode_frames gives them are compared with ffmpeg's own decoding of the
same file, scaled the same way:

    ffmpeg -i FILE -fps_mode passthrough \\
           -vf scale=flags=neighbor,format=rgb24,scale=W:H:flags=bilinear+full_chroma_int+full_chroma_inp \\
           -f rawvideo -

(ffmpeg picks the stream and turns the picture upright itself; W x H is the size decode_frames gives,
which must be crops.resized_size of the display size that ffmpeg's scale=iw*sar:ih gives, within a
pixel's rounding). A cell the project refuses must be refused in one line that names the file.

    python -m video.conformance                      # the matrix's results, one line per cell
    python -m video.conformance --markdown docs/inputs.md    # rewrite the page's accepted-inputs table

TOLERANCE: the frames agree within MAX_DIFF levels of 255 per pixel and MEAN_DIFF on average. Both
sides convert and resize with libswscale, by the same named algorithms (chroma replicated, then
bilinear on RGB); here (PyAV's FFmpeg 8.1 against Debian's ffmpeg 5.1) they agree exactly in every
cell. The margin is for other releases and CPUs, whose SIMD and C paths round the YUV->RGB step
differently by a level or two. Any real fault moves saturated colours or edges by tens of levels:
another stream, an unturned or unstretched picture, BT.601 read as BT.709, limited range read as
full, or a resize done in YUV while converting (the old path: up to 123 levels, mean 4.8).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from video import VideoError
from video.crops import resized_size
from video.decode import CONVERT_FILTER_FFMPEG, RESIZE_FILTER_FFMPEG, Decoding, decode_frames

MAX_DIFF = 3         # levels of 255, any one pixel (measured here: 0 in every cell)
MEAN_DIFF = 0.5      # levels of 255, the mean over all pixels of all frames (measured here: 0)
RESIZE = 40          # the short side the matrix resizes to: small, so that the matrix is fast
HEADING = '## Accepted video inputs'


@dataclass
class Cell:
    """One input of the matrix. steps: ffmpeg argument lists run in order in the cell's folder, with
    {out} the file and {a}, {b}, {c} scratch files; concat: scratch files joined byte by byte into
    {out} (raw streams, MPEG-TS) after the steps. refused: the reason a refusal must give, or None."""
    kind: str
    what: str
    file: str
    steps: list
    concat: list = field(default_factory=list)
    refused: str | None = None
    stream: str | None = None      # ffmpeg's -map for the reference, where its default choice is not the contract's
    why: str = ''                  # what the contract takes instead of ffmpeg's default, and why


@dataclass
class Result:
    """What a cell gave: status 'accepted', 'refused', 'skipped' (ffmpeg here cannot make it) or
    'failed' (the project and ffmpeg disagree, or a refusal is not the one promised)."""
    cell: Cell
    status: str
    detail: str = ''
    max_diff: int | None = None
    mean_diff: float | None = None
    frames: int = 0
    size: tuple | None = None


def source(width, height, frames=6, rate=10, pattern='testsrc2'):
    """ffmpeg input arguments: `frames` of its test pattern (colour bars, a gradient, moving text)."""
    return ['-f', 'lavfi', '-i', f'{pattern}=size={width}x{height}:rate={rate}:duration={frames / rate}']


def audio(seconds=0.6):
    return ['-f', 'lavfi', '-i', f'sine=frequency=440:duration={seconds}']


H264 = ['-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p']
X265 = ['-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=none']


def h264(container, file, kind='container', what=None, size=(64, 48), extra=()):
    return Cell(kind, what or f'H.264 in {container}', file, [source(*size) + H264 + list(extra) + ['{out}']])


def rotated(degrees, file, what, size=(64, 48), extra=()):
    """H.264 whose display matrix turns it `degrees` (set on a stream copy: an encode drops it)."""
    return Cell('size', what, file, [source(*size) + H264 + list(extra) + ['{a}' + Path(file).suffix],
                                     ['-i', '{a}' + Path(file).suffix, '-c', 'copy', '-metadata:s:v:0',
                                      f'rotate={degrees}', '{out}']])


def matrix():
    """Every cell, in the order of the page's table."""
    cells = [
        h264('MP4', 'h264.mp4'), h264('MOV (QuickTime)', 'h264.mov'), h264('Matroska', 'h264.mkv'),
        Cell('container', 'VP9 in WebM', 'vp9.webm',
             [source(64, 48) + ['-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '{out}']]),
        Cell('container', 'MPEG-4 part 2 in AVI', 'mpeg4.avi',
             [source(64, 48) + ['-c:v', 'mpeg4', '-q:v', '3', '{out}']]),
        Cell('container', 'Motion JPEG in AVI (webcams, action cameras)', 'mjpeg.avi',
             [source(64, 48) + ['-c:v', 'mjpeg', '-q:v', '3', '{out}']]),
        h264('MPEG-TS', 'h264.ts'),
        h264('M2TS (Blu-ray, AVCHD)', 'h264.m2ts', extra=['-f', 'mpegts', '-mpegts_m2ts_mode', '1']),
        h264('MTS (AVCHD camcorders)', '00001.MTS', extra=['-f', 'mpegts', '-mpegts_m2ts_mode', '1']),
        Cell('container', 'H.263 in 3GP (old phones)', 'h263.3gp', [source(128, 96) + ['-c:v', 'h263', '{out}']]),
        Cell('container', 'MPEG-2 in MXF (broadcast)', 'mpeg2.mxf',
             [source(64, 48, rate=25) + ['-c:v', 'mpeg2video', '-q:v', '3', '{out}']]),
        Cell('container', 'MPEG-2 program stream, DVD VOB', 'VTS_01_1.VOB',
             [source(64, 48, rate=25) + audio() + ['-c:v', 'mpeg2video', '-q:v', '3', '-c:a', 'mp2', '-shortest',
                                                   '-f', 'vob', '{out}']]),
        Cell('container', 'MPEG-1 program stream (.mpg)', 'mpeg1.mpg',
             [source(64, 48, rate=25) + ['-c:v', 'mpeg1video', '-q:v', '3', '-f', 'mpeg', '{out}']]),
        Cell('container', 'Windows Media Video 8 in ASF', 'wmv2.asf', [source(64, 48) + ['-c:v', 'wmv2', '{out}']]),
        Cell('container', 'Sorenson H.263 in FLV', 'flv1.flv', [source(64, 48) + ['-c:v', 'flv', '{out}']]),
        h264('raw H.264 stream (no container)', 'raw.h264', extra=['-f', 'h264']),
        Cell('container', 'raw HEVC stream (no container)', 'raw.hevc',
             [source(64, 48) + X265 + ['-f', 'hevc', '{out}']]),

        h264('', 'h264_10bit.mkv', 'pixels', 'H.264 10-bit (yuv420p10)', extra=['-pix_fmt', 'yuv420p10le']),
        Cell('pixels', 'HEVC 10-bit, BT.2020 tags (HDR-style phones)', 'hevc_10bit_bt2020.mkv',
             [source(64, 48) + X265 + ['-pix_fmt', 'yuv420p10le', '-vf', 'scale=out_color_matrix=bt2020',
                                       '-colorspace', 'bt2020nc', '-color_primaries', 'bt2020', '-color_trc',
                                       'bt2020-10', '{out}']]),
        h264('', 'h264_bt709.mp4', 'pixels', 'H.264, BT.709 matrix, limited range (HD cameras)',
             extra=['-vf', 'scale=out_color_matrix=bt709:out_range=tv', '-colorspace', 'bt709', '-color_primaries',
                    'bt709', '-color_trc', 'bt709', '-color_range', 'tv']),
        h264('', 'h264_full_range.mp4', 'pixels', 'H.264, full range (yuvj420p: phones, webcams)',
             extra=['-pix_fmt', 'yuvj420p']),
        h264('', 'h264_full_range_bt709.mkv', 'pixels', 'H.264, full range tagged on yuv420p, BT.709',
             extra=['-vf', 'scale=out_color_matrix=bt709:out_range=pc', '-colorspace', 'bt709', '-color_range',
                    'pc']),
        h264('', 'h264_444.mkv', 'pixels', 'H.264 4:4:4 (yuv444p)', extra=['-pix_fmt', 'yuv444p']),
        h264('', 'h264_422.mkv', 'pixels', 'H.264 4:2:2 (yuv422p)', extra=['-pix_fmt', 'yuv422p']),
        h264('', 'h264_grey.mkv', 'pixels', 'H.264 grey (thermal, IR cameras)', extra=['-pix_fmt', 'gray']),
        Cell('pixels', 'FFV1 grey 16-bit, lossless', 'ffv1_grey16.mkv',
             [source(64, 48) + ['-c:v', 'ffv1', '-pix_fmt', 'gray16le', '{out}']]),
        Cell('pixels', 'FFV1 RGB, lossless', 'ffv1_rgb.mkv',
             [source(64, 48) + ['-c:v', 'ffv1', '-pix_fmt', 'bgr0', '{out}']]),
        Cell('pixels', 'H.264 RGB, lossless (libx264rgb)', 'h264_rgb.mkv',
             [source(64, 48) + ['-c:v', 'libx264rgb', '-qp', '0', '-pix_fmt', 'rgb24', '{out}']]),

        h264('', 'odd_33x17.mkv', 'size', 'odd size, 33x17', size=(33, 17), extra=['-pix_fmt', 'yuv444p']),
        h264('', 'tiny_16x16.mp4', 'size', 'tiny, 16x16 (scaled up)', size=(16, 16)),
        h264('', 'portrait_48x96.mp4', 'size', 'portrait, 48x96', size=(48, 96)),
        h264('', 'sar_64_45.mp4', 'size', 'non-square pixels, SAR 64:45 (PAL 16:9: 720x576 shown 1024x576)',
             size=(90, 72), extra=['-vf', 'setsar=64/45']),
        h264('', 'sar_8_9.mkv', 'size', 'non-square pixels, SAR 8:9 (NTSC 4:3: 720x480 shown 640x480)',
             size=(90, 60), extra=['-vf', 'setsar=8/9']),
        h264('', 'sar_4_3.mp4', 'size', 'non-square pixels, SAR 4:3 (HDV: 1440x1080 shown 1920x1080)',
             size=(72, 54), extra=['-vf', 'setsar=4/3']),
        Cell('size', 'non-square pixels set by the container only (Matroska display size 16:9)', 'container_aspect.mkv',
             [source(64, 48) + H264 + ['{a}.mkv'], ['-i', '{a}.mkv', '-c', 'copy', '-aspect', '16:9', '{out}']]),
        rotated(90, 'rotate_90.mp4', 'rotated 90 degrees (a phone held upright)'),
        rotated(180, 'rotate_180.mp4', 'rotated 180 degrees'),
        rotated(270, 'rotate_270.mov', 'rotated 270 degrees'),
        rotated(90, 'rotate_90_sar_64_45.mp4', 'rotated 90 degrees, SAR 64:45', size=(90, 72),
                extra=['-vf', 'setsar=64/45']),

        Cell('layout', 'a one-frame JPEG thumbnail as stream 0, the video as stream 1 (drones)', 'thumbnail_first.mp4',
             [source(32, 24, frames=1) + ['-c:v', 'mjpeg', '{a}.mp4'],
              ['-i', '{a}.mp4'] + source(64, 48) + ['-map', '0:v', '-map', '1:v', '-c:v:0', 'copy', '-c:v:1', 'libx264',
                                                  '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-disposition:v:0',
                                                  '0', '-disposition:v:1', 'default', '{out}']]),
        Cell('layout', 'a one-frame JPEG thumbnail as stream 0, marked default, the video as stream 1',
             'thumbnail_default.mp4',
             [source(32, 24, frames=1) + ['-c:v', 'mjpeg', '{a}.mp4'],
              ['-i', '{a}.mp4'] + source(64, 48) + ['-map', '0:v', '-map', '1:v', '-c:v:0', 'copy', '-c:v:1', 'libx264',
                                                  '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '{out}']],
             stream='0:v:1', why='the video, as players show it; ffmpeg\'s command line alone takes the default-marked '
                                 'thumbnail here (compared with its -map 0:v:1)'),
        Cell('layout', 'a cover picture (PNG attachment) larger than the video', 'cover_art.mkv',
             [source(160, 120, frames=1) + ['{a}.png'],
              source(64, 48) + H264 + ['-attach', '{a}.png', '-metadata:s:t', 'mimetype=image/png', '{out}']]),
        Cell('layout', 'a cover picture (MP4 cover art, JPEG) larger than the video', 'cover_art.mp4',
             [source(160, 120, frames=1) + ['{a}.jpg'],
              ['-i', '{a}.jpg'] + source(64, 48) + ['-map', '0', '-map', '1', '-c:v:0', 'mjpeg', '-disposition:v:0',
                                                   'attached_pic', '-c:v:1', 'libx264', '-preset', 'ultrafast',
                                                   '-pix_fmt', 'yuv420p', '{out}']]),
        Cell('layout', 'two video streams, the first marked default (taken), the larger second', 'two_videos.mkv',
             [source(48, 32) + source(64, 48) + ['-map', '0', '-map', '1'] + H264 + ['{out}']]),
        Cell('layout', 'two video streams, the larger second marked default (taken)', 'two_videos.mp4',
             [source(48, 32) + source(64, 48) + ['-map', '0', '-map', '1'] + H264 +
              ['-disposition:v:0', '0', '-disposition:v:1', 'default', '{out}']]),
        Cell('layout', 'two video streams of one size (the first is taken)', 'two_videos_same_size.mkv',
             [source(64, 48) + source(64, 48, pattern='testsrc') + ['-map', '0', '-map', '1'] + H264 + ['{out}']]),
        Cell('layout', 'audio only', 'audio_only.m4a', [audio() + ['-c:a', 'aac', '{out}']],
             refused='no video stream (it holds only audio)'),
        Cell('layout', 'audio with a cover picture only (a music file)', 'song_with_cover.mp3',
             [source(64, 64, frames=1) + ['{a}.png'],
              audio() + ['-i', '{a}.png', '-map', '0', '-map', '1', '-c:a', 'libmp3lame', '-c:v', 'png',
                         '-disposition:v', 'attached_pic', '-id3v2_version', '3', '{out}']],
             refused='no video stream (its only video is a cover picture or thumbnail)'),

        Cell('size change', 'raw H.264 switching from 144x320 to 320x144', 'switch.h264',
             [source(144, 320, frames=3) + H264 + ['-f', 'h264', '{a}'],
              source(320, 144, frames=3) + H264 + ['-f', 'h264', '{b}']], concat=['{a}', '{b}']),
        Cell('size change', 'raw H.264 with three sizes: 48x32, 32x48, 64x36', 'three_sizes.h264',
             [source(48, 32, frames=3) + H264 + ['-f', 'h264', '{a}'],
              source(32, 48, frames=3) + H264 + ['-f', 'h264', '{b}'],
              source(64, 36, frames=3) + H264 + ['-f', 'h264', '{c}']], concat=['{a}', '{b}', '{c}']),
        Cell('size change', 'MPEG-TS dropping from 64x36 to 32x18 (a camera lowering its resolution)', 'drop.ts',
             [source(64, 36, frames=4) + H264 + ['-f', 'mpegts', '{a}'],
              source(32, 18, frames=4) + H264 + ['-f', 'mpegts', '{b}']], concat=['{a}', '{b}']),

        Cell('timestamps', 'timestamps that jump 1 s forward mid-file (frames lost)', 'jump.mkv',
             [source(64, 48) + H264 + ['-g', '1', '-bsf:v', 'setts=ts=TS+if(gte(N\\,3)\\,1000\\,0)', '{out}']]),
        Cell('timestamps', 'timestamps that restart at zero (two recordings joined byte by byte)', 'restart.ts',
             [source(64, 48, frames=4) + H264 + ['-f', 'mpegts', '{a}'],
              source(64, 48, frames=4) + H264 + ['-f', 'mpegts', '{b}']], concat=['{a}', '{b}']),
        Cell('timestamps', 'a frame with the previous frame\'s timestamp', 'duplicate_stamp.mkv',
             [source(64, 48) + H264 + ['-g', '1', '-bsf:v', 'setts=ts=if(eq(N\\,3)\\,PREV_INPTS\\,TS)', '{out}']]),
    ]
    return cells


def _ffmpeg(args, folder):
    r = subprocess.run(['ffmpeg', '-v', 'error', '-nostdin', '-y'] + args, cwd=folder, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(' '.join(r.stderr.split())[:300] or f'ffmpeg exited with {r.returncode}')


def make(cell, folder):
    """Make the cell's file in `folder` (its path), or raise RuntimeError saying why ffmpeg here cannot."""
    folder = Path(folder)
    out = folder / cell.file
    names = dict(out=str(out), **{k: str(folder / f'{Path(cell.file).stem}.{k}') for k in 'abc'})
    for step in cell.steps:
        _ffmpeg([arg.format(**names) for arg in step], folder)
    if cell.concat:
        with open(out, 'wb') as f:
            for part in cell.concat:
                with open(part.format(**names), 'rb') as p:
                    shutil.copyfileobj(p, f)
    return out


def ffmpeg_frames(path, size, stream=None):
    """ffmpeg's own decoding of `path` scaled to size (W, H): (N, H, W, 3) uint8 RGB, and the display
    size of its first frame by scale=iw*sar:ih (upright), read from a PPM of it. stream: a -map for
    both, else ffmpeg's default choice."""
    width, height = size
    pick = ['-map', stream] if stream else []
    with tempfile.TemporaryDirectory() as tmp:
        raw, ppm = Path(tmp) / 'frames.rgb', Path(tmp) / 'first.ppm'
        chain = (f'scale=flags={CONVERT_FILTER_FFMPEG},format=rgb24,'
                 f'scale={width}:{height}:flags={RESIZE_FILTER_FFMPEG}')
        _ffmpeg(['-i', str(path)] + pick + ['-an', '-sn', '-dn', '-fps_mode', 'passthrough', '-vf', chain, '-f',
                                            'rawvideo', str(raw)] +
                pick + ['-an', '-sn', '-dn', '-vf', 'scale=iw*sar:ih', '-frames:v', '1', '-c:v', 'ppm', '-f', 'image2',
                        str(ppm)], tmp)
        frames = np.fromfile(raw, dtype=np.uint8).reshape(-1, height, width, 3)
        header = ppm.read_bytes()[:40].split()
    return frames, (int(header[1]), int(header[2]))


def project_frames(path, resize=RESIZE):
    """decode_frames' frames of `path`: (N, H, W, 3) uint8, and its Decoding."""
    decoding = Decoding()
    frames = [image for _, _, image in decode_frames(path, resize, decoding=decoding)]
    return (np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)), decoding


def check(cell, folder):
    """The cell's Result: made, decoded by the project and by ffmpeg, compared."""
    try:
        path = make(cell, folder)
    except RuntimeError as e:
        return Result(cell, 'skipped', f'ffmpeg here cannot make it: {e}')
    try:
        ours, decoding = project_frames(path)
    except VideoError as e:
        message = str(e)
        if cell.refused is None:
            return Result(cell, 'failed', f'refused: {message}')
        good = '\n' not in message and message.startswith(f'{path}: ') and cell.refused in message
        return Result(cell, 'refused' if good else 'failed', message[len(str(path)) + 2:] if good else message)
    except Exception as e:          # a fault of the project's: the cell fails, the matrix goes on
        return Result(cell, 'failed', f'{type(e).__name__}: {" ".join(str(e).split())[:200]}')
    if cell.refused is not None:
        return Result(cell, 'failed', f'accepted, though it should be refused ({cell.refused})')
    theirs, shown = ffmpeg_frames(path, ours.shape[2:0:-1], cell.stream)
    size = ours.shape[2:0:-1]
    expected = resized_size(*shown, RESIZE)
    if any(abs(a - b) > 1 for a, b in zip(size, expected)):
        return Result(cell, 'failed', f'frames of {size[0]}x{size[1]}, ffmpeg shows it at {shown[0]}x{shown[1]}, '
                                      f'so {expected[0]}x{expected[1]}', frames=len(ours), size=size)
    if len(ours) != len(theirs):
        return Result(cell, 'failed', f'{len(ours)} frames, ffmpeg decodes {len(theirs)}', frames=len(ours), size=size)
    diff = np.abs(ours.astype(np.int16) - theirs)
    result = Result(cell, 'accepted', f'{len(ours)} frames shown at {shown[0]}x{shown[1]}' +
                    (f'; {cell.why}' if cell.why else ''), int(diff.max()),
                    float(diff.mean()), len(ours), size)
    if result.max_diff > MAX_DIFF or result.mean_diff > MEAN_DIFF:
        result.status = 'failed'
        result.detail += f'; differs from ffmpeg by up to {result.max_diff} (mean {result.mean_diff:.2f})'
    for note in decoding.notes:        # what a user is told about it
        result.detail += f'; warns: {note}'
    return result


def run(folder, cells=None, workers=2):
    """Every cell's Result, made and checked in `folder` (a few cells at a time: most time is ffmpeg's)."""
    cells = matrix() if cells is None else cells
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda cell: check(cell, folder), cells))


def versions():
    """'ffmpeg X (the reference) and PyAV Y with FFmpeg Z (the project's decoder)'."""
    import av
    line = subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split('\n')[0].split()
    ffmpeg = line[2] if len(line) > 2 else 'unknown'
    return (f'the ffmpeg command {ffmpeg} (the reference) and PyAV {av.__version__} with FFmpeg '
            f'{getattr(av, "ffmpeg_version_info", "unknown")} (the decoder)')


def markdown(results):
    """The page's section: a heading, how it was made, and a table with one row per cell."""
    lines = [HEADING, '',
             'Every input below is made by ffmpeg and read by this project as `extract.py`, `infer.py --video` and',
             '`stream.py` read videos; the frames are compared with the ffmpeg command line\'s own decoding of the',
             'same file, scaled the same way (`python -m video.conformance --markdown docs/inputs.md` makes this',
             'table again; `tests/test_decode_matrix.py` checks it).',
             '',
             'A frame is what a player shows: the stream ffmpeg picks (a cover picture or thumbnail is never',
             'taken for the video), turned upright by its display matrix, stretched by its sample aspect ratio,',
             'converted to RGB by its own colour matrix and range, then resized in RGB by one filter (bilinear)',
             'from its own size to the size the first frame set (`--resize` of its display size). An input that',
             'cannot give features is refused in one line that names the file and the reason.',
             '',
             f'"Max / mean" is the largest and the mean difference from ffmpeg, in levels of 255 (allowed: '
             f'{MAX_DIFF} / {MEAN_DIFF}; the two',
             'sides run the same named swscale algorithms, and agree exactly here; other FFmpeg releases and',
             'CPUs may round a level or two apart).',
             '',
             f'Made with {versions()}.',
             '',
             '| Kind | Input | File | Result | Max / mean | Details |',
             '|---|---|---|---|---|---|']
    for r in results:
        diff = f'{r.max_diff} / {r.mean_diff:.2f}' if r.max_diff is not None else ''
        detail = r.detail.replace('|', '\\|')
        lines.append(f'| {r.cell.kind} | {r.cell.what} | `{r.cell.file}` | {r.status} | {diff} | {detail} |')
    return '\n'.join(lines) + '\n'


def write_section(path, section):
    """Put `section` into the Markdown page `path` in place of its own heading's section (up to the
    next '## ' heading), or at its end; the page's other sections are kept. Written atomically."""
    from utils import write_text
    text = Path(path).read_text() if os.path.exists(path) else '# Inputs\n\n'
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        text = text.rstrip('\n') + '\n\n' + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
        text = ''.join(lines[:start]) + section + ('\n' + ''.join(lines[end:]) if end < len(lines) else '')
    write_text(path, text)


def main(argv=None):
    p = argparse.ArgumentParser(description='Check the decoding contract against the ffmpeg command line over a '
                                            'generated matrix of small videos, and print or write the results.')
    p.add_argument('--markdown', metavar='PAGE', help='write the results as the "Accepted video inputs" section of '
                                                      'this Markdown page (other sections are kept)')
    p.add_argument('--keep', metavar='FOLDER', help='make the videos in this folder and keep them (default: a '
                                                    'temporary folder)')
    args = p.parse_args(argv)
    if shutil.which('ffmpeg') is None:
        print('error: the ffmpeg command is not installed (apt-get install ffmpeg)', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        results = run(folder)
    for r in results:
        diff = f' (max {r.max_diff}, mean {r.mean_diff:.2f})' if r.max_diff is not None else ''
        print(f'{r.status:8s} {r.cell.kind:12s} {r.cell.file}: {r.detail}{diff}')
    if args.markdown:
        write_section(args.markdown, markdown(results))
        print(f'wrote {args.markdown}')
    return 1 if any(r.status == 'failed' for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
