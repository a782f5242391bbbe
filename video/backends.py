"""
The I3D network (i3d.py) on an inference runtime: torch, OpenVINO or ONNX Runtime, in fp32 or bf16.

    model = load_i3d('ckpts/rgb_imagenet.pt', device)
    i3d = i3d_backend(model, 'auto', 'fp32', device)     # OpenVINO on a CPU where it is installed
    features = i3d.features(x)      # (N, 3, 16, 224, 224) in [-1, 1] -> (N, 1024) float32

`i3d_backend` returns an I3DBackend with the `.features(x)` contract of InceptionI3d, so the
extraction and streaming code runs it unchanged. OpenVINO and ONNX Runtime run the same graph:
the torch network exported once to ONNX (export_onnx: torch's TorchScript exporter, batch axis
dynamic, the clip's (T, H, W) fixed because SAME padding depends on it). The export is the slow part
(tens of seconds on a 2-core CPU), so it is kept on disk in `cache_dir` (cached_onnx), its file named
by the weights' SHA-256, the clip shape, the torch version that wrote it, the ONNX opset and the
graph's format (its input and output names); export.py --i3d copies the same file, after checking it
against torch, as its i3d.onnx. In a process each (backend,
precision, device, weights, shape) is built once and reused for every video. The precision and
the runtime are applied when the file is loaded (a second or two), so they key the in-process
cache, not the file.

Exact by default: fp32 on every backend gives torch's features to ~1e-5 (tests/test_i3d_backends.py
checks 1e-4). bf16 is allowed only where the hardware computes it (a CPU with avx512_bf16 or
amx_bf16, as OpenVINO reports them; a CUDA GPU torch says supports it); elsewhere it is an error,
since emulated bf16 is slower than fp32 and less exact.
"""
import hashlib
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from options import BACKENDS, PRECISIONS

INSTALL = dict(openvino='pip install openvino', onnxruntime='pip install onnxruntime', onnx='pip install onnx')
ONNX_OPSET = 17
ONNX_FORMAT = 2             # of the exported graph's contract (2: input `clips`, output `features`); keys the cache
CLIP_SHAPE = (16, 224, 224)     # (T, H, W) of the snippets extraction cuts: 16 frames, 224 x 224 crops


class BackendError(ValueError):
    """A backend, precision or device that cannot run here; the message is one line saying what to do."""


def default_cache_dir():
    """Where exported networks are kept: $BNWVAD_CACHE, else $XDG_CACHE_HOME/bnwvad/i3d (~/.cache/...)."""
    if os.environ.get('BNWVAD_CACHE'):
        return Path(os.environ['BNWVAD_CACHE'])
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'bnwvad' / 'i3d'


def state_sha256(model):
    """SHA-256 (64 hex digits) of a module's state dict: every tensor's name, dtype, shape and bytes,
    in the state dict's order. The same weights give the same digest whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)};'.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # 1-d, so 0-d ones (num_batches_tracked) view too
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def installed(backend):
    """Whether the runtime of `backend` and, for the others than torch, onnx (the export) can be imported."""
    if backend == 'torch':
        return True
    try:
        __import__(backend)
        __import__('onnx')
    except ImportError:
        return False
    return True


def require(package):
    """Import and return `package` (a runtime, or onnx for the export), or raise BackendError with its pip command."""
    try:
        return __import__(package)
    except ImportError:
        raise BackendError(f'the I3D backends other than torch need the {package} package, which is not installed: '
                           f'{INSTALL[package]}') from None


def cpu_has_bf16():
    """Whether this CPU computes bf16 in hardware (x86 avx512_bf16 or amx_bf16 in /proc/cpuinfo, or
    BF16 among OpenVINO's CPU capabilities where /proc/cpuinfo is absent)."""
    try:
        flags = Path('/proc/cpuinfo').read_text().split()
        return 'avx512_bf16' in flags or 'amx_bf16' in flags
    except OSError:
        pass
    if installed('openvino'):
        import openvino
        return 'BF16' in openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
    return False


def has_bf16(device):
    """Whether `device` (torch.device) computes bf16 in hardware."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return device.type == 'cpu' and cpu_has_bf16()


def pick_backend(device):
    """The fastest exact backend installed for `device`: on a CPU OpenVINO, then ONNX Runtime, then
    torch (measured by `python -m bench --sections k`); on CUDA or MPS torch."""
    if device.type == 'cpu':
        return next(b for b in ('openvino', 'onnxruntime', 'torch') if installed(b))
    return 'torch'


class Features(nn.Module):
    """forward = InceptionI3d.features, so an exporter sees the 1024-d features as the output."""

    def __init__(self, i3d):
        super().__init__()
        self.i3d = i3d

    def forward(self, x):
        return self.i3d.features(x)  # (N, 3, T, H, W) -> (N, 1024)


def export_onnx(model, path, shape=CLIP_SHAPE):
    """Write `model`'s features (an InceptionI3d) to the ONNX file `path`: input `clips`
    (N, 3, T, H, W) float32 RGB in [-1, 1], N dynamic and (T, H, W) = `shape`; output `features`
    (N, 1024). Written to a temporary file and renamed, so a crash leaves no half file.

    torch's TorchScript exporter (torch.onnx.export(dynamo=False)), not the dynamo one: on the same
    I3D it is faster to export and needs onnx alone, not onnxscript, and its graph gives torch's
    features within 1e-4 in both runtimes (tests/test_i3d_backends.py, tests/test_export.py)."""
    from utils import atomic_write
    example = torch.zeros(1, 3, *shape, device=next(model.parameters()).device)
    Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with warnings.catch_warnings():     # the TorchScript exporter warns that it is not the dynamo one
            warnings.simplefilter('ignore')
            torch.onnx.export(Features(model).eval(), (example,), tmp, input_names=['clips'],
                              output_names=['features'], dynamic_axes={'clips': {0: 'N'}, 'features': {0: 'N'}},
                              opset_version=ONNX_OPSET, dynamo=False)
    atomic_write(path, write)
    return Path(path)


def cached_onnx(model, shape=CLIP_SHAPE, cache_dir=None, sha256=None):
    """The path of the ONNX export (export_onnx) of `model` for clips of (T, H, W) = `shape`, from
    `cache_dir` (default_cache_dir()) when there, else exported there first. Keyed by the weights'
    SHA-256 (`sha256`, state_sha256(model) when None), the shape, torch's version, the opset and
    ONNX_FORMAT."""
    sha256 = sha256 or state_sha256(model)
    name = (f'i3d-{sha256[:16]}-{"x".join(map(str, shape))}-torch{torch.__version__.split("+")[0]}'
            f'-opset{ONNX_OPSET}-v{ONNX_FORMAT}.onnx')
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    if not path.is_file():
        with export_lock(path):     # processes sharing the cache (torchrun's ranks on one machine) export once
            if not path.is_file():
                export_onnx(model, path, shape)
    return path


@contextmanager
def export_lock(path):
    """Hold an exclusive lock on `path`.lock while inside (POSIX flock; elsewhere no lock): of several
    processes about to export the same file, the first does, and the others then find it."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f'{path}.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class I3DBackend:
    """I3D on one runtime, precision and device. `features(x)`: (N, 3, T, H, W) float32 in [-1, 1]
    on `device` -> (N, 1024) float32 on `device`. `name`, `precision`, `device` say what runs it.
    Code written for the module (`next(model.parameters()).device`, `model.eval()`) runs it as is."""

    def __init__(self, model, name, precision, device, cache_dir=None):
        self.model, self.name, self.precision, self.device = model, name, precision, device
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._anchor = torch.empty(0, device=device)
        self._sha256 = None
        self._runs = {}     # (T, H, W) -> a callable: float32 array (N, 3, T, H, W) -> (N, 1024)

    def parameters(self):
        yield self._anchor

    def eval(self):
        """Itself: the network is always in evaluation mode (as code written for a module expects)."""
        return self

    def settings(self):
        """What of this backend changes the features' numbers, as plain JSON values."""
        return dict(backend=self.name, precision=self.precision)

    def sha256(self):
        if self._sha256 is None:
            self._sha256 = state_sha256(self.model)
        return self._sha256

    def features(self, x):
        if self.name == 'torch':
            dtype = torch.bfloat16 if self.precision == 'bf16' else torch.float32
            with torch.autocast(self.device.type, dtype=dtype, enabled=self.precision == 'bf16'):
                return self.model.features(x).float()  # (N, 1024)
        shape = tuple(x.shape[2:])
        if shape not in self._runs:
            self._runs[shape] = self._build(cached_onnx(self.model, shape, self.cache_dir, self.sha256()))
        video = np.ascontiguousarray(x.detach().cpu().float().numpy())  # (N, 3, T, H, W)
        return torch.from_numpy(self._runs[shape](video)).to(self.device)  # (N, 1024)

    def _build(self, onnx_path):
        threads = torch.get_num_threads()      # torchrun's one thread per process holds here too
        if self.name == 'openvino':
            import openvino
            core = openvino.Core()
            compiled = core.compile_model(core.read_model(onnx_path), 'CPU', {
                'INFERENCE_PRECISION_HINT': 'bf16' if self.precision == 'bf16' else 'f32',
                'INFERENCE_NUM_THREADS': threads})
            request = compiled.create_infer_request()
            return lambda video: np.array(request.infer({0: video})[0], dtype=np.float32, copy=True)
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
        return lambda video: session.run(None, {'clips': video})[0]


_built = {}     # (backend, precision, device, id(model)) -> I3DBackend: one per process


def i3d_backend(model, backend='auto', precision='fp32', device=None, cache_dir=None):
    """
    I3D `model` (an InceptionI3d in evaluation mode, e.g. from load_i3d) on `backend` (BACKENDS;
    'auto': pick_backend for an InceptionI3d, torch for any other module with `.features`) in `precision` (PRECISIONS) on `device` (a torch.device; default: the
    model's). Returns an I3DBackend, the same object for the same arguments in this process; its
    ONNX export (OpenVINO, ONNX Runtime) is made on the first clip of each shape, or read from
    `cache_dir` (default_cache_dir()). Raises BackendError, one line, for a backend that is not
    installed (with its pip command), one that cannot run on `device`, or bf16 where the hardware
    has none.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if backend not in BACKENDS:
        raise BackendError(f'unknown backend {backend!r}; one of {", ".join(BACKENDS)}')
    if precision not in PRECISIONS:
        raise BackendError(f'unknown precision {precision!r}; one of {", ".join(PRECISIONS)}')
    from video.i3d import InceptionI3d
    is_i3d = isinstance(model, InceptionI3d)    # only I3D is exported; a stand-in (tests) stays on torch
    name = (pick_backend(device) if is_i3d else 'torch') if backend == 'auto' else backend
    if name != 'torch':
        require(name)
        require('onnx')         # torch's ONNX exporter, which both runtimes read from
        if not is_i3d:
            raise BackendError(f'--backend {name} runs an InceptionI3d (i3d.py), not a {type(model).__name__}')
        if device.type != 'cpu':
            raise BackendError(f'--backend {name} runs I3D on the CPU here, not on {device}: '
                               f'use --device cpu, or --backend torch')
        if name == 'onnxruntime' and precision == 'bf16':
            raise BackendError('--precision bf16 is not available on --backend onnxruntime (its CPU provider '
                               'has no bf16 convolutions): use --backend openvino or torch')
    if precision == 'bf16' and not has_bf16(device):
        raise BackendError(f'--precision bf16 needs hardware bf16, which this {device.type} does not have '
                           f'(no avx512_bf16/amx_bf16 CPU, or a GPU without bf16): use --precision fp32')
    key = (name, precision, str(device), id(model), str(cache_dir))
    if key not in _built or _built[key].model is not model:
        _built[key] = I3DBackend(model.to(device).eval(), name, precision, device, cache_dir)
    return _built[key]
