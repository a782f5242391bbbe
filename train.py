"""BN-WVAD's losses and one optimisation step.

normal loss: mean over the normal videos of the L2 norm over time of their classifier scores.
MPP loss:    per BN layer, a triplet loss with margin 1 whose anchor is the layer's running mean,
             pulling selected normal snippets towards it and pushing selected abnormal ones away,
             weighted 5 (layer 1) and 20 (layer 2).
"""
import torch

MPP_WEIGHTS = (5.0, 20.0)
MPP_MARGIN = 1.0


def normal_loss(normal_scores):
    """normal_scores: (B/2, T) -> scalar."""
    return torch.linalg.vector_norm(normal_scores, ord=2, dim=1).mean()


def mpp_loss(layers, weights=MPP_WEIGHTS, margin=MPP_MARGIN):
    """layers: the model's training output, per BN layer positives/negatives (M, C) and mean/var (C,)."""
    total = 0.0
    for layer, w in zip(layers, weights):
        pos, neg = layer["positives"], layer["negatives"]
        if pos.shape[0] == 0:   # nothing selected (videos shorter than 1 / ratio_sample snippets)
            continue
        mean, var = layer["mean"].detach(), layer["var"].detach()
        d_pos = torch.sqrt(torch.sum((pos - mean) ** 2 / var, dim=-1))  # (M,)
        d_neg = torch.sqrt(torch.sum((neg - mean) ** 2 / var, dim=-1))  # (M,)
        total = total + w * torch.clamp(d_pos - d_neg + margin, min=0).mean()
    return total


def compute_losses(out, num_normal):
    """The model's training output for a [normal ; abnormal] batch -> (total, dict of float losses)."""
    l_normal = normal_loss(out["scores"][:num_normal])
    l_mpp = mpp_loss(out["layers"])
    total = l_normal + l_mpp
    as_float = lambda t: float(t.detach()) if torch.is_tensor(t) else float(t)
    return total, dict(normal_loss=as_float(l_normal), mpp_loss=as_float(l_mpp), total_loss=as_float(total))


def train_step(model, normal, abnormal, optimizer, clip_norm=1.0, amp=False):
    """One step on a batch of normal and a batch of abnormal items, (B, T, D) or (B, N, T, D) each.

    amp: bfloat16 autocast of the forward pass and losses (CUDA; no loss scaling needed for bfloat16).
    Returns the floats normal_loss, mpp_loss, total_loss and grad_norm (before clipping).
    """
    model.train()
    batch = torch.cat([normal, abnormal], dim=0)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
        total, losses = compute_losses(model(batch), normal.shape[0])
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    losses["grad_norm"] = float(grad_norm)
    return losses
