"""
The RGB Inception-v1 I3D network (Carreira & Zisserman, "Quo Vadis, Action Recognition?", 2017)
that produced the public 1024-d WVAD features.

The parameter names are those of the public PyTorch port, so its Kinetics checkpoint
`rgb_imagenet.pt` loads strictly, with no translation table. Padding is TensorFlow's SAME,
computed from the input size at run time, for convolutions and max pools alike (pools pad with
zeros, as the port does). Input: RGB in [-1, 1] laid out (N, 3, T, H, W); for a 16-frame
224x224 snippet the feature map before the average pool is (N, 1024, 2, 7, 7).

The port's dropout before the logits is left out: this network is only ever used frozen, in
evaluation mode, where dropout does nothing.

Its weights are loaded by weights.load_i3d (the port's state dict, or DeepMind's Kinetics-400 checkpoint).
"""

import torch
import torch.nn.functional as F
from torch import nn


# (name, input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels of each branch's unit)
MIXED = {
    'Mixed_3b': (192, (64, 96, 128, 16, 32, 32)),
    'Mixed_3c': (256, (128, 128, 192, 32, 96, 64)),
    'Mixed_4b': (480, (192, 96, 208, 16, 48, 64)),
    'Mixed_4c': (512, (160, 112, 224, 24, 64, 64)),
    'Mixed_4d': (512, (128, 128, 256, 24, 64, 64)),
    'Mixed_4e': (512, (112, 144, 288, 32, 64, 64)),
    'Mixed_4f': (528, (256, 160, 320, 32, 128, 128)),
    'Mixed_5b': (832, (256, 160, 320, 32, 128, 128)),
    'Mixed_5c': (832, (384, 192, 384, 48, 128, 128)),
}


def same_padding(size, kernel, stride):
    """(before, after) padding along one axis so that a strided window matches TensorFlow's SAME."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def same_pads(x, kernel_size, stride):
    """[(before, after)] SAME padding of the last three axes (T, H, W) of `x` for the given window."""
    return [same_padding(size, kernel, step) for size, kernel, step in zip(x.shape[-3:], kernel_size, stride)]


def pad_same(x, pads):
    """Zero-pad the last three axes (T, H, W) of `x` by `pads` (same_pads); `x` itself when all are 0."""
    flat = [p for before_after in reversed(pads) for p in before_after]  # F.pad wants the last axis first
    return F.pad(x, flat) if any(flat) else x


def symmetric(pads):
    """The per-axis padding when every axis pads as much before as after (None otherwise): a
    convolution or pool can then pad itself, without a padded copy of its input."""
    return [before for before, after in pads] if all(before == after for before, after in pads) else None


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm3d and ReLU; the logits unit has a bias and neither."""

    def __init__(self, dim_in, dim_out, kernel_size=(1, 1, 1), stride=(1, 1, 1), norm_and_relu=True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv3d = nn.Conv3d(dim_in, dim_out, kernel_size, stride, bias=not norm_and_relu)
        self.bn = nn.BatchNorm3d(dim_out, eps=1e-3, momentum=0.01) if norm_and_relu else None

    def forward(self, x):
        pads = same_pads(x, self.kernel_size, self.stride)
        inside = symmetric(pads)    # every stride-1 convolution here (odd kernels); the same zeros, no copy
        if inside is not None:
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, inside)
        else:                       # e.g. Conv3d_1a's 7x7x7 stride 2 on even sizes pads (2, 3)
            x = self.conv3d(pad_same(x, pads))
        return F.relu(self.bn(x)) if self.bn is not None else x


class MaxPool3dSame(nn.Module):
    """Max pool over (T, H, W) with SAME zero padding; no parameters."""

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool3d(pad_same(x, same_pads(x, self.kernel_size, self.stride)), self.kernel_size, self.stride)


class Mixed(nn.Module):
    """Inception module: four parallel branches concatenated along channels, sizes kept."""

    def __init__(self, dim_in, dims):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = dims
        self.b0 = Unit3D(dim_in, b0)
        self.b1a = Unit3D(dim_in, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(dim_in, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(dim_in, b3b)
        self.dim_out = b0 + b1b + b2b + b3b

    def forward(self, x):
        return torch.cat((
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(self.b3a(x)),
        ), dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D. `features` gives the 1024-d snippet features, `forward` the class logits."""

    dim_features = 1024

    def __init__(self, num_classes=400):
        super().__init__()
        layers = [
            ('Conv3d_1a_7x7', Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
            ('MaxPool3d_2a_3x3', MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ('Conv3d_2b_1x1', Unit3D(64, 64)),
            ('Conv3d_2c_3x3', Unit3D(64, 192, (3, 3, 3))),
            ('MaxPool3d_3a_3x3', MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            *[(name, Mixed(*MIXED[name])) for name in ('Mixed_3b', 'Mixed_3c')],
            ('MaxPool3d_4a_3x3', MaxPool3dSame((3, 3, 3), (2, 2, 2))),
            *[(name, Mixed(*MIXED[name])) for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f')],
            ('MaxPool3d_5a_2x2', MaxPool3dSame((2, 2, 2), (2, 2, 2))),
            *[(name, Mixed(*MIXED[name])) for name in ('Mixed_5b', 'Mixed_5c')],
        ]
        # top-level attributes named as in the port, so the state dict keys are theirs
        for name, layer in layers:
            self.add_module(name, layer)
        self.layer_names = [name for name, _ in layers]
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=1)
        self.logits = Unit3D(self.dim_features, num_classes, norm_and_relu=False)

    def feature_map(self, x):
        """(N, 3, T, H, W) in [-1, 1] -> (N, 1024, t, h, w) after the (2, 7, 7) average pool."""
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self.avg_pool(x)  # (N, 1024, T/8 - 1, H/32 - 6, W/32 - 6); (N, 1024, 1, 1, 1) for 16x224x224

    def features(self, x):
        """(N, 3, T, H, W) in [-1, 1] -> (N, 1024), the pooled map averaged over its remaining positions."""
        return self.feature_map(x).mean(dim=(2, 3, 4))

    def forward(self, x):
        """(N, 3, T, H, W) in [-1, 1] -> (N, num_classes) logits, averaged over the remaining positions."""
        return self.logits(self.feature_map(x)).mean(dim=(2, 3, 4))
