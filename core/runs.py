"""Where runs put their files: training's checkpoints and log (main.py, compare.py), and the output
folder of a scoring run (infer.py), with the rule that no run silently replaces another's files.
"""
import contextlib
import os
import shutil
import tempfile

from utils import WriteError, refuse_to_replace

OUTPUTS = ("metrics.json", "scores.csv", "segments.csv", "videos.csv", "roc_pr.png", "report.html", "frame_scores",
           "plots")    # what a scoring run writes into its output folder (a --video feature cache there is kept)


def run_files(dataset, model, seed, model_path, log_path):
    """Where a training run's files go: (best checkpoint, last checkpoint, log, config), named by the
    dataset, the model (BN-WVAD's names carry none, as they always did) and the seed."""
    name = dataset if model == "bnwvad" else f"{dataset}_{model}"
    return (os.path.join(model_path, f"{name}_best_{seed}.pkl"),
            os.path.join(model_path, f"{name}_last_{seed}.pkl"),
            os.path.join(log_path, f"{name}_{seed}.jsonl"),
            os.path.join(model_path, f"{name}_config_{seed}.json"))


def output_folder(output_dir, model_path, inputs, dataset, overwrite):
    """`output_dir` (--output_dir), or outputs/<checkpoint name>/<input>: '<dataset>_test', or the name of
    the first of `inputs` (the --features / --video paths; with a count when there are several). A
    folder that holds another run's outputs is refused (InputError) unless `overwrite`."""
    folder = output_dir
    if folder is None:
        if inputs:
            first = os.path.basename(os.path.normpath(inputs[0]))
            name = (os.path.splitext(first)[0] if os.path.isfile(inputs[0]) else first) or "input"
            name += f"_and_{len(inputs) - 1}_more" if len(inputs) > 1 else ""
        else:
            name = f"{dataset}_test"
        folder = os.path.join("outputs", os.path.splitext(os.path.basename(model_path))[0], name)
    refuse_to_replace([os.path.join(folder, "metrics.json")], overwrite, folder, "another --output_dir")
    return folder


@contextlib.contextmanager
def staged_outputs(folder):
    """A scoring run's outputs (OUTPUTS), written into a temporary folder inside `folder` (yielded) and
    moved into place together once every one is written: an earlier run's outputs (with --overwrite)
    are replaced then, all of them, so none is taken for this run's. A run that fails while writing (a
    full disk: utils.WriteError, naming the file by its place in `folder`) leaves `folder` as it was."""
    try:
        stage = tempfile.mkdtemp(dir=folder, prefix=".tmp-run-")
    except OSError as e:
        raise WriteError(os.path.join(folder, "metrics.json"), e) from None
    try:
        try:
            yield stage
        except WriteError as e:
            raise WriteError(os.path.join(folder, os.path.relpath(e.path, stage)), e) from None
        for name in OUTPUTS:
            new, old = os.path.join(stage, name), os.path.join(folder, name)
            if os.path.lexists(old):
                os.rename(old, os.path.join(stage, f".earlier-{name}"))     # removed with the stage
            if os.path.lexists(new):
                os.rename(new, old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
