"""Seeding, device choice, checkpoint save/load, and the error type for bad input.

A checkpoint is data, never code: it is written atomically (temporary file + os.replace) and
read with torch.load(weights_only=True). Ours hold plain types:
  {"format": "bn-wvad", "model": "bnwvad" | "urdmu", "model_config": {...}, "state_dict": {...},
   "step": int, "metrics": {...}, "meta": {...}}
plus "selected_by" in main.py's best checkpoint and "resume" in its `last` one
(a checkpoint written before "model" existed holds BN-WVAD).
The authors' release saves a bare state dict; `load_checkpoint` accepts both.
"""
import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile

import numpy as np
import torch

CKPT_FORMAT = "bn-wvad"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each flag's default after its help text (not for flags without one, or switches)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings \
                and "default" not in text:
            shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            text += f" (default: {shown})"
        return text


class InputError(Exception):
    """Bad input from the user (files, flags): reported as one line, without a traceback."""


def one_line(error):
    """The first line of an exception's message (library errors can span several); its type's name
    when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


INPUT_ERROR_HOOKS = []    # called with the InputError before run_cli reports it (distributed adds its fail_current)


def run_cli(main):
    """Call main(); report an InputError as one line on stderr and exit 2 (under torchrun every rank
    stops, and rank 0 reports the errors of all, once each: the hook distributed.fail_current)."""
    try:
        main()
    except InputError as e:
        if torchrun_env() is not None:     # the other ranks hear of it and stop too; rank 0 reports it
            for hook in INPUT_ERROR_HOOKS:
                hook(e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:             # output piped into `head` and the like
        sys.stderr.close()
        sys.exit(1)


def set_seed(seed):
    """Seed python, numpy and torch (seed < 0: leave them unseeded)."""
    if seed < 0:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def torchrun_env():
    """(rank, world size, local rank) when torchrun (or a launcher setting the same variables, RANK and
    WORLD_SIZE) started this process, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(name="auto"):
    """'auto' picks cuda, then mps, then cpu; an explicit device that is not available is an error.
    Under torchrun, cuda is this process's own GPU, cuda:LOCAL_RANK (made the current device, so
    that nothing lands on GPU 0 by default); a node with fewer GPUs than processes is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    elif (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise InputError(f"--device {name} was asked for but is not available on this machine")
    place = torchrun_env()
    if name == "cuda" and place is not None:
        local, count = place[2], torch.cuda.device_count()
        if local >= count:
            raise InputError(f"this process has LOCAL_RANK {local}, but its node shows {count} GPU(s): start at "
                             f"most {count} processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def make_dir(path, what):
    """Create a folder for outputs, or fail with a one-line error before any long work."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {what} folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"{what} folder {path} is not writable")


@contextlib.contextmanager
def run_folders(*folders):
    """make_dir of each (path, what) a run writes into, undone if the run fails: on any exception (a bad
    input found after the folders were made, Ctrl-C) each folder this made, its new parents included, is
    removed again while it holds no file, so a failed run leaves no new folder behind. A folder that was
    there before, or that holds a file by then (a checkpoint, a feature cache), is kept."""
    made = []
    try:
        for path, what in folders:
            top = _outermost_missing(path)
            make_dir(path, what)
            if top is not None:
                made.append(top)
        yield
    except BaseException:
        for top in reversed(made):
            if os.path.isdir(top) and not any(files for _, _, files in os.walk(top)):
                shutil.rmtree(top, ignore_errors=True)
        raise


def _outermost_missing(path):
    """The outermost folder on the way to `path` that does not exist yet; None when path exists."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path):
        path, missing = os.path.dirname(path), path
    return missing


def refuse_to_replace(paths, overwrite, holder, instead):
    """One-line error when any of `paths` exists and --overwrite was not given: no run silently replaces
    another run's files. holder: what holds them ("outputs/x"); instead: the other ways out."""
    found = [os.path.basename(os.path.normpath(p)) for p in paths if os.path.exists(p)]
    if found and not overwrite:
        raise InputError(f"{holder} already holds a run's outputs ({', '.join(found)}): give --overwrite to replace "
                         f"them, or {instead}")


def check_inputs(paths, what):
    """A one-line error naming the first of `paths` (files or folders) that does not exist, before any
    loading starts. Every command checks its input paths here."""
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"{what} {path} does not exist")


def atomic_write(path, write):
    """Call write(tmp_path) and move the result onto `path`, so a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)     # mkstemp makes the file owner-only; give it the usual mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def read_text_lines(path, what):
    """The lines of a UTF-8 text file, or a one-line error naming it. Every text input (lists,
    annotations, labels, test-video and video-list files) is read here: a byte-order mark (as
    Windows editors save UTF-8) is dropped and CRLF / CR line ends are accepted. Other encodings
    (UTF-16, Latin-1 with non-ASCII bytes) are an error: their text would be misread."""
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path} is not a readable text file (UTF-8 expected: {e})") from None


def write_text(path, text):
    """Write a text file atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def save_checkpoint(path, model, step, metrics, model_name="bnwvad", selected_by=None, resume=None, **meta):
    """Write the model's name (model.MODELS' key) and config, state dict, step, metrics and metadata
    (plain types) atomically; selected_by ({"metric", "on", "value"}: what chose this checkpoint) and
    resume (main.py's TrainState, in a `last` checkpoint) only when given."""
    ckpt = {
        "format": CKPT_FORMAT,
        "model": model_name,
        "model_config": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "meta": meta,
    }
    if selected_by is not None:
        ckpt["selected_by"] = selected_by
    if resume is not None:
        ckpt["resume"] = resume
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")  # where other code keeps it
_noted = set()   # checkpoints whose unwrapping was already said in this process


def is_state_dict(obj):
    """Whether `obj` is a non-empty {name: tensor} dict."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def unwrap_state_dict(obj):
    """(state dict, what was unwrapped or None) from a bare state dict or one that other training code
    wrapped: {'epoch', 'state_dict', 'optimizer', ...} (or 'model_state_dict', 'model', 'net', 'network',
    'weights'), and/or keys all prefixed 'module.' (nn.DataParallel, DistributedDataParallel). None
    when it is neither."""
    done = []
    if not is_state_dict(obj) and isinstance(obj, dict):
        key = next((k for k in WRAPPER_KEYS if is_state_dict(obj.get(k))), None)
        if key is None:
            return None, None
        others = sorted(str(k) for k in obj if k != key)
        done.append(f"the state dict under {key!r}" + (f" (the other keys, {others[:6]}, are ignored)" if others else ""))
        obj = obj[key]
    if not is_state_dict(obj):
        return None, None
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        done.append("the 'module.' prefix of every key (a DataParallel / DistributedDataParallel model)")
    return obj, ("; ".join(done) or None)


def read_checkpoint(path):
    """torch.load(weights_only=True) with one-line errors. Returns (state_dict, our record or None).

    A state dict other training code saved is unwrapped (unwrap_state_dict), with a note on stderr
    saying what was; anything else is an InputError naming the top-level keys found."""
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean "not a checkpoint we can read"
        reason = one_line(e)
        raise InputError(f"{path} is not a readable PyTorch checkpoint ({reason[:200]})") from None
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        return obj["state_dict"], obj
    state, unwrapped = unwrap_state_dict(obj)
    if state is None:
        found = f"a dict with the top-level keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) and obj \
            else f"a {type(obj).__name__}" + (" (empty)" if isinstance(obj, dict) else "")
        raise InputError(f"{path} is neither a BN-WVAD checkpoint nor a state dict: it holds {found}, and none of "
                         f"{list(WRAPPER_KEYS)} holds a state dict")
    if unwrapped and path not in _noted:
        _noted.add(path)
        print(f"note: checkpoint {path}: unwrapped {unwrapped}", file=sys.stderr)
    return state, None


def state_mismatch(expected, state):
    """How a state dict differs from the `expected` one (keys, then shapes), as one line; None if it fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        return f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}"
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        return f"{len(wrong)} tensors have the wrong shape: {'; '.join(wrong[:3])}"
    return None


def load_state(model, state_dict, path):
    """Strict load with a one-line error naming the first mismatches."""
    problem = state_mismatch(model.state_dict(), state_dict)
    if problem:
        raise InputError(f"checkpoint {path} does not fit the model: {problem} "
                         f"(check --len_feature, --ratios, --kernel_sizes)")
    model.load_state_dict(state_dict, strict=True)


def rng_states():
    """The python, numpy, torch (and CUDA) random states as tensors and plain lists, for a checkpoint."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": [random.getstate()[0], list(random.getstate()[1])],
              "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    """Restore what rng_states() returned."""
    version, internal = states["python"]
    random.setstate((version, tuple(internal), None))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def git_commit():
    """The source tree's git commit (with '-dirty' when it has uncommitted changes), or None."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None
