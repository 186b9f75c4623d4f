"""iBOT's masked-patch term: masks, the loss against a per-image loop, the masked backbone input,
and the term's place in the training step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dino_models import DINOHead, vit_tiny
from dino_train.ibot import IBOTPatchLoss
from dino_train.multicrop import MultiCropWrapper

from .test_train_step import _first_losses, _trainer


def _loss(**kw) -> IBOTPatchLoss:
    return IBOTPatchLoss(embed_dim=8, out_dim=6, warmup_teacher_temp=0.04, teacher_temp=0.07,
                         warmup_teacher_temp_epochs=3, nepochs=4, **kw)


def test_masks_hide_a_share_of_the_patches_of_a_share_of_the_images():
    torch.manual_seed(0)
    masks = _loss().sample_masks(16, 64)
    assert masks.shape == (16, 64) and masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    assert int((counts > 0).sum()) == 8  # probability 0.5
    assert counts[counts > 0].min() >= 6 and counts.max() <= 32  # ratio 0.1-0.5 of 64
    assert len(set(counts[counts > 0].tolist())) > 1  # the ratio is drawn per image
    assert (_loss(probability=1.0).sample_masks(16, 64).sum(dim=1) > 0).all()
    # tiny batches: still two masked images with one patch each (the head's batch norm)
    few = _loss(probability=0.1, ratio_range=(0.1, 0.1)).sample_masks(2, 4)
    assert few.sum(dim=1).tolist() == [1, 1]
    torch.manual_seed(0)
    assert torch.equal(_loss().sample_masks(16, 64), masks)  # torch's RNG: restored on resume


def test_patch_loss_matches_a_per_image_loop():
    torch.manual_seed(1)
    loss = _loss()
    loss.center.normal_()
    center = loss.center.clone()
    masks = torch.zeros(4, 5, dtype=torch.bool)
    masks[0, [1, 3]] = True
    masks[2, [0, 1, 2, 4]] = True  # images 1 and 3 are not masked: they count as 0
    student, teacher = torch.randn(6, 6), torch.randn(6, 6)
    epoch = 1
    temp = 0.055  # DINO's warm-up, linspace(0.04, 0.07, 3 epochs), at epoch 1

    got = loss(student, teacher, masks, epoch)

    rows = iter(range(6))
    total = 0.0
    for image in range(4):
        terms = []
        for _ in range(int(masks[image].sum())):
            j = next(rows)
            q = F.softmax((teacher[j] - center[0]) / temp, dim=-1)
            terms.append(-(q * F.log_softmax(student[j] / 0.1, dim=-1)).sum())
        if terms:
            total += sum(terms) / len(terms)
    torch.testing.assert_close(got, torch.as_tensor(total / 4, dtype=torch.float32))
    torch.testing.assert_close(loss.center, 0.9 * center + 0.1 * teacher.mean(dim=0))


def test_sinkhorn_knopp_patch_targets_keep_the_centre():
    loss = _loss(centering="sinkhorn_knopp")
    masks = torch.ones(2, 3, dtype=torch.bool)
    value = loss(torch.randn(6, 6), torch.randn(6, 6), masks, 3)
    assert torch.isfinite(value) and not loss.center.any()


@pytest.mark.parametrize("kw", [dict(probability=0.0), dict(ratio_range=(0.5, 0.2)),
                                dict(ratio_range=(0.1, 1.0)), dict(centering="mean")])
def test_invalid_settings_are_refused(kw):
    with pytest.raises(ValueError):
        _loss(**kw)


def _backbone():
    torch.manual_seed(0)
    return vit_tiny(patch_size=8, depth=2, img_size=[32]).eval()


def test_masked_patches_do_not_reach_the_backbone():
    model = _backbone()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        torch.testing.assert_close(tokens[:, 0], model(x), rtol=1e-5, atol=1e-5)
        mask = torch.zeros(2, 16, dtype=torch.bool)
        mask[:, 0] = True  # the top-left 8x8 patch
        token = torch.randn(192)
        masked = model.forward_tokens(x, mask, token)
        changed = x.clone()
        changed[:, :, :8, :8] = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(model.forward_tokens(changed, mask, token), masked)
        assert not torch.allclose(model.forward_tokens(changed), tokens)
        assert not torch.allclose(masked, tokens)


def test_wrapper_returns_the_head_at_the_masked_patches():
    backbone = _backbone()
    wrapper = MultiCropWrapper(backbone, DINOHead(192, 32)).eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    masks = torch.zeros(4, 16, dtype=torch.bool)
    masks[0, [2, 5]] = True
    masks[3, 7] = True
    with torch.no_grad():
        out, features, patch_out = wrapper(crops, masks=masks)  # the teacher's call: no token
        tokens = backbone.forward_tokens(torch.cat(crops[:2]))
        torch.testing.assert_close(patch_out, wrapper.head(tokens[:, 1:][masks]))
        torch.testing.assert_close(out, wrapper(crops), rtol=1e-5, atol=1e-5)
        assert patch_out.shape == (3, 32) and features.shape == (6, 192)
        hidden = wrapper(crops, masks=masks, mask_token=torch.zeros(192))
    assert not torch.allclose(hidden[2], patch_out)


def test_ibot_term_is_added_with_its_weight(tmp_path):
    """Same seed, so the same masks: loss(w) = DINO + w * iBOT, and the log holds the term."""
    half = _first_losses(tmp_path, "fp32", ibot_loss_weight=0.5)[0]
    t = _trainer(tmp_path, "fp32", ibot_loss_weight=1.0)
    from dino_train.step import train_step
    crops, _ = next(iter(t.loader))
    full = train_step(t, crops)
    term = t.last_terms["ibot"]
    assert term > 0
    assert full - half == pytest.approx(0.5 * term, rel=1e-4)
    assert t.ibot.mask_token.grad is not None and t.ibot.mask_token.grad.abs().sum() > 0
