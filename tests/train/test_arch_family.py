"""dino-train trains DINO ViTs; the DINOv2 and DINOv3 names of the arch table are refused in one
line."""
from __future__ import annotations

import pytest

from dino_core.errors import OptionError
from dino_train.train import TrainConfig


@pytest.mark.parametrize("arch,kind", [("dinov2_s14", "DINOv2"), ("dinov2_g14_reg", "DINOv2"),
                                       ("dinov3_s16plus", "DINOv3")])
def test_dinov2_and_dinov3_arch_names_are_refused_with_the_reason(tmp_path, arch, kind):
    with pytest.raises(OptionError, match=f"--arch {arch}: dino-train trains DINO ViTs.*{kind}"):
        TrainConfig(arch=arch, data_path=str(tmp_path), output_dir=str(tmp_path)).validate()


def test_dino_arch_names_still_resolve(tmp_path):
    cfg = TrainConfig(arch="vit_s8", data_path=str(tmp_path), output_dir=str(tmp_path))
    assert cfg.resolved_arch().short_name == "vit_s8"
