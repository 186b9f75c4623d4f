"""Model surface: official methods, shapes, fused attention, position embeddings, arch table."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dino_models import DINOHead, WeightNormLinear
from dino_models.archs import SHORT_NAMES, resolve_arch, valid_names
from tests.conftest import tiny_vit


@pytest.fixture(scope="module")
def model():
    return tiny_vit(depth=2)


@pytest.mark.parametrize("h,w", [(224, 224), (96, 96), (64, 160), (160, 64)])
def test_shapes_of_every_public_method(model, h, w):
    x = torch.randn(2, 3, h, w)
    n = (h // 16) * (w // 16)
    with torch.no_grad():
        assert model(x).shape == (2, 192)
        assert model.get_last_selfattention(x).shape == (2, 3, n + 1, n + 1)
        layers = model.get_intermediate_layers(x, n=2)
        assert len(layers) == 2 and layers[0].shape == (2, n + 1, 192)
        cls, patch, attn = model.forward_features_and_attention(x)
        assert cls.shape == (2, 192) and patch.shape == (2, n, 192) and attn.shape == (2, 3, n)
        torch.testing.assert_close(cls, model(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(patch, layers[-1][:, 1:], atol=1e-5, rtol=0)
        torch.testing.assert_close(attn, model.get_last_selfattention(x)[:, :, 0, 1:],
                                   atol=1e-6, rtol=0)


def test_precomputed_pos_embed_gives_same_outputs(model):
    x = torch.randn(1, 3, 64, 160)
    pe = model.pos_embed_for_size(64, 160)
    assert pe.shape == (1, 1 + 4 * 10, 192)
    with torch.no_grad():
        a = model.forward_cls_and_attention(x)
        b = model.forward_cls_and_attention(x, pos_embed=pe)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=0, rtol=0)


def test_stored_grid_size_is_used_unchanged(model):
    assert model.pos_embed_for_size(224, 224) is model.pos_embed


def test_official_interpolation_uses_scale_factor_with_offset(model):
    # A different (size=) interpolation gives measurably different embeddings: the +0.1 matters.
    pe = model.pos_embed_for_size(480, 640)[:, 1:]
    grid = model.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    by_size = F.interpolate(grid, size=(30, 40), mode="bicubic").permute(0, 2, 3, 1).reshape(
        1, 1200, -1)
    assert (pe - by_size).abs().max() > 1e-4


def test_input_not_multiple_of_patch_is_rejected(model):
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model(torch.randn(1, 3, 100, 96))


def test_fused_attention_is_used_in_blocks(model):
    assert all(blk.attn.fused_attn for blk in model.blocks)


def test_drop_path_follows_official_linear_rule():
    m = resolve_arch("vit_t16").build(depth=4, drop_path_rate=0.3)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_dino_head_shapes_and_frozen_norm():
    head = DINOHead(192, 1000, norm_last_layer=True)
    assert head(torch.randn(4, 192)).shape == (4, 1000)
    assert not head.last_layer.weight_g.requires_grad
    assert set(head.state_dict()) >= {"last_layer.weight_g", "last_layer.weight_v"}
    assert DINOHead(192, 10, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_weight_norm_linear_matches_torch_weight_norm():
    ref = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(8, 5, bias=False))
    ours = WeightNormLinear(8, 5)
    ours.weight_v.data.copy_(ref.parametrizations.weight.original1)
    ours.weight_g.data.copy_(ref.parametrizations.weight.original0)
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("name,family,patch", [("vit_s8", "vit_small", 8),
                                               ("vit_b16", "vit_base", 16),
                                               ("vit_t16", "vit_tiny", 16)])
def test_short_names(name, family, patch):
    arch = resolve_arch(name)
    assert (arch.family.name, arch.patch_size, arch.short_name) == (family, patch, name)


def test_official_names_take_a_patch_size():
    assert resolve_arch("vit_small", 8).short_name == "vit_s8"
    assert resolve_arch("vit_base").patch_size == 16


def test_required_short_names_exist():
    assert {"vit_t16", "vit_s16", "vit_s8", "vit_b16", "vit_b8"} <= set(SHORT_NAMES)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError) as e:
        resolve_arch("vit_huge")
    assert all(n in str(e.value) for n in valid_names())


def test_contradicting_patch_size_is_an_error():
    with pytest.raises(ValueError, match="patch size 8"):
        resolve_arch("vit_s8", 16)


def test_official_signature_builders():
    from dino_models import vit_small
    m = vit_small(patch_size=8, drop_path_rate=0.1)
    assert m.patch_size == 8 and len(m.blocks) == 12 and m.embed_dim == 384
