"""DINOv3 ConvNeXt backbones with the parameter names and numerics of facebookresearch/dinov3.

The DINOv3 release distils its ViT-7B into four ConvNeXts (``dinov3_convnext_tiny`` ...
``_large``; sizes in :data:`SIZES`, from ``dinov3/models/convnext.py``). The network is the
ConvNeXt of Liu et al. 2022: a 4x4 stride-4 stem, then four stages of blocks at strides 4, 8,
16 and 32, each stage after the first entered through a LayerNorm and a 2x2 stride-2 conv. A
block is a 7x7 depthwise conv, a LayerNorm over channels, a 4x MLP with exact GELU, a per-channel
LayerScale ``gamma`` and the residual. Every LayerNorm has eps 1e-6.

What DINOv3 adds is how the backbone speaks like a ViT:

  * the "[CLS] token" is the global average of the last stage's map, and it goes through the
    final ``norm`` with the patch tokens (one LayerNorm per token, so it is ``norm(mean)``);
  * the patch tokens are the last stage's positions (B, H/32 * W/32, D), row-major, after the
    final ``norm``; there are no storage tokens and no attention;
  * ``get_intermediate_layers`` returns one entry per *stage* (four in all), normalised by
    ``norms``: Identity for stages 0-2 and the final ``norm`` for stage 3 (the official module
    holds that list, so its state dict, and the released files, also hold ``norms.3.*``, the
    same tensors as ``norm.*``).

The hub builds these models without the official ``patch_size`` resize of intermediate maps,
so none is done here. Drop path exists for training and is the identity at inference. Official
state dicts load with ``strict=True``; the transformers and timm layouts are mapped to it by
:mod:`dino_models.dinov3_convnext_checkpoint`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers import DropPath, trunc_normal_
from .vision_transformer import SinglePass

# size -> (blocks per stage, channels per stage): dinov3/models/convnext.py ``convnext_sizes``
SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}
NUM_STAGES = 4
OUTPUT_STRIDE = 32   # stem 4, then three 2x downsamplings
LAYER_NORM_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map: the official ``channels_first``
    LayerNorm (same parameters), stem and downsampling layers only.

    Written as the official formula (mean, mean squared deviation, divide by the square root)
    rather than ``F.layer_norm`` on a transposed map: the two differ by rounding, up to 1e-5
    on the unnormalised stage outputs of a ConvNeXt-Tiny, and this way the model computes the
    official numbers bit for bit. It exports as a chain of elementwise ops and reductions (over
    axis 1); in fp16, ``(x - mean) ** 2`` overflows past |x - mean| = 256, so a reduced-precision
    graph must keep these four norms in fp32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, Linear(4x), GELU, Linear, LayerScale, residual.

    Shapes (B, C, H, W) -> (B, C, H, W); the pointwise layers run channels-last as officially.
    ``layer_scale_init_value`` <= 0 builds no ``gamma`` (no released model does that).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_init_value = layer_scale_init_value
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """DINOv3 ConvNeXt backbone: ``forward`` returns the normalised pooled embedding (B, D).

    The constructor mirrors the official ``ConvNeXt`` (``in_chans``, ``depths``, ``dims``,
    ``drop_path_rate``, ``layer_scale_init_value``) plus ``layer_norm_eps`` (transformers'
    configs carry it; every release uses 1e-6). Any input of at least 32x32 pixels runs; the
    last stage has (H // 32, W // 32) positions.
    """

    family = "dinov3"
    has_attention = False
    patch_size = OUTPUT_STRIDE      # output stride of the last stage, in pixels
    num_registers = 0
    n_storage_tokens = 0            # the official name

    def __init__(self, in_chans: int = 3, depths: Sequence[int] = SIZES["tiny"][0],
                 dims: Sequence[int] = SIZES["tiny"][1], drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, layer_norm_eps: float = LAYER_NORM_EPS
                 ) -> None:
        super().__init__()
        if len(depths) != NUM_STAGES or len(dims) != NUM_STAGES:
            raise ValueError(f"depths {list(depths)} and dims {list(dims)}: expected "
                             f"{NUM_STAGES} stages each")
        self.depths, self.embed_dims = tuple(depths), tuple(dims)
        self.embed_dim = self.num_features = dims[-1]
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
            LayerNorm2d(dims[0], eps=layer_norm_eps))])
        self.downsample_layers.extend(nn.Sequential(
            LayerNorm2d(dims[i - 1], eps=layer_norm_eps),
            nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2))
            for i in range(1, NUM_STAGES))
        total = sum(depths)  # the official rule: linear from 0 to drop_path_rate over blocks
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(NUM_STAGES)]
        self.stages = nn.ModuleList(nn.Sequential(*[
            ConvNeXtBlock(dims[i], rates[starts[i] + j], layer_scale_init_value, layer_norm_eps)
            for j in range(depths[i])]) for i in range(NUM_STAGES))
        self.norm = nn.LayerNorm(dims[-1], eps=layer_norm_eps)
        # per-stage norms of get_intermediate_layers; the last one is ``norm`` itself
        self.norms = nn.ModuleList([*(nn.Identity() for _ in range(NUM_STAGES - 1)), self.norm])
        self.head = nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: truncated normal (std 0.02) conv and Linear weights,
        zero biases, LayerNorms 1 and 0, LayerScale at ``layer_scale_init_value``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, ConvNeXtBlock) and m.gamma is not None:
                nn.init.constant_(m.gamma, m.layer_scale_init_value)

    @property
    def depth(self) -> int:
        """Blocks in all stages."""
        return sum(self.depths)

    @property
    def arch(self) -> str:
        """The arch table's name for this model (see :func:`arch_name`)."""
        return arch_name(self.depths, self.embed_dims)

    def stage_maps(self, x: torch.Tensor, take: Sequence[int] = (NUM_STAGES - 1,)
                   ) -> list[torch.Tensor]:
        """Images (B, 3, H, W) -> the maps of the stages in ``take`` (ascending), stage i of
        shape (B, dims[i], H / 2**(i+2), W / 2**(i+2)); stops after the last one asked."""
        out = []
        for i in range(max(take) + 1):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in take:
                out.append(x)
        return out

    # -- official public methods ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> ``norm`` of the last stage's global average (B, D)."""
        return self.head(self.norm(self.stage_maps(x)[0].mean((-2, -1))))

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None
                         ) -> dict[str, Any]:
        """The official dictionary: ``x_norm_clstoken`` (B, D), ``x_storage_tokens`` (B, 0, D),
        ``x_norm_patchtokens`` (B, N, D), ``x_prenorm`` (B, N, D): the last stage's tokens
        before the norm (the official value holds the patches only), and ``masks``, returned
        untouched (the official ConvNeXt does not apply them either)."""
        fmap = self.stage_maps(x)[0]
        tokens = _tokens(fmap)
        x_norm = self.norm(torch.cat((fmap.mean((-2, -1)).unsqueeze(1), tokens), dim=1))
        return {"x_norm_clstoken": x_norm[:, 0], "x_storage_tokens": x_norm[:, 1:1],
                "x_norm_patchtokens": x_norm[:, 1:], "x_prenorm": tokens, "masks": masks}

    def get_intermediate_layers(self, x: torch.Tensor, n: int | Sequence[int] = 1,
                                reshape: bool = False, return_class_token: bool = False,
                                norm: bool = True) -> tuple:
        """The official method, over *stages*: patch tokens (B, N_i, C_i) of the last ``n``
        stages (or of the stages listed in ``n``), or (B, C_i, H_i, W_i) with ``reshape``;
        with ``return_class_token`` each entry is (patches, pooled (B, C_i)). ``norm`` applies
        ``norms[i]`` to both (only the last stage has one)."""
        take = list(range(NUM_STAGES - n, NUM_STAGES)) if isinstance(n, int) else sorted(n)
        if not take or not all(0 <= i < NUM_STAGES for i in take):
            raise ValueError(f"stages {n!r} asked; a ConvNeXt has stages 0..{NUM_STAGES - 1}")
        patches, pooled = [], []
        for i, fmap in zip(take, self.stage_maps(x, take)):
            cls, tokens = fmap.mean((-2, -1)), _tokens(fmap)
            if norm:
                cls, tokens = self.norms[i](cls), self.norms[i](tokens)
            if reshape:
                tokens = tokens.transpose(1, 2).reshape(fmap.shape).contiguous()
            patches.append(tokens)
            pooled.append(cls)
        if return_class_token:
            return tuple(zip(patches, pooled))
        return tuple(patches)

    # -- single pass for export and runtime -------------------------------------------------
    def forward_single_pass(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
                            patch: bool = True) -> SinglePass:
        """Images (B, 3, H, W) -> :class:`SinglePass` with ``cls`` (B, D), ``patch``
        (B, H/32 * W/32, D) row-major after the final norm (None without ``patch``) and no
        attention (``attn`` and ``attn_registers`` are None). ``pos_embed`` exists for the
        ViTs' signature; a ConvNeXt has none, so passing one is an error."""
        if pos_embed is not None:
            raise ValueError("a ConvNeXt has no position embedding; pass pos_embed=None")
        fmap = self.stage_maps(x)[0]
        cls = self.norm(fmap.mean((-2, -1)))
        return SinglePass(cls, None, None, self.norm(_tokens(fmap)) if patch else None)


def _tokens(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W, C), row-major over the grid."""
    return fmap.flatten(2).transpose(1, 2)


def arch_name(depths: Sequence[int], dims: Sequence[int]) -> str:
    """``dinov3_convnext_<size>`` for the size with these blocks and widths, else for the first
    size of these widths (a depth-reduced model), else ``dinov3_convnext_w<last width>``."""
    same = [s for s, (d, c) in SIZES.items() if c == tuple(dims)]
    exact = [s for s in same if SIZES[s][0] == tuple(depths)]
    size = (exact or same or [None])[0]
    return f"dinov3_convnext_{size}" if size else f"dinov3_convnext_w{dims[-1]}"


def build_convnext(size: str, patch_size: int = OUTPUT_STRIDE, **kwargs) -> ConvNeXt:
    """A released DINOv3 ConvNeXt (``size`` a key of :data:`SIZES`) with random weights;
    ``kwargs`` override the constructor's (e.g. ``depths`` for a shallower test model).
    ``patch_size`` is the arch table's: a ConvNeXt's output stride is always 32."""
    if patch_size != OUTPUT_STRIDE:
        raise ValueError(f"a ConvNeXt has output stride {OUTPUT_STRIDE}, not patch size "
                         f"{patch_size}")
    depths, dims = SIZES[size]
    return ConvNeXt(**{"depths": depths, "dims": dims, **kwargs})
