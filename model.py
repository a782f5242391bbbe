"""The networks: BN-WVAD (its anomaly score and the snippet selection used by its loss) and
UR-DMU (the dual-memory baseline BN-WVAD is compared with, sharing its embedding and enhancer).

Pure nn.Modules (no files, no devices, no argparse). Parameter and buffer names follow the
authors' releases, so their checkpoints load with `load_state_dict(..., strict=True)`, and
`config_from_state_dict` tells from a bare state dict which model it holds and how it was built.
Mode comes from `self.training`:
  eval:  model(x) -> anomaly scores (B, T), x of shape (B, T, D) or (B, N, T, D) with N crops
  train: model(x) -> dict with what the model's loss needs (BN-WVAD: the classifier scores and,
         per BatchNorm layer, the selected (positive, negative) feature pairs and the running
         statistics the loss measures them by; UR-DMU: see URDMU.forward).
The losses themselves live in train.py. See docs/method.md for the
methods stated exactly.
"""
import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HIDDEN = 512          # width of the embedding and the enhancer
HEADS = 4             # attention heads
HEAD_DIM = 128        # width of one head (inner width 512)
DEPTH = 2             # enhancer layers
LOCAL_REACH = 64      # the local kernel exp(-d / e) is below 6e-11 beyond this distance
LOCAL_BLOCK = 256     # output snippets per block of the banded local product


def local_kernel(distance):
    """exp(-|i - j| / e), computed in float32 as the release does."""
    return torch.exp(-distance.abs().float() / torch.exp(torch.tensor(1.0)))


def dense_local_matrix(T, device=None):
    """The release's local attention matrix P (T, T): P[i, j] = A[i, j] / s[j], s = A.sum(-1).

    Reference path only (O(T^2) memory): the model uses `banded_local_mix`.
    Note the release divides by the row-sum vector broadcast along the last axis, i.e. column j
    is divided by s[j]; A is symmetric, so this is A diag(1/s).
    """
    t = torch.arange(T, device=device)
    A = local_kernel(t[None, :] - t[:, None])  # (T, T)
    return A / A.sum(-1)


def banded_local_mix(x, reach=LOCAL_REACH, block=LOCAL_BLOCK):
    """y[i] = sum_j A[i, j] x[j] over time, with A[i, j] = exp(-|i - j| / e) cut at |i - j| <= reach.

    x: (B, T, C) -> (B, T, C), in O(T) time and memory: the output is computed in blocks of
    `block` snippets (all of T when shorter), each a small matrix product with its window of
    block + 2 * reach inputs. Sizes derived from T use torch's symbolic arithmetic (sym_min, floor
    division) and the windows are gathered, not unfolded, so that a graph traced at one T
    (torch.onnx, torch.export) computes the same at every T.
    """
    B, T, C = x.shape
    L = torch.sym_min(block, T)
    nb = (T + L - 1) // L                                          # blocks: ceil(T / L)
    W = L + 2 * reach
    # zero padding outside [0, T) makes the truncated sums exact sums over the video
    xp = F.pad(x, (0, 0, reach, nb * L - T + reach))              # (B, nb*L + 2*reach, C)
    starts = torch.arange(nb, device=x.device)[:, None] * L       # (nb, 1): each window's first input
    windows = xp.index_select(1, (starts + torch.arange(W, device=x.device)).reshape(-1))
    windows = windows.view(B, nb, W, C).transpose(2, 3)           # (B, nb, C, W)
    offs = torch.arange(L, device=x.device)[:, None] + reach - torch.arange(W, device=x.device)
    K = local_kernel(offs).to(x.dtype)                             # (L, W)
    K = K.masked_fill(offs.abs() > reach, 0.0)
    y = torch.matmul(windows, K.t())                               # (B, nb, C, L)
    return y.transpose(2, 3).reshape(B, nb * L, C)[:, :T]          # (B, T, C)


def local_attention(g, mask=None):
    """The local branch P g for g (B, T, C), without building P: (A diag(1/s)) g = A (g / s).

    mask (B, T) bool marks the valid snippets of zero-padded rows: each row then gets the P of its
    own length (s summed over its valid snippets only, padded inputs left out).
    """
    if mask is None:
        T = g.shape[1]
        ones = torch.ones(1, T, 1, dtype=g.dtype, device=g.device)
        s = banded_local_mix(ones)                                 # (1, T, 1): row sums of A
        return banded_local_mix(g / s)
    m = mask[..., None].to(g.dtype)                                # (B, T, 1)
    s = banded_local_mix(m)                                        # (B, T, 1); >= 1 where valid
    # padded snippets far from valid ones have s = 0: clamping keeps 0/0 out of the products
    return banded_local_mix(g * (m / s.clamp_min(1.0)))


class Embedding(nn.Module):
    """Conv1d over time, D -> H, kernel 3, then ReLU. (B, T, D) -> (B, T, H)."""

    def __init__(self, len_feature, hidden=HIDDEN):
        super().__init__()
        self.conv_1 = nn.Sequential(nn.Conv1d(len_feature, hidden, 3, stride=1, padding=1), nn.ReLU())

    def forward(self, x):
        return self.conv_1(x.transpose(1, 2)).transpose(1, 2)


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__()
        # index layout (0: Linear, 3: Linear) is the release's key layout
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    """Dual attention: per head, [softmax(q k^T / sqrt(d)) v | P g] on the last axis."""

    def __init__(self, dim, heads=HEADS, dim_head=HEAD_DIM, dropout=0.0):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 4, bias=False)   # q, k, v, g
        self.to_out = nn.Sequential(nn.Linear(2 * inner, dim), nn.Dropout(dropout))

    def forward(self, x, mask=None):
        """mask (B, T) bool, optional: valid snippets of zero-padded rows; padded keys are ignored."""
        B, T, _ = x.shape
        h = self.heads
        q, k, v, g = self.to_qkv(x).chunk(4, dim=-1)            # each (B, T, h*d)
        q, k, v = (t.view(B, T, h, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        keys = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T)
        glob = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)  # (B, h, T, d)
        glob = glob.transpose(1, 2)                              # (B, T, h, d)
        # P does not depend on the head, so the local branch runs on all heads at once
        loc = local_attention(g, mask).view(B, T, h, -1)         # (B, T, h, d)
        out = torch.cat([glob, loc], dim=-1).reshape(B, T, -1)   # (B, T, h*2d)
        return self.to_out(out)


class Transformer(nn.Module):
    """Pre-norm residual layers: x = Attn(LN(x)) + x; x = FF(LN(x)) + x."""

    def __init__(self, dim=HIDDEN, depth=DEPTH, heads=HEADS, dim_head=HEAD_DIM, mlp_dim=HIDDEN, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head, dropout)),
                           PreNorm(dim, FeedForward(dim, mlp_dim, dropout))])
            for _ in range(depth)])

    def forward(self, x, mask=None):
        for attn, ff in self.layers:
            x = attn(x, mask=mask) + x
            x = ff(x) + x
        return x


class NormalHead(nn.Module):
    """Conv -> BN -> ReLU -> Conv -> BN -> ReLU -> Conv -> sigmoid, channels first.

    Returns the two pre-BatchNorm features (f1, f2) and the classifier score s (B, T).
    """

    def __init__(self, in_channels=HIDDEN, ratios=(16, 32), kernel_sizes=(1, 1, 1)):
        super().__init__()
        r1, r2 = ratios
        k1, k2, k3 = kernel_sizes
        c1, c2 = in_channels // r1, in_channels // r2
        self.conv1 = nn.Conv1d(in_channels, c1, k1, 1, k1 // 2)
        self.bn1 = nn.BatchNorm1d(c1)
        self.conv2 = nn.Conv1d(c1, c2, k2, 1, k2 // 2)
        self.bn2 = nn.BatchNorm1d(c2)
        self.conv3 = nn.Conv1d(c2, 1, k3, 1, k3 // 2)

    @property
    def bns(self):
        return [self.bn1, self.bn2]

    def forward(self, x, mask=None):                             # x: (B, H, T), mask (B, T) or None
        # a padded row's convolutions (kernel > 1) must see zeros beyond its end, as padding does
        pad = (lambda t: t) if mask is None else (lambda t: t * mask[:, None, :].to(t.dtype))
        f1 = self.conv1(pad(x))                                  # (B, H/r1, T)
        f2 = self.conv2(pad(F.relu(self.bn1(f1))))              # (B, H/r2, T)
        s = torch.sigmoid(self.conv3(pad(F.relu(self.bn2(f2)))))  # (B, 1, T)
        return (f1, f2), s.squeeze(1)


def divergence(feats, mean, var):
    """DFM: sqrt(sum_c (f[c] - mu[c])^2 / var[c]) per snippet, no eps. feats (B, C, T) -> (B, T)."""
    return torch.sqrt(torch.sum((feats - mean[None, :, None]) ** 2 / var[None, :, None], dim=1))


def select_pairs(feats, dist, ratio_sample, ratio_batch):
    """Sample- and batch-level selection of one BN layer (docs/method.md, BN-WVAD "Selection").

    feats: (B, T, C) crop-averaged features, dist: (B, T); rows [normal ; abnormal], B/2 each.
    Returns (normal_sel, abnormal_sel), each (M, C): the selected normal snippets (the triplet's
    positives, pulled towards the BN mean) and abnormal snippets (its negatives, pushed away); normal
    snippet i is paired with abnormal snippet i. The training output keeps them as "normal_sel" and
    "abnormal_sel".
    """
    B, T, C = feats.shape
    half = B // 2
    k_sample = int(T * ratio_sample)
    k_batch = int(half * T * ratio_batch)
    nor_dist, abn_dist = dist[:half], dist[half:]                # (B/2, T)
    nor_feats, abn_feats = feats[:half], feats[half:]            # (B/2, T, C)

    by_sample = torch.zeros_like(abn_dist, dtype=torch.bool)
    by_sample.scatter_(1, torch.topk(abn_dist, k_sample, dim=-1).indices, True)
    by_batch = torch.zeros(half * T, dtype=torch.bool, device=dist.device)
    by_batch.scatter_(0, torch.topk(abn_dist.reshape(-1), k_batch).indices, True)
    chosen = by_sample.reshape(-1) | by_batch                    # (B/2 * T,), video-major
    abnormal_sel = abn_feats.reshape(-1, C)[chosen]              # (M, C)

    M = abnormal_sel.shape[0]
    # the release takes M // (B/2) + 1 per normal video; capped at T, which keeps the result
    # identical (M <= B/2 * T) where the release's topk would fail
    k_normal = min(M // half + 1, T)
    top = torch.topk(nor_dist, k_normal, dim=-1).indices         # (B/2, k), descending
    normal_sel = torch.gather(nor_feats, 1, top[..., None].expand(-1, -1, C))  # (B/2, k, C)
    normal_sel = normal_sel.transpose(0, 1).reshape(-1, C)[:M]  # rank-major, (M, C)
    return normal_sel, abnormal_sel


def fold_crops(x, mask, training):
    """Checks the optional mask and folds crops into the batch: x (B, T, D) or (B, N, T, D) -> (x, N)
    with x (B*N, T, D).

    mask (B, T) bool is for 3-D input in evaluation mode; x is then zeroed outside it, since the
    embedding's kernel-3 convolution must see zeros beyond a row's end.
    """
    if mask is not None:
        if x.dim() != 3 or training:
            raise ValueError("mask is for 3-D input in evaluation mode")
        x = x * mask[..., None].to(x.dtype)
    if x.dim() == 4:
        B, N, T, D = x.shape
        return x.reshape(B * N, T, D), N
    return x, 1


class BNWVAD(nn.Module):
    """BN-WVAD (Zhou et al., arXiv 2311.15367) as its authors' release computes it (docs/method.md):
    embedding, enhancer, normal head; anomaly score (d_1 + d_2) * s."""

    def __init__(self, len_feature=1024, ratios=(16, 32), kernel_sizes=(1, 1, 1), ratio_sample=0.2,
                 ratio_batch=0.4):
        super().__init__()
        self.len_feature = len_feature
        self.ratios = tuple(ratios)
        self.kernel_sizes = tuple(kernel_sizes)
        self.ratio_sample = ratio_sample
        self.ratio_batch = ratio_batch
        self.embedding = Embedding(len_feature, HIDDEN)
        self.selfatt = Transformer(HIDDEN, DEPTH, HEADS, HEAD_DIM, HIDDEN)
        self.normal_head = NormalHead(HIDDEN, self.ratios, self.kernel_sizes)

    def config(self):
        """Constructor arguments as plain types (stored in checkpoints)."""
        return dict(len_feature=self.len_feature, ratios=list(self.ratios), kernel_sizes=list(self.kernel_sizes),
                    ratio_sample=self.ratio_sample, ratio_batch=self.ratio_batch)

    def forward(self, x, mask=None):
        """mask (B, T) bool, optional, 3-D evaluation input only: rows are zero-padded to a common T
        and mask marks their valid snippets; each row's scores on its valid snippets are those of
        the row alone (padding and packing change nothing)."""
        x, N = fold_crops(x, mask, self.training)                 # (B*N, T, D)

        def crop_mean(t):                                         # (B*N, ...) -> (B, ...)
            return t.view(-1, N, *t.shape[1:]).mean(1)

        h = self.selfatt(self.embedding(x), mask)                 # (B*N, T, H)
        feats, s = self.normal_head(h.transpose(1, 2), mask)      # f_l (B*N, C_l, T), s (B*N, T)
        # in training mode the BN layers have just updated their running statistics: the
        # distances and the loss anchors use the updated ones, as the release does
        bns = self.normal_head.bns
        dists = [crop_mean(divergence(f, bn.running_mean, bn.running_var)) for f, bn in zip(feats, bns)]
        cls_scores = crop_mean(s)                                 # the classifier's s, (B, T)

        if not self.training:
            return sum(dists) * cls_scores                        # the anomaly score (d_1 + d_2) * s, (B, T)

        # training: "cls_scores" are the classifier's s (the normal loss's input), not the anomaly score
        layers = []
        for f, d, bn in zip(feats, dists, bns):
            normal_sel, abnormal_sel = select_pairs(crop_mean(f).transpose(1, 2), d, self.ratio_sample,
                                                    self.ratio_batch)
            layers.append(dict(normal_sel=normal_sel, abnormal_sel=abnormal_sel, mean=bn.running_mean,
                               var=bn.running_var))
        return dict(cls_scores=cls_scores, layers=layers)


class MemoryUnit(nn.Module):
    """K learned memory slots M (K, H) read by sigmoid attention (docs/method.md, UR-DMU 2; the release's
    Memory_Unit, initialised uniform in +-1/sqrt(H)).

    x (R, T, H) -> (temporal (R, T), augmented (R, T, H)) with a = sigmoid(x M^T / sqrt(H)) (R, T, K),
    temporal the mean of each snippet's top K // 16 + 1 slot attentions, augmented = a M.
    """

    def __init__(self, slots, dim=HIDDEN):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.memory_block = nn.Parameter(torch.empty(slots, dim).uniform_(-bound, bound))

    def forward(self, x):
        K, H = self.memory_block.shape
        a = torch.sigmoid(torch.matmul(x, self.memory_block.t()) / math.sqrt(H))   # (R, T, K)
        temporal = torch.topk(a, K // 16 + 1, dim=-1).values.mean(-1)             # (R, T)
        return temporal, torch.matmul(a, self.memory_block)                        # (R, T, H)


class ScoreHead(nn.Module):
    """Linear(2H, 128) -> ReLU -> Linear(128, 1) -> sigmoid, per snippet: (R, T, 2H) -> (R, T).

    The release's ADCLS_head; `mlp.0` and `mlp.2` are its key names.
    """

    def __init__(self, in_dim=2 * HIDDEN, hidden=128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, x):
        return self.mlp(x).squeeze(-1)


def top_mean(feats, index):
    """Mean over time of the snippets at `index`: feats (R, T, C), index (R, k) -> (R, C)."""
    return torch.gather(feats, 1, index[..., None].expand(-1, -1, feats.shape[-1])).mean(1)


class URDMU(nn.Module):
    """UR-DMU (Zhou, Yu, Yang, AAAI 2023) as its authors' release computes it (docs/method.md).

    BN-WVAD's embedding and enhancer (with dropout), an anomaly memory (`Amemory`, a_nums slots)
    and a normal memory (`Nmemory`, n_nums slots), a Gaussian encoder of the memory read-outs
    (`encoder_mu`, `encoder_var`) and a snippet classifier on [enhanced | encoded read-outs].
    """

    def __init__(self, len_feature=1024, a_nums=60, n_nums=60, dropout=0.5):
        super().__init__()
        self.len_feature = len_feature
        self.a_nums = a_nums
        self.n_nums = n_nums
        self.dropout = dropout
        # definition order as in the release, so parameters() lists them in its order
        self.embedding = Embedding(len_feature, HIDDEN)
        self.cls_head = ScoreHead(2 * HIDDEN)
        self.Amemory = MemoryUnit(a_nums, HIDDEN)
        self.Nmemory = MemoryUnit(n_nums, HIDDEN)
        self.selfatt = Transformer(HIDDEN, DEPTH, HEADS, HEAD_DIM, HIDDEN, dropout)
        self.encoder_mu = nn.Sequential(nn.Linear(HIDDEN, HIDDEN))
        self.encoder_var = nn.Sequential(nn.Linear(HIDDEN, HIDDEN))

    def config(self):
        """Constructor arguments as plain types (stored in checkpoints)."""
        return dict(len_feature=self.len_feature, a_nums=self.a_nums, n_nums=self.n_nums, dropout=self.dropout)

    def forward(self, x, mask=None):
        """x (B, T, D) or (B, N, T, D) with N crops.

        eval:  -> scores (B, T) in [0, 1]: classifier([h | mu(A_aug(h)) + mu(N_aug(h))]) with h the
               enhanced features, averaged over crops. mask (B, T) bool, optional, 3-D input only:
               rows zero-padded to a common T, each row's scores on its valid snippets are those of
               the row alone.
        train: rows [B/2 normal ; B/2 abnormal] -> dict (docs/method.md, UR-DMU "Training forward"), k = T // 16 + 1:
               scores (B, T) classifier scores, crop-averaged;
               A_att, N_Aatt (B/2, T) the anomaly / normal memory's attention on the abnormal videos,
               A_Natt, N_att (B/2, T) the same on the normal videos, each crop-averaged;
               anchor, positive, negative (B/2, H) triplet features: the mean of the top-k snippets
               of normal videos by N_att, of abnormal videos by N_Aatt and by A_att;
               mu, logvar (B*N/2, T, H) the encoder of the normal memory's read-out of normal rows;
               anchor_new, negative_new (B/2, H) the sampled normal read-out at the anchor snippets
               and the encoded anomaly read-out at the negative snippets.
        Random numbers are drawn in the release's order: the enhancer's dropout masks, then the
        reparameterisation noise.
        """
        x, N = fold_crops(x, mask, self.training)                 # (B*N, T, D)
        T = x.shape[1]

        def crop_mean(t):                                         # (B*N, ...) -> (B, ...)
            return t.view(-1, N, *t.shape[1:]).mean(1)

        h = self.selfatt(self.embedding(x), mask)                 # (B*N, T, H)
        if not self.training:
            _, a_aug = self.Amemory(h)                            # (B*N, T, H)
            _, n_aug = self.Nmemory(h)
            y = torch.cat([h, self.encoder_mu(a_aug) + self.encoder_mu(n_aug)], dim=-1)  # (B*N, T, 2H)
            return crop_mean(self.cls_head(y))

        half = x.shape[0] // 2
        normal, abnormal = h[:half], h[half:]                     # (B*N/2, T, H) each
        A_att, A_aug = self.Amemory(abnormal)                     # (B*N/2, T), (B*N/2, T, H)
        N_Aatt, N_Aaug = self.Nmemory(abnormal)
        A_Natt, A_Naug = self.Amemory(normal)
        N_att, N_aug = self.Nmemory(normal)

        k = T // 16 + 1
        i_A = torch.topk(A_att, k, dim=-1).indices                # (B*N/2, k)
        i_N = torch.topk(N_att, k, dim=-1).indices
        i_P = torch.topk(N_Aatt, k, dim=-1).indices

        mu, logvar = self.encoder_mu(N_aug), self.encoder_var(N_aug)   # (B*N/2, T, H)
        std = torch.exp(logvar).sqrt()                            # the release's sqrt(exp), not exp(logvar / 2)
        N_new = mu + torch.randn_like(std) * std
        A_mu = self.encoder_mu(A_aug)
        read_out = torch.cat([N_new + self.encoder_mu(A_Naug), A_mu + self.encoder_mu(N_Aaug)], dim=0)
        y = torch.cat([h, read_out], dim=-1)                      # (B*N, T, 2H)
        return dict(cls_scores=crop_mean(self.cls_head(y)),
                    A_att=crop_mean(A_att), N_Aatt=crop_mean(N_Aatt),
                    A_Natt=crop_mean(A_Natt), N_att=crop_mean(N_att),
                    anchor=crop_mean(top_mean(normal, i_N)), positive=crop_mean(top_mean(abnormal, i_P)),
                    negative=crop_mean(top_mean(abnormal, i_A)),
                    mu=mu, logvar=logvar,
                    anchor_new=crop_mean(top_mean(N_new, i_N)), negative_new=crop_mean(top_mean(A_mu, i_A)))


MODELS = {"bnwvad": BNWVAD, "urdmu": URDMU}   # the name stored in checkpoints -> the class


def model_name(model):
    """The MODELS name of a model (also of a torch.compile'd one)."""
    model = getattr(model, "_orig_mod", model)
    return next(name for name, cls in MODELS.items() if isinstance(model, cls))


def config_from_state_dict(state):
    """A bare state dict (as the releases save) -> (model name, constructor config) from its keys
    and tensor shapes; settings that shapes do not determine take the constructor's defaults.

    bnwvad: len_feature from the embedding's conv weight (H, D, 3), ratios H // (out channels of
            normal_head.conv1 / conv2), kernel_sizes the last dim of conv1..3's weights.
    urdmu:  len_feature likewise, a_nums / n_nums the slots of Amemory / Nmemory.
    Raises ValueError (one line) when the keys are neither model's or the shapes fit no config.
    """
    name = next((n for n, cls in MODELS.items() if set(state) == set(_template(cls))), None)
    if name is None:
        examples = ", ".join(f"{n} (e.g. {_signature_key(cls)!r})" for n, cls in MODELS.items())
        raise ValueError(f"not a known model's state dict: expected the keys of one of {examples}; "
                         f"got {len(state)} keys, e.g. {sorted(state)[:3]}")
    len_feature = state["embedding.conv_1.0.weight"].shape[1]
    if name == "bnwvad":
        conv = [state[f"normal_head.conv{i}.weight"].shape for i in (1, 2, 3)]   # (out, in, kernel) each
        shaped = dict(len_feature=len_feature, ratios=[HIDDEN // conv[0][0], HIDDEN // conv[1][0]],
                      kernel_sizes=[c[-1] for c in conv])
    else:
        shaped = dict(len_feature=len_feature, a_nums=state["Amemory.memory_block"].shape[0],
                      n_nums=state["Nmemory.memory_block"].shape[0])
    cls = MODELS[name]
    config = {k: p.default for k, p in inspect.signature(cls).parameters.items()} | shaped
    expected = _template(cls, **config)
    wrong = [f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"a {name} state dict whose shapes fit no {name} config: {'; '.join(wrong[:3])}")
    return name, {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _template(cls, **config):
    """The state dict of cls(**config) on the meta device: names and shapes, no memory."""
    with torch.device("meta"):
        return cls(**config).state_dict()


def _signature_key(cls):
    """A key that only cls's state dict has (to name it in errors)."""
    others = set().union(*(_template(c) for c in MODELS.values() if c is not cls))
    return next(k for k in _template(cls) if k not in others)
