"""Seeding, device choice, checkpoint save/load, the error type for bad input, the one write path of
every output (write_file over atomic_write: a refused write is one WriteError line, never half a file)
and the one way a file name that is not UTF-8 is written (escape_name).

A checkpoint is data, never code: it is written atomically (temporary file + os.replace) and
read with torch.load(weights_only=True). Ours hold plain types:
  {"format": "bn-wvad", "model": "bnwvad" | "urdmu", "model_config": {...}, "state_dict": {...},
   "step": int, "metrics": {...}, "meta": {...}}
plus "selected_by" in main.py's best checkpoint and "resume" in its `last` one
(a checkpoint written before "model" existed holds BN-WVAD).
The authors' release saves a bare state dict; `read_checkpoint`, the one reader, accepts both, and
the state dicts other training code saves (wrapped, prefixed, with numpy and argparse metadata).
"""
import argparse
import codecs
import contextlib
import errno
import io
import json
import os
import random
import re
import shutil
import sys
import tempfile
import warnings

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
    stops, and rank 0 reports the errors of all, once each: the hook distributed.fail_current). A file
    name that is not UTF-8 is printed escaped (use_escaped_streams)."""
    use_escaped_streams()
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


NAME_ERRORS = "bnwvad-escape"     # the codec error handler that escapes names (escape_name), for text streams


def _escape_undecodable(error):
    """Codec error handler: each character UTF-8 cannot encode as text that says what it was. Python
    holds a file name's bytes that are not UTF-8 as surrogate escapes (U+DC80..U+DCFF, os.fsdecode):
    those become the bytes' \\xNN; any other lone surrogate its \\uNNNN."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                   for c in text), error.end


codecs.register_error(NAME_ERRORS, _escape_undecodable)


def escape_name(text):
    """A file name, or any text holding one, as every output and message writes it: each byte of the
    name that is not UTF-8 (b'Cr\\xe8me.mp4' on Linux, which Python reads as 'Cr\\udce8me.mp4') as the
    four characters \\xNN, so the text is valid UTF-8 and says which byte it was. UTF-8 text is
    unchanged. Text files written through write_file, and the commands' stdout and stderr
    (use_escaped_streams), escape the same way by themselves (the codec error handler NAME_ERRORS)."""
    return text.encode("utf-8", NAME_ERRORS).decode("utf-8")


def escape_names(obj):
    """escape_name of every string in a JSON-like value (dict keys included): what json_text writes."""
    if isinstance(obj, str):
        return escape_name(obj)
    if isinstance(obj, dict):
        return {escape_names(k): escape_names(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [escape_names(v) for v in obj]
    return obj


def json_text(obj, **options):
    """json.dumps of `obj` with every string escaped as escape_name escapes it (a name that is not UTF-8
    reads the same in a JSON file as in a CSV file or a message). options: json.dumps'."""
    return json.dumps(escape_names(obj), **options)


def unescape_name(text):
    """The file name escape_name wrote as `text` (its \\xNN of bytes 0x80-0xff back to those bytes, as
    os.fsdecode reads them): to find a file that an output names. A name that really holds those
    characters is found by callers trying `text` itself first."""
    raw = re.sub(rb"\\x([89a-f][0-9a-f])", lambda m: bytes([int(m.group(1), 16)]),
                 text.encode("utf-8", "surrogateescape"))
    return os.fsdecode(raw)


def named_file(folder, name):
    """The file in `folder` that an output names `name` (escaped by escape_name): the name itself when
    such a file is there, else the file whose name escape_name wrote that way."""
    path = os.path.join(folder, name)
    return path if os.path.lexists(path) else os.path.join(folder, unescape_name(name))


def use_escaped_streams():
    """Make stdout and stderr escape names as escape_name does (a name that is not UTF-8 is printed,
    never a UnicodeEncodeError); every command's entry point calls this."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors=NAME_ERRORS)


class WriteError(InputError, OSError):
    """An output the system would not let us write (a full disk, a file too large, no permission, a
    read-only file system): one line naming the file and the system's reason. Nothing half-written
    was left: the file is as it was before, or absent."""

    def __init__(self, path, error):
        self.path, self.reason = os.fspath(path), error.strerror or one_line(error)
        super().__init__(f"cannot write {escape_name(self.path)}: {self.reason}")
        self.errno = error.errno

    def __str__(self):
        return self.args[0]

    def refuses_every_file(self):
        """Whether the folder refuses any file (no permission, a read-only file system), so that a batch
        has no reason to try its next one; a full disk or a file too large may still let a smaller one in."""
        return self.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
            errno.ENAMETOOLONG}     # what the system answers a write it will not take


def _os_error(error, folder):
    """The OSError (with its errno) behind a failed write, or None when it was not the system's doing:
    the error itself, or one of REFUSALS that a writer hid (PyTorch's "unexpected pos", NumPy's "3072
    requested and 736 written") as the exception's cause or context; an OSError without an errno, or
    a RuntimeError, on a disk with no space left reads as ENOSPC."""
    if isinstance(error, OSError) and error.errno is not None:
        return error
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in REFUSALS:
            return seen
        seen = seen.__cause__ or seen.__context__
    with contextlib.suppress(OSError):
        if isinstance(error, (OSError, RuntimeError)) and os.statvfs(folder).f_bavail == 0:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _temporary_suffix(path):
    """The temporary file's suffix: the file's own name (so its type stays readable, and np.save adds
    no '.npy'), cut from the front to leave room for '.tmp-' and mkstemp's random part."""
    name = os.fsencode(os.path.basename(path))
    return os.fsdecode(name[-200:])


def atomic_write(path, write):
    """The one write path of every output (features, records, manifests, CSV, JSON, checkpoints,
    plots, pages, exported networks). write(tmp) writes the whole content to tmp, a new file in
    `path`'s folder; it is flushed to the disk (fsync; not with BNWVAD_FSYNC=0, for scratch space such
    as the test suite's) and renamed onto `path` (os.replace), so a
    crash, a full disk or Ctrl-C never leaves half a file, and an earlier file of that name stays
    as it was until the new one is whole. The temporary file is removed on any failure.

    Raises WriteError (one line: the file and the system's reason, e.g. "No space left on device")
    when the system refused the write: ENOSPC, EFBIG, EDQUOT, EACCES, EROFS, EIO and the like,
    including inside a writer that hides them (_os_error). Other errors of `write` pass unchanged.
    Prefer write_file, which hands `write` an open file and so always knows the system's reason."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=_temporary_suffix(path))
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)     # mkstemp makes the file owner-only; give it the usual mode
        if os.environ.get("BNWVAD_FSYNC") != "0":      # 0: scratch space (the test suite), speed over safety
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except Exception as e:
        cause = _os_error(e, folder)
        if cause is None or isinstance(e, WriteError):
            raise
        raise WriteError(path, cause) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


class _Sink(io.RawIOBase):
    """The file write_file hands its writer: the temporary file, written whole, keeping the first
    OSError the system raised (a writer such as torch.save may report it as something else)."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.error = raw, None

    def writable(self):
        return True

    def write(self, data):
        data = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(data):
                done += self.raw.write(data[done:])
        except OSError as e:
            self.error = self.error or e
            raise
        return done


def write_file(path, write, text=False):
    """Write `path` through atomic_write: write(f) writes the content to f, an open binary file (with
    text: a UTF-8 text file, newline='' as csv wants, that escapes names as escape_name does). The one
    way every output's bytes reach the disk; raises WriteError as atomic_write does."""
    def fill(tmp):
        with open(tmp, "wb", buffering=0) as raw:
            sink = _Sink(raw)
            try:
                if text:
                    with io.TextIOWrapper(io.BufferedWriter(sink), encoding="utf-8", errors=NAME_ERRORS,
                                          newline="") as f:     # closing it closes the sink, not raw
                        write(f)
                else:
                    write(sink)
            except Exception as e:
                if sink.error is not None and sink.error is not e:
                    raise sink.error from e
                raise
    atomic_write(path, fill)


def save_array(path, array):
    """np.save of `array` to `path` through write_file (no pickles)."""
    write_file(path, lambda f: np.save(f, array, allow_pickle=False))


def save_torch(path, obj):
    """torch.save of `obj` to `path` through write_file: a full disk is a WriteError naming the file,
    never PyTorch's "unexpected pos"."""
    write_file(path, lambda f: torch.save(obj, f))


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
    """Write a text file (UTF-8, names escaped) through write_file."""
    write_file(path, lambda f: f.write(text), text=True)


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
    save_torch(path, ckpt)


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")  # where other code keeps it
WRAPPER_PREFIXES = ("module", "_orig_mod")  # DataParallel / DistributedDataParallel, torch.compile: never our names
_noted = set()   # checkpoints whose unwrapping was already said in this process


def checkpoint_globals():
    """What torch.load(weights_only=True) may build besides tensors and plain types, for the metadata
    other training code saves beside a state dict: numpy scalars, arrays and dtypes (an 'ap' of
    numpy.float64, an 'epoch' of numpy.int64) and argparse.Namespace ('args'). Each is data: a class
    made empty and given its fields, never a function that runs. numpy 2 moved numpy.core to
    numpy._core; a file pickled under numpy 1 names the old module, admitted under that name too."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [argparse.Namespace, np.ndarray, np.dtype, *dtypes, core.multiarray.scalar, core.multiarray._reconstruct,
            (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
            (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain_text(text):
    """A library's message as plain one-line text: terminal codes removed, lines joined."""
    return " ".join(_TERMINAL_CODES.sub("", str(text)).split())


def load_failure(path, error):
    """Why torch.load(weights_only=True) could not read `path`, as the rest of one line ("... is cut
    short"), translated from torch's message (several lines, with terminal codes and advice to load
    without weights_only, which would run the file's code)."""
    text = _TERMINAL_CODES.sub("", str(error))
    blocked = re.findall(r"GLOBAL ([\w.]+)", text)
    if blocked:
        with contextlib.suppress(Exception), torch.serialization.safe_globals(checkpoint_globals()):
            blocked = torch.serialization.get_unsafe_globals_in_checkpoint(path) or blocked   # all, not the first
        hint = " (a whole pickled model: save its state_dict() instead)" if any(b.startswith("torch.nn.")
                                                                               for b in blocked) else ""
        blocked = sorted(dict.fromkeys(blocked), key=lambda b: (b.startswith("torch."), b))
        shown = ", ".join(blocked[:4]) + (f" and {len(blocked) - 4} more" if len(blocked) > 4 else "")
        return (f"holds {shown}{hint}, which is not data: a checkpoint is read as "
                f"tensors, numbers, strings, numpy scalars and arrays and argparse.Namespace, and nothing in it is "
                f"run")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "is not a readable PyTorch checkpoint: it is empty"
    if isinstance(error, EOFError) or "central directory" in text:
        return "is not a readable PyTorch checkpoint: it ends early (cut short while it was written or copied?)"
    if head[:2] != b"PK" and head[:1] != b"\x80":
        return (f"is not a readable PyTorch checkpoint: torch.save writes a zip archive or a pickle, and this file "
                f"starts {head!r}")
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand:
        return (f"is not a readable PyTorch checkpoint: its pickle uses operation {operand.group(1)}, which the "
                f"weights-only reader does not take (a pickle that torch.save did not write?)")
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    return f"is not a readable PyTorch checkpoint: {plain_text(found.group(1) if found else text.split('. ')[0])}"


def read_torch_file(path):
    """torch.load(path, weights_only=True) with checkpoint_globals admitted: data, never code. A
    file that cannot be read so is an InputError naming it and what blocked it (load_failure)."""
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(checkpoint_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch's note on a pickle protocol it did not write
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean "not a checkpoint we can read"
        raise InputError(f"checkpoint {path} {load_failure(path, e)}") from None


def is_state_dict(obj):
    """Whether `obj` is a non-empty {name: tensor} dict."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def strip_wrapper_prefixes(name):
    """'module._orig_mod.embedding.x' -> 'embedding.x': the `module.` (DataParallel,
    DistributedDataParallel) and `_orig_mod.` (torch.compile) parts wrappers add, in any order and
    any number, before the name; `_orig_mod.` also inside it (a compiled submodule)."""
    parts = name.split(".")
    while len(parts) > 1 and parts[0] in WRAPPER_PREFIXES:
        parts = parts[1:]
    return ".".join(p for p in parts[:-1] if p != "_orig_mod") + ("." if len(parts) > 1 else "") + parts[-1]


def unwrap_state_dict(obj):
    """(state dict, what was unwrapped or None) from a bare state dict or one that other training code
    wrapped: {'epoch', 'state_dict', 'optimizer', ...} (or 'model_state_dict', 'model', 'net', 'network',
    'weights', one inside another too), and/or keys prefixed by wrappers (strip_wrapper_prefixes).
    None when it is neither."""
    done = []
    if not is_state_dict(obj) and isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner, said = unwrap_state_dict(obj.get(key)) if isinstance(obj.get(key), dict) else (None, None)
            if inner is not None:
                others = sorted(str(k) for k in obj if k != key)
                done.append(f"the state dict under {key!r}" + (f" (the other keys, {others[:6]}, are ignored)"
                                                               if others else ""))
                return inner, "; ".join(done + ([said] if said else []))
        return None, None
    if not is_state_dict(obj):
        return None, None
    names = {k: strip_wrapper_prefixes(k) for k in obj}
    if len(set(names.values())) < len(names):
        return None, None
    if any(k != n for k, n in names.items()):
        obj = {names[k]: v for k, v in obj.items()}
        found = [p for p in WRAPPER_PREFIXES if any(p in k.split(".")[:-1] for k in names)]
        done.append(f"the {' and '.join(repr(p + '.') for p in found)} prefixes of the keys (a DataParallel / "
                    f"DistributedDataParallel or torch.compile model)")
    return obj, ("; ".join(done) or None)


def check_finite(state, path):
    """An InputError naming the first tensor of a state dict that holds NaN or inf values (the
    weights of a run that diverged: every score would be NaN)."""
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise InputError(f"checkpoint {path}: tensor {name} holds {bad} NaN or inf value(s) of "
                                 f"{tensor.numel()} (the training run that saved it diverged; use an earlier "
                                 f"checkpoint)")


def read_checkpoint(path):
    """The one checkpoint reader: (state_dict, our record or None).

    The file is read as data (read_torch_file: torch.load(weights_only=True) with numpy scalars and
    argparse.Namespace admitted). A state dict other training code saved is unwrapped
    (unwrap_state_dict), with a note on stderr saying what was; weights that are not finite are
    refused (check_finite); anything else is an InputError naming the file and the top-level keys
    found. Every error is one line."""
    obj = read_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        check_finite(obj["state_dict"], path)
        return obj["state_dict"], obj
    state, unwrapped = unwrap_state_dict(obj)
    if state is None:
        found = f"a dict with the top-level keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) and obj \
            else f"a {type(obj).__name__}" + (" (empty)" if isinstance(obj, dict) else "")
        raise InputError(f"{path} is neither a BN-WVAD checkpoint nor a state dict: it holds {found}, and none of "
                         f"{list(WRAPPER_KEYS)} holds a state dict")
    check_finite(state, path)
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
