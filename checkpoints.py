"""A checkpoint file -> its model, for every command that scores (infer.py, stream.py, export.py, bench.py).

Ours is rebuilt from its stored model name and config; a release's bare state dict (BN-WVAD's
xd_best.pkl, UR-DMU's xd_trans_2022.pkl) from its keys and tensor shapes (model.config_from_state_dict),
so no configuration flag is needed. Reading itself (weights_only, the formats) is utils.read_checkpoint's.
"""
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
