"""The models' losses and one optimisation step (train_step serves both models).

BN-WVAD (docs/method.md, "Losses"):
  normal loss: mean over the normal videos of the L2 norm over time of their classifier scores.
  MPP loss:    per BN layer, a triplet loss with margin 1 whose anchor is the layer's running mean,
               pulling selected normal snippets towards it and pushing selected abnormal ones away,
               weighted 5 (layer 1) and 20 (layer 2).
UR-DMU (docs/method.md, UR-DMU "Loss"; the release's AD_Loss, with its log names), k = T // 16 + 1:
  att_loss  BCE of the mean top-k classifier score per video against its label;
  A_loss    BCE(mean top-k anomaly-memory attention of abnormal videos, 1);
  N_Aatt    BCE(mean top-k of 1 - normal-memory attention of abnormal videos, 1);
  N_loss    BCE(normal-memory attention of every normal snippet, 1);
  A_Nloss   BCE(anomaly-memory attention of every normal snippet, 0);
  triplet   triplet margin loss (margin 1) of the l2-normalised anchor, positive, negative;
  kl_loss   KL of N(mu, exp(logvar)) from N(0, 1), summed over TIME (the release's axis), averaged;
  distance  mean relu(100 - |negative_new| + |anchor_new|);
  total = att_loss + 0.1 (A_loss + N_Aatt + N_loss + A_Nloss) + 0.1 triplet + 0.001 kl_loss
          + 0.0001 distance.
"""
import torch
import torch.nn.functional as F

from model import BNWVAD, URDMU

MPP_WEIGHTS = (5.0, 20.0)
MPP_MARGIN = 1.0
URDMU_WEIGHTS = dict(memory=0.1, triplet=0.1, kl=0.001, distance=0.0001)   # the release's AD_Loss
URDMU_MARGIN = 1.0          # triplet margin
URDMU_DISTANCE = 100.0      # the margin the encoded anomaly read-out must exceed the normal one by


def as_float(t):
    """A loss (tensor or number) as a plain float, for logging."""
    return float(t.detach()) if torch.is_tensor(t) else float(t)


def normal_loss(cls_scores):
    """cls_scores: the classifier's s of the normal videos, (B/2, T) -> scalar."""
    return torch.linalg.vector_norm(cls_scores, ord=2, dim=1).mean()


def mpp_loss(layers, weights=MPP_WEIGHTS, margin=MPP_MARGIN):
    """layers: the model's training output, per BN layer the selected normal snippets ("normal_sel") and
    abnormal snippets ("abnormal_sel"), (M, C) each (model.select_pairs), and the BN layer's mean/var (C,)."""
    total = 0.0
    for layer, w in zip(layers, weights):
        normal_sel, abnormal_sel = layer["normal_sel"], layer["abnormal_sel"]
        if normal_sel.shape[0] == 0:   # nothing selected (videos shorter than 1 / ratio_sample snippets)
            continue
        mean, var = layer["mean"].detach(), layer["var"].detach()
        d_normal = torch.sqrt(torch.sum((normal_sel - mean) ** 2 / var, dim=-1))        # (M,)
        d_abnormal = torch.sqrt(torch.sum((abnormal_sel - mean) ** 2 / var, dim=-1))    # (M,)
        total = total + w * torch.clamp(d_normal - d_abnormal + margin, min=0).mean()
    return total


def bnwvad_losses(out, num_normal):
    """BN-WVAD's training output for a [normal ; abnormal] batch -> (total, dict of float losses)."""
    l_normal = normal_loss(out["cls_scores"][:num_normal])      # the classifier's s in training
    l_mpp = mpp_loss(out["layers"])
    total = l_normal + l_mpp
    return total, dict(normal_loss=as_float(l_normal), mpp_loss=as_float(l_mpp), total_loss=as_float(total))


def bce(p, target):
    """Mean binary cross-entropy of probabilities p against a constant or tensor target, in float32:
    F.binary_cross_entropy refuses to run under autocast."""
    p = p.float()
    target = torch.as_tensor(target, dtype=p.dtype, device=p.device).expand_as(p)
    with torch.autocast(p.device.type, enabled=False):
        return F.binary_cross_entropy(p, target)


def top_k_mean(x, k):
    """Mean of the k largest values over time: (B, T) -> (B,)."""
    return torch.topk(x, k, dim=-1).values.mean(-1)


def kl_loss(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) as the release computes it: summed over axis 1, which is
    TIME for (R, T, H) inputs (not the channels), then averaged. (R, T, H) -> scalar."""
    return torch.mean(-0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1))


def urdmu_losses(out, num_normal, weights=URDMU_WEIGHTS):
    """UR-DMU's training output for a [normal ; abnormal] batch -> (total, dict of float losses).

    out: URDMU's training dict (scores (B, T), memory attentions (B/2, T), triplet features
    (B/2, H), mu/logvar (B*N/2, T, H)); num_normal = B/2. Names and weights: the module docstring.
    """
    cls_scores = out["cls_scores"]                                # the classifier's scores in training, (B, T)
    B, T = cls_scores.shape
    k = T // 16 + 1
    labels = torch.cat([torch.zeros(num_normal), torch.ones(B - num_normal)]).to(cls_scores.device)
    terms = dict(
        att_loss=bce(top_k_mean(cls_scores, k), labels),
        N_Aatt=bce(top_k_mean(1 - out["N_Aatt"], k), 1.0),
        A_loss=bce(top_k_mean(out["A_att"], k), 1.0),
        N_loss=bce(out["N_att"], 1.0),
        A_Nloss=bce(out["A_Natt"], 0.0),
        triplet=F.triplet_margin_loss(F.normalize(out["anchor"], dim=-1), F.normalize(out["positive"], dim=-1),
                                      F.normalize(out["negative"], dim=-1), margin=URDMU_MARGIN, p=2),
        kl_loss=kl_loss(out["mu"], out["logvar"]),
        distance=F.relu(URDMU_DISTANCE - torch.linalg.vector_norm(out["negative_new"], dim=-1)
                        + torch.linalg.vector_norm(out["anchor_new"], dim=-1)).mean(),
    )
    memory = terms["A_loss"] + terms["N_Aatt"] + terms["N_loss"] + terms["A_Nloss"]
    total = (terms["att_loss"] + weights["memory"] * memory + weights["triplet"] * terms["triplet"]
             + weights["kl"] * terms["kl_loss"] + weights["distance"] * terms["distance"])
    losses = {name: as_float(v) for name, v in terms.items()}
    losses["total_loss"] = as_float(total)
    return total, losses


LOSSES = {BNWVAD: bnwvad_losses, URDMU: urdmu_losses}   # model class -> its loss


def train_step(model, normal, abnormal, optimizer, clip_norm=1.0, amp=False):
    """One step on a batch of normal and a batch of abnormal items, (B, T, D) or (B, N, T, D) each,
    with the loss of the model's kind (LOSSES; a torch.compile'd model counts as the model it wraps).

    clip_norm: clip the gradient norm to this (BN-WVAD's release: 1.0); None: no clipping (UR-DMU's).
    amp: bfloat16 autocast of the forward pass and losses (CUDA; no loss scaling needed for bfloat16).
    Returns the model's loss terms and total_loss as floats (BN-WVAD: normal_loss, mpp_loss; UR-DMU:
    see urdmu_losses) and grad_norm, the norm over all parameters' gradients before any clipping.
    """
    losses_of = LOSSES[type(getattr(model, "_orig_mod", model))]
    model.train()
    batch = torch.cat([normal, abnormal], dim=0)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
        total, losses = losses_of(model(batch), normal.shape[0])
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_norm is None:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    else:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    losses["grad_norm"] = float(grad_norm)
    return losses
