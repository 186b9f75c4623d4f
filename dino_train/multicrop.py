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

    def forward(self, crops: list[torch.Tensor] | torch.Tensor, return_features: bool = False,
                masks: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Crops, each (B, 3, H_i, W_i) -> head outputs (len(crops) * B, out_dim), crop-major.

        ``return_features``: also return the backbone outputs (len(crops) * B, embed_dim).
        ``masks`` (n * B, N) bool over the patches of the first resolution group (the n global
        crops): also run the head on the patch tokens at the True positions and return
        ``(out, features, patch_out)``, ``patch_out`` (masks.sum(), out_dim) in mask order
        (iBOT). With ``mask_token`` (the student), those patches are hidden from the input;
        without it (the teacher), the input is whole and only the outputs are selected.
        """
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        groups = resolution_groups(crops)
        if masks is None:
            features = torch.cat([self.backbone(torch.cat(group)) for group in groups])
            out = self._head(features)
            return (out, features) if return_features else out
        hidden = masks if mask_token is not None else None
        tokens = self.backbone.forward_tokens(torch.cat(groups[0]), hidden, mask_token)
        features = torch.cat([tokens[:, 0]] + [self.backbone(torch.cat(g)) for g in groups[1:]])
        return self._head(features), features, self._head(tokens[:, 1:][masks])

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        if self.head_fp32:
            with torch.autocast(features.device.type, enabled=False):
                return self.head(features.float())
        return self.head(features)


def resolution_groups(crops: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of consecutive crops with the same width (the official grouping key)."""
    groups: list[list[torch.Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape[-1] == crop.shape[-1]:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    return groups
