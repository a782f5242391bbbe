"""The decoding contract (video/decode.py) against the ffmpeg command line, over the generated matrix of
video/conformance.py: containers, codecs and pixel formats, sizes, sample aspect ratios, rotations,
stream layouts, size changes mid-file and timestamp faults. Each accepted cell's frames equal ffmpeg's
own decoding of the file, scaled the same way, within conformance.MAX_DIFF / MEAN_DIFF (levels of 255;
why those: conformance's docstring); each refused cell is refused in one line naming the file.
docs/inputs.md's table is made from the same matrix: python -m video.conformance --markdown docs/inputs.md.

The videos are made once per test session (a few seconds of ffmpeg), a few at a time."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import GridProbe
from video import VideoError, conformance
from video.decode import Decoding, decode_frames
from video.extraction import extract_videos

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                reason="needs the ffmpeg command (apt-get install ffmpeg)")
CELLS = conformance.matrix()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """{file name: Result} of every cell, made and checked once."""
    folder = tmp_path_factory.mktemp("matrix")
    return folder, {r.cell.file: r for r in conformance.run(folder, CELLS)}


def ffmpeg(*args, cwd):
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], cwd=cwd, check=True)


def frames(path, resize=conformance.RESIZE, originals=None):
    decoding = Decoding()
    images = [image for _, _, image in decode_frames(path, resize, decoding=decoding, originals=originals)]
    return np.stack(images), decoding


def test_the_matrix_covers_the_kinds():
    kinds = {cell.kind for cell in CELLS}
    assert kinds == {"container", "pixels", "size", "layout", "size change", "timestamps"}
    suffixes = {cell.file.rsplit(".", 1)[1].lower() for cell in CELLS}
    assert {"mp4", "mov", "mkv", "webm", "avi", "ts", "m2ts", "mts", "3gp", "mxf", "vob", "asf", "h264",
            "hevc"} <= suffixes
    assert len(CELLS) >= 50


@pytest.mark.parametrize("cell", CELLS, ids=[cell.file for cell in CELLS])
def test_cell_matches_ffmpeg(matrix, cell):
    result = matrix[1][cell.file]
    if result.status == "skipped":
        pytest.skip(result.detail)
    if cell.refused:
        assert result.status == "refused", result.detail     # one line, naming the file, with the reason
        return
    assert result.status == "accepted", result.detail
    print(f"{cell.file}: {result.detail}; max {result.max_diff}, mean {result.mean_diff:.2f}")
    assert result.max_diff <= conformance.MAX_DIFF and result.mean_diff <= conformance.MEAN_DIFF


def test_a_refusal_is_one_line_naming_the_file(matrix):
    folder = matrix[0]
    for file in ("audio_only.m4a", "song_with_cover.mp3"):
        with pytest.raises(VideoError) as info:
            frames(folder / file)
        message = str(info.value)
        assert message.startswith(f"{folder / file}: no video stream (") and "\n" not in message


def test_the_same_pixels_give_the_same_frames_whatever_the_codec(matrix):
    """An H.264 (yuv420p) clip and lossless copies of what it shows (RGB H.264, RGB FFV1, 4:4:4 FFV1)
    give identical resized frames: the resize is in RGB, after a conversion that honours each file's
    own tags. (Resizing while converting, in YUV, made them differ by up to 104 levels.)"""
    folder = matrix[0]
    ffmpeg("-i", "h264.mkv", "-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24", "copy_rgb.mkv", cwd=folder)
    ffmpeg("-i", "h264.mkv", "-c:v", "ffv1", "-pix_fmt", "bgr0", "copy_ffv1.mkv", cwd=folder)
    original = frames(folder / "h264.mkv", resize=21)[0]
    for copy in ("copy_rgb.mkv", "copy_ffv1.mkv"):
        assert np.array_equal(frames(folder / copy, resize=21)[0], original), copy


def test_non_square_pixels_give_the_scene_shown(matrix):
    """SAR 64:45 (720x576 shown as 1024x576): the frames have the displayed scene's shape, and equal
    the frames of a square-pixel copy that ffmpeg stretched to the displayed size."""
    folder = matrix[0]
    anamorphic, decoding = frames(folder / "sar_64_45.mp4")
    assert decoding.size == (128, 72) and anamorphic.shape == (6, 40, 71, 3)
    ffmpeg("-i", "sar_64_45.mp4", "-vf", "scale=iw*sar:ih:flags=lanczos,setsar=1", "-c:v", "ffv1", "square.mkv",
           cwd=folder)
    square = frames(folder / "square.mkv")[0]
    assert square.shape == anamorphic.shape
    # two routes to one size (90 -> 128 -> 71 wide, and 90 -> 71) of a sharp pattern: measured 2.6 levels
    assert np.abs(square.astype(int) - anamorphic).mean() < 4


def test_a_size_change_mid_file_keeps_the_batch_going(matrix, tmp_path):
    """A raw H.264 switching from 144x320 to 320x144 mid-file gives features (every frame resized from
    its own size to the first frame's, with a warning), and the next video of the batch is extracted."""
    folder = matrix[0]
    for name, size in (("a", "144x320"), ("b", "320x144")):
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=1", *conformance.H264, "-f", "h264",
               f"{name}.h264", cwd=folder)
    switch = tmp_path / "switch.h264"
    switch.write_bytes((folder / "a.h264").read_bytes() + (folder / "b.h264").read_bytes())   # 20 frames
    after = tmp_path / "after.h264"
    after.write_bytes((folder / "b.h264").read_bytes() * 2)
    out = tmp_path / "out"
    assert extract_videos([switch, after], GridProbe(), out, crops=1, progress=False) == {}
    assert np.load(out / "switch__0.npy").shape == (1, 1024) and np.load(out / "after__0.npy").shape == (1, 1024)

    originals = []
    images, decoding = frames(switch, originals=originals)
    assert images.shape == (20, 89, 40, 3) and decoding.size_changes == 10
    assert {o.shape for o in originals} == {(320, 144, 3)}     # the clip buffer's frames stack too
    [note] = [note for note in decoding.notes if "size" in note]
    assert note.startswith("its picture changes size from 144x320 to 320x144") and "stretched" in note


def test_docs_table_is_the_matrix():
    """docs/inputs.md's table lists every cell of the matrix (made by python -m video.conformance --markdown)."""
    page = (Path(__file__).parent.parent / "docs" / "inputs.md").read_text()
    section = page[page.index(conformance.HEADING):]
    for cell in CELLS:
        assert f"`{cell.file}`" in section, cell.file
