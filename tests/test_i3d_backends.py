"""I3D on each backend (video/backends.py) gives torch's features: fp32 within 1e-4 on the random-weight
fixture (../shared/fixtures/i3d); bf16 where the hardware has it, its error printed; one-line errors
for a backend that is not installed, one that cannot run on the device, and bf16 without hardware.
The ONNX export (tens of seconds) is made once per test session (conftest's i3d_cache) and shared by
both runtimes and by tests/test_export.py."""
import sys

import numpy as np
import pytest
import torch

from conftest import shared_path
from video.backends import (BackendError, I3DBackend, INSTALL, has_bf16, i3d_backend, installed, pick_backend,
                            state_sha256)
from video.weights import load_i3d


@pytest.fixture(scope='module')
def fixture_clips():
    """(model, x, features): the port's random weights, two snippets (2, 3, 16, 224, 224), torch's features."""
    folder = shared_path('fixtures', 'i3d')
    model = load_i3d(folder / 'i3d_rgb_state_dict.pt')
    frames = np.load(folder / 'frames.npy')[:32]  # (32, 224, 224, 3) uint8
    x = torch.from_numpy(frames).float().div(255).mul(2).sub(1)
    x = x.reshape(2, 16, 224, 224, 3).permute(0, 4, 1, 2, 3).contiguous()  # (2, 3, 16, 224, 224)
    with torch.inference_mode():
        return model, x, model.features(x)


@pytest.fixture
def cache_dir(i3d_cache):
    """The test session's cache folder (conftest): the fixture's export is made once for these tests and
    tests/test_export.py's."""
    return i3d_cache


def skip_unless_installed(backend):
    if not installed(backend):
        pytest.skip(f'{backend} is not installed: {INSTALL[backend]}')


@pytest.mark.parametrize('backend', ['torch', 'openvino', 'onnxruntime'])
def test_fp32_features_equal_torch(backend, fixture_clips, cache_dir):
    skip_unless_installed(backend)
    model, x, expected = fixture_clips
    i3d = i3d_backend(model, backend, 'fp32', 'cpu', cache_dir)
    with torch.inference_mode():
        features = i3d.features(x)
        assert i3d.features(x[:1]).shape == (1, 1024)     # the batch axis is dynamic: no rebuild for N
    assert features.dtype == torch.float32 and features.shape == (2, 1024)
    error = (features - expected).abs().max().item()
    print(f'{backend} fp32: max abs difference to torch {error:.2e} (features up to {expected.abs().max():.2f})')
    assert error < 1e-4
    assert i3d.settings() == dict(backend=backend, precision='fp32')
    assert i3d_backend(model, backend, 'fp32', 'cpu', cache_dir) is i3d     # built once per process
    if backend != 'torch':
        assert len(list(cache_dir.glob(f'i3d-{state_sha256(model)[:16]}-16x224x224-*.onnx'))) == 1


@pytest.mark.parametrize('backend', ['torch', 'openvino'])
def test_bf16_error_where_the_hardware_has_it(backend, fixture_clips, cache_dir):
    skip_unless_installed(backend)
    if not has_bf16(torch.device('cpu')):
        pytest.skip('this CPU has no hardware bf16 (avx512_bf16 / amx_bf16)')
    model, x, expected = fixture_clips
    with torch.inference_mode():
        features = i3d_backend(model, backend, 'bf16', 'cpu', cache_dir).features(x)
    relative = ((features - expected).norm() / expected.norm()).item()
    print(f'{backend} bf16: relative error {relative:.2e}, max abs {(features - expected).abs().max():.2e}')
    assert features.dtype == torch.float32 and relative < 0.05     # measured and reported, not tight


def test_cached_export_is_reused(fixture_clips, cache_dir, monkeypatch):
    skip_unless_installed('onnxruntime')
    model, x, expected = fixture_clips
    i3d_backend(model, 'onnxruntime', 'fp32', 'cpu', cache_dir).features(x[:1])    # exported (or already)
    monkeypatch.setattr("video.backends.export_onnx", lambda *a: pytest.fail('exported again'))
    fresh = I3DBackend(model, 'onnxruntime', 'fp32', torch.device('cpu'), cache_dir)
    with torch.inference_mode():
        assert (fresh.features(x[:1]) - expected[:1]).abs().max() < 1e-4


def test_weights_digest_follows_the_weights(fixture_clips):
    model = fixture_clips[0]
    before = state_sha256(model)
    other = load_i3d(shared_path('fixtures', 'i3d', 'i3d_rgb_state_dict.pt'))
    assert state_sha256(other) == before and len(before) == 64
    with torch.no_grad():
        other.Mixed_5c.b0.bn.bias[0] += 1e-3
    assert state_sha256(other) != before


def test_errors_are_one_line(fixture_clips, monkeypatch):
    model = fixture_clips[0]
    monkeypatch.setitem(sys.modules, 'openvino', None)       # as if not installed: import raises ImportError
    with pytest.raises(BackendError, match=r'need the openvino package, which is not installed: pip install openvino$'):
        i3d_backend(model, 'openvino', 'fp32', 'cpu')
    if installed('onnxruntime'):
        monkeypatch.setitem(sys.modules, 'onnx', None)        # the exporter's package, which both runtimes need
        with pytest.raises(BackendError, match=r'need the onnx package, which is not installed: pip install onnx$'):
            i3d_backend(model, 'onnxruntime', 'fp32', 'cpu')
        monkeypatch.delitem(sys.modules, 'onnx')
    with pytest.raises(BackendError, match='unknown backend'):
        i3d_backend(model, 'tensorrt', 'fp32', 'cpu')
    with pytest.raises(BackendError, match='not available on --backend onnxruntime'):
        if not installed('onnxruntime'):
            pytest.skip('onnxruntime is not installed: pip install onnxruntime')
        i3d_backend(model, 'onnxruntime', 'bf16', 'cpu')
    if not has_bf16(torch.device('cpu')):
        with pytest.raises(BackendError, match='needs hardware bf16') as info:
            i3d_backend(model, 'torch', 'bf16', 'cpu')
        assert '\n' not in str(info.value)


def test_auto_picks_the_fastest_installed(fixture_clips, monkeypatch):
    model = fixture_clips[0]
    cpu = torch.device('cpu')
    expected = 'openvino' if installed('openvino') else 'onnxruntime' if installed('onnxruntime') else 'torch'
    assert pick_backend(cpu) == expected
    assert pick_backend(torch.device('cuda')) == 'torch'
    monkeypatch.setitem(sys.modules, 'openvino', None)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    assert i3d_backend(model, 'auto', 'fp32', cpu).name == 'torch'


def test_backend_and_precision_key_the_extraction_settings(fixture_clips):
    from video.manifest import setting_cells
    from video.records import extraction_settings, network_settings
    model = fixture_clips[0]
    assert network_settings(model) == dict(backend='torch', precision='fp32')     # a plain InceptionI3d
    if installed('onnxruntime'):
        assert network_settings(i3d_backend(model, 'onnxruntime')) == dict(backend='onnxruntime', precision='fp32')
    torch_fp32 = extraction_settings(1, **network_settings(model))
    other = extraction_settings(1, backend='openvino', precision='bf16')
    assert torch_fp32 != other                       # a record made on another backend is stale, not reused
    cells = setting_cells(other)
    assert (cells['backend'], cells['precision']) == ('openvino', 'bf16')      # the manifest's columns
