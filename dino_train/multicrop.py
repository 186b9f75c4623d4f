"""Student/teacher network: a backbone run once per crop resolution, then the projection head."""
from __future__ import annotations

import torch
import torch.nn as nn


class MultiCropWrapper(nn.Module):
    """``backbone`` + ``head`` over a list of crops, as the official ``utils.MultiCropWrapper``.

    Consecutive crops of the same resolution are concatenated and go through the backbone in
    one batch (2 passes for 2 global + N local crops); the head then runs once on all features.
    Parameter names (``backbone.*``, ``head.*``) are the official ones.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Crops, each (B, 3, H_i, W_i) -> head outputs (len(crops) * B, out_dim), crop-major."""
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        features = [self.backbone(torch.cat(group)) for group in resolution_groups(crops)]
        return self.head(torch.cat(features))


def resolution_groups(crops: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of consecutive crops with the same width (the official grouping key)."""
    groups: list[list[torch.Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape[-1] == crop.shape[-1]:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    return groups
