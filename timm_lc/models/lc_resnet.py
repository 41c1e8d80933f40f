"""Locally connected ResNets (Pogodin et al., NeurIPS 2021) registered in timm.

``LcResNet`` builds stages of timm's ResNet blocks (``BasicBlock`` / ``Bottleneck``, with timm's
module names) behind either the ImageNet stem (7x7 stride-2 conv + max-pool)
or the CIFAR stem (3x3 stride-1 conv, no pool), then swaps every conv, 1x1 shortcuts included,
for a ``LocallyConnected2d`` sized for ``img_size`` (``locally_connected=False`` keeps the convs:
the paper's conv baseline; ``keep_first=n`` keeps the first n convs, e.g. a conv stem).

Module and parameter names equal timm's ResNet's, so the state-dict keys of ``lc_resnet18``
are those of ``timm_lc.convert_to_lc(timm.create_model("resnet18"), (3, 224, 224))``, and a conv
checkpoint initialises an LC model exactly through ``checkpoint_filter_fn`` (kernel copied to
every position)::

    model = timm.create_model("lc_resnet18", pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id="timm/resnet18.a1_in1k"))
    # or, from a state dict in memory:
    model.load_state_dict(checkpoint_filter_fn(conv_state_dict, model))

``_hebb`` variants carry the paper's sleep-phase settings in ``pretrained_cfg["sleep"]`` and
``model.sleep_cfg`` (None for the others), for ``timm_lc.train.SleepPhase.from_model``.
"""
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    LayerType, create_classifier, get_act_layer, get_device_dtype, get_norm_layer, register_notrace_function,
    to_2tuple)
from timm.models import (
    BasicBlock, Bottleneck, build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model)
from timm.models.resnet import make_blocks

from .._timm_private import feature_take_indices
from ..layers import kernel_to_filters
from timm_lc_settings.sleep import MODEL_SLEEP, PAPER_SLEEP, SleepConfig
from ._locally_connect import locally_connect_
from ._pretrained_cfg import LcPretrainedCfg, attach_sleep_cfg, lc_pretrained_cfg

__all__ = ["LcResNet", "checkpoint_filter_fn", "PAPER_SLEEP_CFG"]

MAX_STAGES = 4
_STAGE_NAMES = tuple(f"layer{i + 1}" for i in range(MAX_STAGES))
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
_TIMM_STEM_REDUCTION = 4  # the stem reduction timm's make_blocks assumes (stride-2 conv + max-pool)

PAPER_SLEEP_CFG: Dict[str, Any] = PAPER_SLEEP.to_dict()  # the paper's sleep phase as a cfg dict


@register_notrace_function
def _check_image_size(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Clear error for an image the fixed-size LC layers were not built for (an fx leaf, scriptable)."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != height or x.shape[3] != width:
        if torch.jit.is_scripting():
            raise ValueError("input size differs from the size this locally connected model was built for")
        hints = []
        if x.dim() == 4 and x.shape[1] != channels:
            hints.append(f"in_chans={x.shape[1]} for {x.shape[1]}-channel images")
        if x.dim() != 4 or (x.shape[2], x.shape[3]) != (height, width):
            hints.append("img_size=(H, W) for another size")
        raise ValueError(
            f"this locally connected model was built for input size {(channels, height, width)} (C, H, W) and "
            f"accepts only (N, {channels}, {height}, {width}) batches, got {tuple(x.shape)}; "
            f"build it with {' and '.join(hints)}")
    return x


torch.fx.wrap("_check_image_size")  # a leaf for any fx tracer, not only timm's


def _make_stages(block: Type[nn.Module], channels: Tuple[int, ...], layers: Tuple[int, ...], inplanes: int,
                 stem_reduction: int, output_stride: int, drop_path_rate: float, **block_kwargs: Any
                 ) -> Tuple[List[Tuple[str, nn.Module]], List[Dict[str, Any]]]:
    """timm's ResNet stages (``make_blocks``) behind a stem of any reduction (CIFAR's is 1).

    ``make_blocks`` counts strides from the ImageNet stem's 4: ``output_stride`` goes to it on that
    scale and the feature reductions come back on ours (exact: both are the stem reduction times a
    power of two).
    """
    stages, feature_info = make_blocks(
        (block,) * len(layers), channels, layers, inplanes,
        output_stride=output_stride * _TIMM_STEM_REDUCTION // stem_reduction, drop_path_rate=drop_path_rate,
        **block_kwargs)
    for info in feature_info:
        info["reduction"] = info["reduction"] * stem_reduction // _TIMM_STEM_REDUCTION
    return stages, feature_info


class LcResNet(nn.Module):
    """ResNet whose convs are locally connected (fixed input size), with timm's model interface.

    Args:
        block: 'basic' / 'bottleneck' or timm's ``BasicBlock`` / ``Bottleneck``.
        layers: blocks per stage (1 to 4 stages).
        channels: block widths per stage.
        num_classes: classifier outputs (0 for none).
        in_chans: image channels.
        img_size: (H, W) or int: the input size the LC layers are built for.
        stem_width: output channels of the stem conv.
        stem_kernel_size: stem conv kernel (7 ImageNet, 3 CIFAR).
        stem_stride: stem conv stride (2 ImageNet, 1 CIFAR).
        stem_pool: 3x3 stride-2 max-pool after the stem (ImageNet) or none (CIFAR).
        output_stride: overall feature stride, smaller than natural by dilating the last stages.
        global_pool: timm pool type ('avg', 'max', '' for none, ...).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate.
        zero_init_last: zero the last BN of each residual branch.
        locally_connected: False builds the same architecture with ordinary convs.
        keep_first: number of leading convs (forward order) kept convolutional.
        keep_1x1: keep 1x1 convs (shortcut projections, bottleneck 1x1s) convolutional.
        act_layer, norm_layer: timm layer types.
        device, dtype: where and in what precision to allocate (meta supported).

    Raises:
        ValueError: if ``layers`` and ``channels`` differ in length or hold not 1 to 4 stages, if ``layers``
            holds fewer than 2 blocks in all, or if ``output_stride`` is not a stride of this stem's stages.
    """

    def __init__(
            self,
            block: Union[str, Type[nn.Module]],
            layers: Tuple[int, ...],
            channels: Tuple[int, ...] = (64, 128, 256, 512),
            num_classes: int = 1000,
            in_chans: int = 3,
            img_size: Union[int, Tuple[int, int]] = 224,
            stem_width: int = 64,
            stem_kernel_size: int = 7,
            stem_stride: int = 2,
            stem_pool: bool = True,
            output_stride: Optional[int] = None,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            zero_init_last: bool = True,
            locally_connected: bool = True,
            keep_first: int = 0,
            keep_1x1: bool = False,
            act_layer: LayerType = nn.ReLU,
            norm_layer: LayerType = nn.BatchNorm2d,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        block = _BLOCKS[block] if isinstance(block, str) else block
        layers, channels = tuple(layers), tuple(channels)
        if not 1 <= len(layers) <= MAX_STAGES or len(layers) != len(channels):
            raise ValueError(f"layers and channels must have the same length, 1 to {MAX_STAGES}; "
                             f"got layers={layers}, channels={channels}")
        if sum(layers) < 2:  # timm's stage builder spreads stochastic depth over (blocks - 1)
            raise ValueError(f"layers must hold at least 2 blocks in all, got layers={layers}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = to_2tuple(img_size)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.locally_connected = locally_connected
        self.sleep_cfg = None  # the _hebb variants set their sleep-phase settings here
        self.num_stages = len(layers)
        act_layer = get_act_layer(act_layer)
        norm_layer = get_norm_layer(norm_layer)

        # stem
        self.conv1 = nn.Conv2d(in_chans, stem_width, stem_kernel_size, stride=stem_stride,
                               padding=stem_kernel_size // 2, bias=False, **dd)
        self.bn1 = norm_layer(stem_width, **dd)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module="act1")]

        stem_reduction = stem_stride * (2 if stem_pool else 1)
        strides = [stem_reduction * 2 ** i for i in range(len(layers))]
        if output_stride is not None and output_stride not in strides:
            raise ValueError(f"output_stride must be one of {strides} for this stem, got {output_stride}")
        target_stride = output_stride or strides[-1]
        stages, stage_info = _make_stages(
            block, channels, layers, stem_width, stem_reduction, target_stride, drop_path_rate,
            act_layer=act_layer, norm_layer=norm_layer, **dd)
        for name, stage in stages:
            self.add_module(name, stage)
        for name in _STAGE_NAMES[len(stages):]:
            self.add_module(name, nn.Sequential())  # absent stage: empty, keeps forward fixed and scriptable
        self.feature_info.extend(stage_info)

        # head
        self.num_features = channels[-1] * block.expansion
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

        self.init_weights(zero_init_last=zero_init_last)
        if locally_connected:
            locally_connect_(
                self, (in_chans, *self.img_size), keep_first=keep_first, keep_1x1=keep_1x1, **dd)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        """timm's ResNet init for the convs (LC layers get the same law per position).

        Args:
            zero_init_last: Zero-initialize the last BN in each residual branch.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Create regex patterns for parameter grouping.

        Args:
            coarse: Use coarse (stage-level) or fine (block-level) grouping.

        Returns:
            Dictionary mapping group names to regex patterns.
        """
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enable or disable gradient checkpointing of the stages.

        Args:
            enable: Whether to enable gradient checkpointing.
        """
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        """Get the classifier module.

        Args:
            name_only: Return classifier module name instead of module.

        Returns:
            Classifier module or name.
        """
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Reset the classifier head, on the model's device and dtype and in its train/eval mode.

        Args:
            num_classes: Number of classes for new classifier (0 for none).
            global_pool: Global pooling type, current pooling is kept if None.
        """
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if self.locally_connected:
                x = _check_image_size(x, self.in_chans, self.img_size[0], self.img_size[1])
        return x

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        return self.act1(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates (index 0 is the stem, 1.. the stages).

        Args:
            x: Input image tensor, of the size the model was built for.
            indices: Take last n blocks if int, all if None, select matching indices if sequence.
            norm: Apply norm layer to compatible intermediates (there is none: unused).
            stop_early: Stop iterating over blocks when last desired intermediate hit.
            output_fmt: Shape of intermediate feature outputs (only 'NCHW').
            intermediates_only: Only return intermediate features.

        Returns:
            Features and list of intermediate features or just intermediate features.

        Raises:
            ValueError: if an LC model gets an input of another size than it was built for.
        """
        assert output_fmt in ("NCHW",), "Output shape must be NCHW."
        intermediates = []
        take_indices, max_index = feature_take_indices(self.num_stages + 1, indices)
        x = self._stem(self._check_input(x))
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        stage_names = _STAGE_NAMES[:self.num_stages]
        if stop_early:
            stage_names = stage_names[:max_index]
        for feat_idx, name in enumerate(stage_names, start=1):
            stage = getattr(self, name)
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Prune the stages (and head) not required for the intermediates ``indices``.

        Args:
            indices: Indices of intermediate layers to keep.
            prune_norm: Whether to prune normalization layers (there is none: unused).
            prune_head: Whether to prune the classifier head (always pruned when the last stage is).

        Returns:
            List of indices that were kept.
        """
        take_indices, max_index = feature_take_indices(self.num_stages + 1, indices)
        for name in _STAGE_NAMES[max_index:self.num_stages]:
            setattr(self, name, nn.Sequential())
        if max_index == 0:
            self.maxpool = nn.Identity()
        prune_end = max_index < self.num_stages
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass through feature extraction layers.

        Args:
            x: Input image tensor, of the size the model was built for.

        Returns:
            Feature map of the last stage.

        Raises:
            ValueError: if an LC model gets an input of another size than it was built for.
        """
        x = self._stem(self._check_input(x))
        x = self.maxpool(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Forward pass through classifier head.

        Args:
            x: Feature tensor.
            pre_logits: Return features before final classifier layer.

        Returns:
            Output tensor.
        """
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass.

        Args:
            x: Input image tensor, of the size the model was built for.

        Returns:
            Output logits (pooled features when there is no classifier).

        Raises:
            ValueError: if an LC model gets an input of another size than it was built for.
        """
        x = self.forward_features(x)
        return self.forward_head(x)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Maps a conv ResNet state dict onto an LC model: each 4-D kernel is copied to every position.

    Keys already in LC layout (or for layers kept convolutional) pass through unchanged. The
    copies are broadcast views, so no full-size temporary is made before ``load_state_dict``.
    1-D tensors whose model counterpart is a per-position (C, H, W) bias are broadcast likewise.

    Args:
        state_dict: the checkpoint: a state dict, or a dict holding one under 'state_dict' or 'model'.
        model: the LC model the weights are for.

    Returns:
        The state dict with conv kernels (and biases) expanded to the model's LC layout.
    """
    state_dict = state_dict.get("state_dict", state_dict.get("model", state_dict))
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        ref = target.get(key)
        if ref is not None and value.ndim == 4 and ref.ndim == 6:
            filters = kernel_to_filters(value)
            if tuple(filters.shape) == tuple(ref.shape[2:]):
                value = filters.to(ref.dtype).expand(ref.shape)
        elif ref is not None and value.ndim == 1 and ref.ndim == 3 and value.shape[0] == ref.shape[0]:
            value = value.to(ref.dtype)[:, None, None].expand(ref.shape)
        out[key] = value
    return out


def _create_lc_resnet(variant: str, pretrained: bool = False, **kwargs) -> LcResNet:
    pretrained_cfg = lc_pretrained_cfg(kwargs.pop("pretrained_cfg", None))  # keeps a config.json's "sleep"
    num_feature_levels = len(kwargs.get("layers", ())) + 1  # stem + stages
    model = build_model_with_cfg(
        LcResNet, variant, pretrained, pretrained_cfg=pretrained_cfg, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=tuple(range(num_feature_levels))), **kwargs)
    model = attach_sleep_cfg(model)
    # the input the model was built for, for timm's resolve_model_data_config (set after the weights are
    # loaded: timm adapts a pretrained stem to in_chans by the cfg's original input_size)
    cfg_size = model.pretrained_cfg["input_size"]
    size = (kwargs.get("in_chans", cfg_size[0]), *to_2tuple(kwargs.get("img_size", tuple(cfg_size[1:]))))
    model.pretrained_cfg = model.default_cfg = dict(model.pretrained_cfg, input_size=size)
    return model


def _cfg(input_size=(3, 224, 224), pool_size=(7, 7), **kwargs) -> LcPretrainedCfg:
    return LcPretrainedCfg(**{
        "num_classes": 1000, "input_size": input_size, "pool_size": pool_size, "fixed_input_size": True,
        "crop_pct": 0.875, "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1", "classifier": "fc", "paper_ids": "arXiv:2106.13031",
        "paper_name": "Towards Biologically Plausible Convolutional Networks", **kwargs})


def _cifar_cfg(**kwargs) -> LcPretrainedCfg:
    return _cfg(**{"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0, **kwargs})


def _tin_cfg(**kwargs) -> LcPretrainedCfg:
    # 48x48 crops of 64x64 TinyImageNet images
    return _cfg(**{"num_classes": 200, "input_size": (3, 48, 48), "pool_size": (12, 12), "crop_pct": 0.75, **kwargs})


def _tiny_cfg(**kwargs) -> LcPretrainedCfg:
    return _cfg(**{"num_classes": 10, "input_size": (3, 16, 16), "pool_size": (4, 4), "crop_pct": 1.0, **kwargs})


def _with_sleep(cfgs: Dict[str, LcPretrainedCfg]) -> Dict[str, LcPretrainedCfg]:
    """``cfgs`` with each model's sleep settings from ``MODEL_SLEEP`` (their one definition)."""
    for name, cfg in cfgs.items():
        if name.split(".")[0] in MODEL_SLEEP:
            cfg.sleep = MODEL_SLEEP[name.split(".")[0]].to_dict()
    return cfgs


default_cfgs = generate_default_cfgs(_with_sleep({
    "lc_resnet18": _cfg(),
    "lc_resnet18_half": _cfg(),
    "lc_resnet18_convstem": _cfg(),
    "lc_resnet18_half_convstem": _cfg(),
    "lc_resnet34": _cfg(),
    "lc_resnet50": _cfg(),
    "lc_resnet20": _cifar_cfg(),
    "lc_resnet20_tin": _tin_cfg(),
    "lc_resnet18_hebb": _cfg(),
    "lc_resnet18_half_hebb": _cfg(),
    "lc_resnet20_hebb": _cifar_cfg(),
    "lc_resnet20_tin_hebb": _tin_cfg(),
    "lc_resnet_tiny": _tiny_cfg(),
    "lc_resnet_tiny_hebb": _tiny_cfg(),
}))


@register_model
def lc_resnet18(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-18, full width (64..512), 224x224, 7x7 stem + max-pool: ~1.8 B weights.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2))
    return _create_lc_resnet("lc_resnet18", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet18_half(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-18 at half width (32..256), the paper's ImageNet network.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem_width=32)
    return _create_lc_resnet("lc_resnet18_half", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet18_convstem(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-18 (full width) with its 7x7 stem conv kept convolutional.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2), keep_first=1)
    return _create_lc_resnet("lc_resnet18_convstem", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet18_half_convstem(pretrained: bool = False, **kwargs) -> LcResNet:
    """Half-width LC ResNet-18 with a convolutional stem (the paper's conv-stem ImageNet setting).

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem_width=32, keep_first=1)
    return _create_lc_resnet("lc_resnet18_half_convstem", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet34(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-34 (basic blocks 3-4-6-3), 224x224.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(3, 4, 6, 3))
    return _create_lc_resnet("lc_resnet34", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet50(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-50 (bottleneck blocks 3-4-6-3), 224x224.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="bottleneck", layers=(3, 4, 6, 3))
    return _create_lc_resnet("lc_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet20(pretrained: bool = False, **kwargs) -> LcResNet:
    """The paper's CIFAR net: LC ResNet-20 (3x3 stride-1 stem, 3 stages x 3 blocks, 16/32/64), 32x32.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(3, 3, 3), channels=(16, 32, 64), stem_width=16,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet20", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet20_tin(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-20 for TinyImageNet: 48x48 crops, 200 classes.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(3, 3, 3), channels=(16, 32, 64), stem_width=16,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet20_tin", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet18_hebb(pretrained: bool = False, **kwargs) -> LcResNet:
    """LC ResNet-18 (full width) to be trained with Hebbian sleep-phase sharing every 10 steps.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2))
    return _create_lc_resnet("lc_resnet18_hebb", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet18_half_hebb(pretrained: bool = False, **kwargs) -> LcResNet:
    """Half-width LC ResNet-18 with the paper's Hebbian sleep-phase settings.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem_width=32)
    return _create_lc_resnet("lc_resnet18_half_hebb", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet20_hebb(pretrained: bool = False, **kwargs) -> LcResNet:
    """CIFAR LC ResNet-20 with the paper's Hebbian sleep-phase settings.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(3, 3, 3), channels=(16, 32, 64), stem_width=16,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet20_hebb", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet20_tin_hebb(pretrained: bool = False, **kwargs) -> LcResNet:
    """TinyImageNet LC ResNet-20 (48x48) with the paper's Hebbian sleep-phase settings.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(3, 3, 3), channels=(16, 32, 64), stem_width=16,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet20_tin_hebb", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet_tiny(pretrained: bool = False, **kwargs) -> LcResNet:
    """Test-sized LC ResNet: CIFAR stem width 8, stages 8/16/32 x 1 block, 16x16, 10 classes.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(1, 1, 1), channels=(8, 16, 32), stem_width=8,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def lc_resnet_tiny_hebb(pretrained: bool = False, **kwargs) -> LcResNet:
    """Test-sized LC ResNet with the paper's Hebbian sleep-phase settings.

    Args:
        pretrained: load the pretrained weights of the model's pretrained cfg.
        **kwargs: ``LcResNet`` arguments (e.g. ``num_classes``, ``in_chans``, ``img_size``) and
            timm ``build_model_with_cfg`` options, overriding the variant's.

    Returns:
        The ``LcResNet``.
    """
    model_args = dict(block="basic", layers=(1, 1, 1), channels=(8, 16, 32), stem_width=8,
                      stem_kernel_size=3, stem_stride=1, stem_pool=False)
    return _create_lc_resnet("lc_resnet_tiny_hebb", pretrained, **dict(model_args, **kwargs))
