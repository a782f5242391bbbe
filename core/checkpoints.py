"""A checkpoint file -> its model, for every command that scores (infer.py, stream.py, export.py, bench).

Ours is rebuilt from its stored model name and config; a release's bare state dict (BN-WVAD's
xd_best.pkl, UR-DMU's xd_trans_2022.pkl) from its keys and tensor shapes (model.config_from_state_dict),
so no configuration flag is needed. Reading itself (weights_only, the formats) is utils.read_checkpoint's.
"""
from core.features import read_record
from model import MODELS, config_from_state_dict
from utils import InputError, load_state, read_checkpoint


# the tensors whose shapes fix each architecture setting (see model.config_from_state_dict)
SHAPED_BY = {"len_feature": "embedding.conv_1.0.weight", "ratios": "normal_head.conv1.weight",
             "kernel_sizes": "normal_head.conv1.weight", "a_nums": "Amemory.memory_block",
             "n_nums": "Nmemory.memory_block"}


def load_model(path, asked=None):
    """(the checkpoint's model in eval mode, our checkpoint record or None for a bare state dict).

    `asked`: {flag: value} of flags given on the command line (model, len_feature, ratios,
    kernel_sizes, a_nums, n_nums; others are not checked): one that contradicts the checkpoint is an
    InputError naming the file, not ignored. An unreadable or unknown file is an InputError too.
    """
    state, record = read_checkpoint(path)
    if record is not None:
        name, config = record.get("model", "bnwvad"), record["model_config"]
    else:
        try:
            name, config = config_from_state_dict(state)
        except ValueError as e:
            raise InputError(f"checkpoint {path} is {e}") from None
    asked = asked or {}
    if "model" in asked and asked["model"] != name:
        raise InputError(f"checkpoint {path} holds a {name} model, but --model {asked['model']} was given")
    for key in sorted(set(asked) & set(config) & set(SHAPED_BY)):
        given, built = asked[key], config[key]
        if (list(given) if isinstance(given, (list, tuple)) else given) != built:
            raise InputError(f"checkpoint {path} was built with --{key} {built} ({SHAPED_BY[key]} has "
                             f"shape {tuple(state[SHAPED_BY[key]].shape)}), but --{key} {given} was given")
    model = MODELS[name](**config)
    load_state(model, state, path)
    return model.eval(), record


def trained_on(record):
    """What a checkpoint's training features were, from its record: 'synthetic' (the demo dataset's
    generated features, dataset.make_demo: no video behind them), 'extracted' (extract.py's I3D
    features of video; the record's meta.extraction holds their settings), or None when it is not
    known (a bare state dict; feature files without extraction records, as a dataset's published
    features come)."""
    meta = (record or {}).get("meta") or {}
    if meta.get("dataset") == "demo":
        return "synthetic"
    return "extracted" if meta.get("extraction") else None


def origin_warning(record, path, settings, what):
    """A one-line warning naming both sides when the checkpoint at `path` (its `record`) was trained
    on another kind of features than those about to be scored; None when they agree or either side
    is not known. settings: the extraction settings of the features to score (what --video and
    stream.py extract with now, or the record extract.py left beside feature files; the I3D weights
    are compared only when given, video.records.other_weights), None when not known; what: names them.
    Compared: synthetic demo features against I3D features of video; the extractor's version
    (video.records.FEATURE_VERSION: decoding or the network changed between them); the I3D weights."""
    if settings is None:
        return None
    kind = trained_on(record)
    if kind == "synthetic":
        return (f"checkpoint {path} was trained on synthetic demo features (--dataset demo: generated, not extracted "
                f"from any video), and {what} are I3D features of video: its scores on them mean nothing; train on "
                f"features of your own videos (extract.py) to score video")
    if kind != "extracted":
        return None
    trained = record["meta"]["extraction"]
    if trained.get("version") != settings.get("version"):
        return (f"checkpoint {path} was trained on features of extractor version {trained.get('version')}, and "
                f"{what} are of version {settings.get('version')} (decoding or the I3D network changed between "
                f"them): scores may be wrong; extract its training features again, or these with that version")
    if "weights" in settings:
        from video.records import other_weights
        differ = other_weights(trained.get("weights"), settings["weights"])
        if differ:
            return f"checkpoint {path} was trained on other features than {what}: {differ}"
    return None


def feature_files_warnings(record, path, videos):
    """origin_warning of each distinct kind of the feature files of `videos` against the checkpoint,
    from the extraction records extract.py left beside them (files without one are not known); each
    names the first video it applies to and how many more."""
    found = {}
    for video in videos:
        settings = (read_record(video) or {}).get("settings")
        warning = origin_warning(record, path, settings, f"the features of {video.name} ({video.paths[0]})") \
            if isinstance(settings, dict) else None
        if warning:
            key = origin_warning(record, path, settings, "these")
            found.setdefault(key, [warning, 0])[1] += 1
    return [w + (f" (and {n - 1} more videos so)" if n > 1 else "") for w, n in found.values()]
