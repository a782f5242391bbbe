"""extract.py: crop geometry, snippets, resampling, decoding, the feature pipeline and the command line."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import extract
from conftest import shared_path
from extract import main, parse_args
from helpers import GridProbe, MARKER, as_grid, green, write_video
from options import parse_resize
from video import VideoError
from video.crops import crop_frames, resized_size
from video.decode import decode_frames, resample_by_time
from video.extraction import extract_video, list_videos
from video.records import output_paths
from video.snippets import background, snippets, video_features




# ---- pure functions ----

def test_crop_geometry():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 200, (2, 256, 340, 3), dtype=np.uint8)  # (T, H, W, 3)
    frames[:, :MARKER, :MARKER] = 255
    crops = crop_frames(frames, 10)
    assert crops.shape == (10, 2, 224, 224, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], frames[:, 16:240, 58:282])  # centre
    np.testing.assert_array_equal(crops[1], frames[:, :224, :224])
    np.testing.assert_array_equal(crops[2], frames[:, :224, -224:])
    np.testing.assert_array_equal(crops[3], frames[:, -224:, :224])
    np.testing.assert_array_equal(crops[4], frames[:, -224:, -224:])
    for k in range(5):
        np.testing.assert_array_equal(crops[5 + k], crops[k][:, :, ::-1])
    has_marker = [(crop[:, :MARKER, :MARKER] == 255).all() or (crop[:, :MARKER, -MARKER:] == 255).all()
                  for crop in crops]
    assert has_marker == [False, True, False, False, False, False, True, False, False, False]
    assert (crops[6][:, :MARKER, -MARKER:] == 255).all()  # mirrored top-left: the marker moves right
    np.testing.assert_array_equal(crop_frames(frames, 5), crops[:5])
    np.testing.assert_array_equal(crop_frames(frames, 1), crops[:1])


def test_crop_rejects_small_frames_and_odd_counts():
    with pytest.raises(ValueError, match='smaller than a 224x224 crop'):
        crop_frames(np.zeros((2, 200, 300, 3), np.uint8))
    with pytest.raises(ValueError, match='crops must be 1, 5 or 10'):
        crop_frames(np.zeros((2, 256, 300, 3), np.uint8), crops=3)


def test_snippets_drop_or_pad_the_tail():
    frames = [(Fraction(i, 25), Fraction(i + 1, 25), np.full((2, 2, 3), i, np.uint8)) for i in range(40)]
    times = []
    kept = list(snippets(frames, times=times))
    assert [s.shape for s in kept] == [(16, 2, 2, 3)] * 2
    assert [int(s[-1, 0, 0, 0]) for s in kept] == [15, 31]
    assert times == [(0.0, 0.64), (0.64, 1.28)]          # first frame's start, last frame's end
    times = []
    padded = list(snippets(frames, pad_last=True, times=times))
    assert len(padded) == 3
    assert padded[2][:, 0, 0, 0].tolist() == list(range(32, 40)) + [39] * 8
    assert times[2] == (1.28, 1.6)                       # the padded snippet ends with the last real frame
    assert list(snippets(frames[:10])) == []


def test_resample_picks_frames_by_timestamp():
    timed = [(Fraction(i, 30), i) for i in range(60)]  # 2 s at 30 fps
    items = lambda fps: [item for _, item in resample_by_time(timed, fps)]
    assert items(10) == list(range(0, 60, 3))
    assert items(60) == [i for i in range(60) for _ in range(2)]
    picked = items(25)
    assert len(picked) == 50 and picked[:6] == [0, 1, 2, 3, 4, 6]
    assert [t for t, _ in resample_by_time(timed, 25)][:3] == [0, Fraction(1, 25), Fraction(2, 25)]  # the target times
    assert items(30) == list(range(60))
    assert list(resample_by_time([(Fraction(1, 2), 'only')], 25)) == [(Fraction(1, 2), 'only')]


def test_resize_options():
    assert parse_resize('256') == 256
    assert parse_resize('340x256') == (340, 256)
    for bad in ('200', '340x200', 'big', '1x2x3'):
        with pytest.raises(Exception, match='at least 224'):
            parse_resize(bad)
    assert resized_size(320, 240, 256) == (341, 256)
    assert resized_size(240, 320, 256) == (256, 341)
    assert resized_size(320, 240, (340, 256)) == (340, 256)


def test_list_videos(tmp_path):
    (tmp_path / 'set' / 'class').mkdir(parents=True)
    for name in ('set/b.mp4', 'set/class/a.avi', 'set/notes.md', 'c.mkv'):
        (tmp_path / name).touch()
    (tmp_path / 'list.txt').write_text('# comment\n\nc.mkv\n/abs/d.mp4\n')
    videos = list_videos([tmp_path / 'set', tmp_path / 'list.txt', tmp_path / 'c.mkv', tmp_path / 'gone.mp4'])
    assert videos == [tmp_path / 'set/b.mp4', tmp_path / 'set/class/a.avi', tmp_path / 'c.mkv', Path('/abs/d.mp4'),
                      tmp_path / 'gone.mp4']
    with pytest.raises(ValueError, match='would write the same files b__<k>.npy'):
        list_videos([tmp_path / 'set', tmp_path / 'other' / 'b.mp4'])
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        list_videos([tmp_path / 'missing.txt'])


# ---- decoding and the pipeline, with a fast stand-in model ----

def test_decode_frames(tmp_path):
    video = write_video(tmp_path / 'v.mp4', 20)
    timed = list(decode_frames(video))
    frames = [f for _, _, f in timed]
    assert len(frames) == 20 and frames[0].shape == (256, 320, 3) and frames[0].dtype == np.uint8
    assert [int(f[128, 160, 1]) for f in frames] == pytest.approx([green(i) for i in range(20)], abs=4)
    np.testing.assert_allclose([(float(a), float(b)) for a, b, _ in timed],
                               [(i / 25, (i + 1) / 25) for i in range(20)], rtol=1e-6, atol=1e-12)
    assert (frames[0][:MARKER - 2, :MARKER - 2] > 240).all()
    assert next(decode_frames(video, resize=(340, 256)))[2].shape == (256, 340, 3)
    assert next(decode_frames(video, resize=288))[2].shape == (288, 360, 3)
    every_fifth = list(decode_frames(video, fps=5))  # 25 fps source
    assert [int(f[128, 160, 1]) for _, _, f in every_fifth] == pytest.approx([green(i) for i in (0, 5, 10, 15)], abs=4)
    assert [float(t) for t, _, _ in every_fifth] == [0.0, 0.2, 0.4, 0.6]


def test_video_features_reads_the_right_pixels(tmp_path):
    video = write_video(tmp_path / 'v.mp4', 40)
    features = video_features(video, GridProbe(), crops=10, batch_size=3)
    assert features.shape == (10, 2, 1024) and features.dtype == np.float32  # T = floor(40 / 16)
    grid = as_grid(features)  # (K, T, 3, 16, 4, 4)
    assert grid.min() >= -1 and grid.max() <= 1

    # normalisation and time order: the centre crop's green is frame t*16+i's, scaled to [-1, 1]
    frame_index = np.arange(32).reshape(2, 16)
    np.testing.assert_allclose(grid[0, :, 1, :, 3, 3], green(frame_index) / 255 * 2 - 1, atol=0.04)
    # the marker (red 255 on red 0) shows in the top-left cell of crop 1, mirrored in crop 6, nowhere else
    red = grid[:, :, 0].max(axis=(1, 2))  # (K, 4, 4)
    marked = red > -0.9
    assert marked[1, 0, 0] and marked[6, 0, 3]
    marked[1, 0, 0] = marked[6, 0, 3] = False
    assert not marked.any()
    # mirrored crops are the mirror images of the first five
    np.testing.assert_allclose(grid[5:], grid[:5][..., ::-1], atol=1e-5)
    # 1 and 5 crops are the first ones of 10, and batching changes nothing
    np.testing.assert_allclose(video_features(video, GridProbe(), crops=5, batch_size=1), features[:5], atol=1e-6)
    np.testing.assert_allclose(video_features(video, GridProbe(), crops=1, batch_size=8), features[:1], atol=1e-6)


def test_pad_last_repeats_the_last_frame(tmp_path):
    video = write_video(tmp_path / 'v.mp4', 40)
    grid = as_grid(video_features(video, GridProbe(), crops=1, pad_last=True))  # (1, T, 3, 16, 4, 4)
    assert grid.shape[1] == 3  # ceil(40 / 16)
    last = [green(i) for i in range(32, 40)] + [green(39)] * 8
    np.testing.assert_allclose(grid[0, 2, 1, :, 3, 3], np.array(last) / 255 * 2 - 1, atol=0.04)


def test_short_and_broken_videos_raise_one_line_errors(tmp_path):
    short = write_video(tmp_path / 'short.mp4', 10)
    with pytest.raises(VideoError, match=r'short.mp4: shorter than one 16-frame snippet'):
        video_features(short, GridProbe(), crops=1)
    assert video_features(short, GridProbe(), crops=1, pad_last=True).shape == (1, 1, 1024)
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoError, match=r'garbage.mp4: cannot decode') as info:
        video_features(garbage, GridProbe(), crops=1)
    assert '\n' not in str(info.value)
    with pytest.raises(VideoError, match=r'missing.mp4: cannot decode'):
        video_features(tmp_path / 'missing.mp4', GridProbe(), crops=1)


def test_extract_video_writes_each_crop_atomically(tmp_path, monkeypatch):
    video = write_video(tmp_path / 'clip.mp4', 32)
    out = tmp_path / 'out'
    paths, warnings = extract_video(video, GridProbe(), out, crops=5, fp16=True)
    assert warnings == []
    assert paths == output_paths(video, out, 5) == [out / f'clip__{k}.npy' for k in range(5)]
    features = video_features(video, GridProbe(), crops=5)
    for k, path in enumerate(paths):
        saved = np.load(path)
        assert saved.shape == (2, 1024) and saved.dtype == np.float16
        np.testing.assert_allclose(saved, features[k], atol=1e-3)

    def interrupted_save(file, array, **options):
        file.write(b'half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr("video.records.np.save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        extract_video(video, GridProbe(), tmp_path / 'cut', crops=1)
    assert list((tmp_path / 'cut').iterdir()) == []  # neither a half .npy nor a temporary file


def test_background_passes_items_and_errors():
    assert list(background(iter(range(10)), ahead=2)) == list(range(10))

    def failing():
        yield 1
        raise VideoError('bad.mp4: broken')

    items = background(failing())
    assert next(items) == 1
    with pytest.raises(VideoError, match='bad.mp4'):
        next(items)


# ---- the command line ----

def test_cli_batch_reports_failures_and_resumes(tmp_path, capsys):
    weights = shared_path('fixtures', 'i3d', 'i3d_rgb_state_dict.pt')
    good = write_video(tmp_path / 'good.mp4', 34)  # 2 snippets, 2 frames dropped
    short = write_video(tmp_path / 'short.mp4', 10)
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(b'\x00garbage' * 500)
    (tmp_path / 'list.txt').write_text('# videos\ngarbage.mp4\n\nshort.mp4\n')
    out = tmp_path / 'out'
    argv = [str(good), str(tmp_path / 'list.txt'), '--out', str(out), '--i3d_weights', str(weights),
            '--crops', '1', '--device', 'cpu']

    assert main(argv) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ['good.json', 'good__0.npy', 'manifest.csv']  # + record, manifest
    features = np.load(out / 'good__0.npy')
    assert features.shape == (2, 1024) and features.dtype == np.float32 and np.isfinite(features).all()
    assert features.std() > 0 and not np.allclose(features[0], features[1])
    error_lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(error_lines) == 2
    assert 'garbage.mp4: cannot decode' in error_lines[0] and 'short.mp4: shorter than one' in error_lines[1]
    assert '1 of 3 videos have features' in err and '2 failed:' in err

    written = (out / 'good__0.npy').stat().st_mtime_ns
    assert main(argv) == 1  # the good video is skipped, the bad ones fail again
    assert (out / 'good__0.npy').stat().st_mtime_ns == written
    assert main([str(good)] + argv[2:]) == 0


def test_cli_flags_reach_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr(extract, 'load_i3d', lambda path, device: GridProbe().to(device))
    video = write_video(tmp_path / 'v.mp4', 34)  # 25 fps
    out = tmp_path / 'out'
    weights = tmp_path / 'weights.pt'
    weights.touch()                      # read by the stand-in loader never; its identity keys the features
    assert main([str(video), '--out', str(out), '--i3d_weights', str(weights), '--crops', '5', '--resample_fps', '12.5',
                 '--pad_last', '--resize', '340x256', '--fp16', '--i3d_batch', '1', '--device', 'cpu']) == 0
    assert sorted(p.name for p in out.iterdir()) == ['manifest.csv', 'v.json'] + [f'v__{k}.npy' for k in range(5)]
    saved = np.stack([np.load(out / f'v__{k}.npy') for k in range(5)])
    assert saved.dtype == np.float16 and saved.shape == (5, 2, 1024)  # 17 frames at 12.5 fps, padded to 2 snippets
    expected = video_features(video, GridProbe(), crops=5, fps=12.5, pad_last=True, resize=(340, 256))
    np.testing.assert_allclose(saved, expected, atol=1e-3)
    assert not np.allclose(expected, video_features(video, GridProbe(), crops=5, fps=12.5, pad_last=True), atol=1e-2)


def test_cli_setup_errors(tmp_path, capsys):
    video = write_video(tmp_path / 'v.mp4', 16)
    base = [str(video), '--out', str(tmp_path / 'out'), '--device', 'cpu']
    assert main(base + ['--i3d_weights', str(tmp_path / 'missing.pt')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'missing.pt' in err and 'not found' in err
    assert main(base + ['--i3d_weights', str(tmp_path / 'missing.pt'), '--i3d_amp']) == 2
    assert '--i3d_amp needs a CUDA device' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_renamed_flags_keep_their_old_spelling(capsys):
    """--i3d_amp and --i3d_batch were --amp and --batch_size (names main.py gives other meanings): the old
    spellings still set them, each with a one-line note, and --help shows only the new ones. --fps, once
    --resample_fps's spelling here, is gone: it means the source's frame rate elsewhere, so it is refused
    rather than taken as a resampling rate."""
    new = parse_args(['v.mp4', '--out', 'o', '--resample_fps', '12.5', '--i3d_amp', '--i3d_batch', '3'])
    assert capsys.readouterr().err == ''
    old = parse_args(['v.mp4', '--out', 'o', '--resample_fps', '12.5', '--amp', '--batch_size', '3'])
    assert (new.resample_fps, new.i3d_amp, new.i3d_batch) == (old.resample_fps, old.i3d_amp, old.i3d_batch) == \
        (12.5, True, 3)
    assert capsys.readouterr().err.splitlines() == [
        'note: --amp is now --i3d_amp (the old spelling still works, for now)',
        'note: --batch_size is now --i3d_batch (the old spelling still works, for now)']
    for fps in (['--fps', '12.5'], ['--fps=12.5']):
        with pytest.raises(SystemExit):
            parse_args(['v.mp4', '--out', 'o', *fps])
        err = capsys.readouterr().err
        assert 'unrecognized arguments: --fps' in err and 'note:' not in err
    assert parse_args(['v.mp4', '--out', 'o']).resample_fps is None and not parse_args(['v.mp4', '--out', 'o']).i3d_amp
    with pytest.raises(SystemExit):
        parse_args(['--help'])
    shown = capsys.readouterr().out
    assert '--resample_fps' in shown and '--i3d_amp' in shown and '--fps' not in shown and '--amp ' not in shown
    assert '--i3d_batch' in shown and '--batch_size' not in shown
