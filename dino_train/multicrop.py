"""Student/teacher network: a backbone run once per crop resolution, then the projection head."""
from __future__ import annotations

import torch
import torch.nn as nn


class MultiCropWrapper(nn.Module):
    """``backbone`` + ``head`` over a list of crops, as the official ``utils.MultiCropWrapper``.

    Consecutive crops of the same resolution are concatenated and go through the backbone in
    one batch (2 passes for 2 global + N local crops); the head then runs once on all features.
    Parameter names (``backbone.*``, ``head.*``) are the official ones.

    ``head_fp32`` runs the head outside autocast. Used with bf16: its outputs are cosine
    similarities divided by the teacher temperature (0.04), and bf16's 8-bit mantissa would put
    errors of about 0.1 on those logits (fp16, the official choice, has 4x finer steps).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_fp32: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_fp32 = head_fp32

    def forward(self, crops: list[torch.Tensor] | torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Crops, each (B, 3, H_i, W_i) -> head outputs (len(crops) * B, out_dim), crop-major.

        ``return_features``: also return the backbone outputs (len(crops) * B, embed_dim).
        """
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        features = torch.cat([self.backbone(torch.cat(group)) for group in resolution_groups(crops)])
        if self.head_fp32:
            with torch.autocast(features.device.type, enabled=False):
                out = self.head(features.float())
        else:
            out = self.head(features)
        return (out, features) if return_features else out


def resolution_groups(crops: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of consecutive crops with the same width (the official grouping key)."""
    groups: list[list[torch.Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape[-1] == crop.shape[-1]:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    return groups
