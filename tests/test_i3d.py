"""Parity of i3d.py with the public PyTorch port (../shared/fixtures/i3d), and load_i3d's errors."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from video.i3d import InceptionI3d, same_padding
from video.weights import load_i3d


def test_same_padding_matches_tensorflow():
    # output size must be ceil(n / s) and the extra pixel goes after, as TensorFlow does
    for n in range(1, 20):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                before, after = same_padding(n, k, s)
                assert (n + before + after - k) // s + 1 == -(-n // s)
                assert after - before in (0, 1)
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(8, 3, 2) == (0, 1)


def test_keys_match_the_port():
    keys = set(InceptionI3d().state_dict())
    assert len(keys) == 344
    assert {'Conv3d_1a_7x7.conv3d.weight', 'Mixed_5c.b3b.bn.running_var', 'logits.conv3d.bias'} <= keys
    assert not any('b3a' in k for k in keys)  # the branch max pool has no parameters


@pytest.fixture
def fixture():
    """The I3D parity fixture: the port's state dict, three snippets of frames and their features."""
    return shared_path('fixtures', 'i3d')


def test_features_match_the_port(fixture):
    model = load_i3d(fixture / 'i3d_rgb_state_dict.pt')
    assert not model.training
    frames = np.load(fixture / 'frames.npy')  # (48, 224, 224, 3) uint8
    expected = np.load(fixture / 'features.npy')  # (3, 1024)
    x = torch.from_numpy(frames).float() / 255 * 2 - 1
    x = x.reshape(3, 16, 224, 224, 3).permute(0, 4, 1, 2, 3)  # (N, 3, 16, 224, 224)
    with torch.inference_mode():
        features = model.features(x)
        logits = model(x[:1])
    assert features.shape == (3, 1024) and logits.shape == (1, 400)
    error = np.abs(features.numpy() - expected).max()
    print(f'max abs error against the port: {error:.2e}')
    assert error < 1e-3


def test_load_rejects_bad_files(tmp_path, fixture):
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        load_i3d(tmp_path / 'nope.pt')

    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match='garbage.pt: not a readable torch file') as info:
        load_i3d(garbage)
    assert '\n' not in str(info.value)

    wrapped = tmp_path / 'wrapped.pt'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'step': 3}, wrapped)
    with pytest.raises(ValueError, match='wrapped.pt: expected a state dict'):
        load_i3d(wrapped)

    state = torch.load(fixture / 'i3d_rgb_state_dict.pt', weights_only=True)
    state['Mixed_4c.b1b.conv3d.weight'] = torch.zeros(1, 2, 3)
    misshapen = tmp_path / 'misshapen.pt'
    torch.save(state, misshapen)
    with pytest.raises(ValueError, match=r'misshapen.pt: not an I3D state dict: 1 tensors have the wrong shape: Mixed_4c.b1b.conv3d.weight'):
        load_i3d(misshapen)

    del state['Mixed_4c.b1b.conv3d.weight']
    state['extra.weight'] = torch.zeros(1)
    renamed = tmp_path / 'renamed.pt'
    torch.save(state, renamed)
    with pytest.raises(ValueError, match=r'renamed.pt: not an I3D state dict: 1 missing keys .*Mixed_4c.b1b.conv3d.weight.*1 unexpected keys .*extra.weight'):
        load_i3d(renamed)


def test_load_reads_the_class_count(tmp_path):
    path = tmp_path / 'k600.pt'
    torch.save(InceptionI3d(num_classes=600).state_dict(), path)
    model = load_i3d(path)
    assert model.logits.conv3d.out_channels == 600
