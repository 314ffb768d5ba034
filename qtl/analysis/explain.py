"""Why did a model decide that? Heatmaps over the input, from the gradient of the predicted class score
backpropagated through the whole model: the backbone, the dressed head and the quantum circuit.

    ex = explain(loaded, "ant.jpg")            # Grad-CAM on a CNN backbone, gradient saliency otherwise
    ex.heatmap                                 # (H, W) float32 in [0, 1], over ex.image (the model's view)
    ex.note                                    # None, or why the map is blank (ex.blank): show it with it
    overlay(ex.image, ex.heatmap).save("why.png")

Methods:
    grad-cam  (Selvaraju et al. 2017) the last convolutional feature map A (C, h, w), weighted per channel
              by the spatial mean of d score / dA, summed, ReLU, upsampled. CNN backbones only.
    saliency  (Simonyan et al. 2014) |d score / d pixel|, max over colour channels. Any backbone,
              transformers included.
The engines are differentiable (the native simulator by autograd, PennyLane through its torch interface),
so the circuit's part of the gradient is exact, not approximated. Frozen backbones stay frozen: gradients
are taken with respect to the input and the feature map only, never accumulated into any parameter.

A loaded model's backbone may be the process's shared one (`qtl.models.backbones.shared_backbone`), run
by other threads at the same moment, so nothing here registers a hook on it or changes it: Grad-CAM runs
a per-call copy of the few modules on the path to the feature map (they share every weight), in which the
feature-map block is wrapped to hand its output to this call alone. `explain_all` explains several models
on one image and runs a shared backbone once for all the heads on it.
"""

from __future__ import annotations

import copy
import numbers
import textwrap
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from qtl.analysis.inference import eval_mode, eval_transform, one_image

# matplotlib is imported inside the figure functions: explaining needs none of it.

METHODS = ("auto", "grad-cam", "saliency")


@dataclass
class Explanation:
    """One model's heatmap for one image."""

    method: str  # "grad-cam" or "saliency"
    target: int  # the class explained (the predicted one unless asked otherwise)
    class_name: str
    probs: torch.Tensor  # (C,) class probabilities
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], aligned with `image`
    image: Image.Image  # the model's view of the input: resized and cropped, H x W
    seconds: float = 0.0  # wall time for this model: a backbone pass it shares with others counted in full
    shared_backbone: bool = False  # its backbone pass served other models too (`explain_all`)

    @property
    def blank(self) -> bool:
        """The heatmap is all zeros: nothing in the image raised the score (Grad-CAM's ReLU kept no
        region), or no gradient reached the pixels (saliency). Its overlay is a uniform tint, not a map."""
        return not self.heatmap.any()

    @property
    def note(self) -> str | None:
        """One line for a blank heatmap, to show beside it (None otherwise)."""
        if not self.blank:
            return None
        if self.method == "grad-cam":
            return f"no positive Grad-CAM evidence for {self.class_name}; try saliency"
        return f"no gradient reaches the pixels for {self.class_name}"


def _bare_copy(module: nn.Module) -> nn.Module:
    """A shallow copy of `module` with its own child table and empty hook tables; it shares every
    parameter, buffer and child with `module`, so it costs microseconds and no weights."""
    clone = copy.copy(module)
    for key, value in module.__dict__.items():
        if key.endswith("hooks") and isinstance(value, dict):
            clone.__dict__[key] = type(value)()
    clone.__dict__["_modules"] = dict(module._modules)
    return clone


def _hookable_copy(module: nn.Module) -> nn.Module:
    """`_bare_copy` of every module of the tree: hooks registered on it never reach `module`."""
    clone = _bare_copy(module)
    for name, child in clone._modules.items():
        if child is not None:
            clone._modules[name] = _hookable_copy(child)
    return clone


class _Capture(nn.Module):
    """Wraps the feature-map block of a per-call copy: runs it, keeps its output A (B, C, h, w) as a new
    leaf of the graph, and turns gradient recording on for the rest of the forward (the trunk below A
    runs without a graph: Grad-CAM needs d score / dA only)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.out: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.block(*args, **kwargs)
        torch.set_grad_enabled(True)  # the caller's torch.no_grad() context restores its mode on exit
        self.out = out.detach().requires_grad_(True)
        return self.out


def _capturing_copy(backbone: nn.Module, layer: str) -> tuple[nn.Module, _Capture]:
    """A copy of `backbone` whose block `layer` (a dotted name) is wrapped in a `_Capture`. Only the
    modules on the path from the root to it are copied (`_bare_copy`); everything else is the original,
    run forward only."""
    names = layer.split(".")
    capture = _Capture(backbone.get_submodule(layer))

    def along(module: nn.Module, depth: int) -> nn.Module:
        if depth == len(names):
            return capture
        clone = _bare_copy(module)
        clone._modules[names[depth]] = along(module._modules[names[depth]], depth + 1)
        return clone

    return along(backbone, 0), capture


def feature_map_layer(backbone: nn.Module, x: torch.Tensor) -> str | None:
    """Name of the module whose output is the backbone's last spatial feature map, or None when the
    backbone is not a CNN (a module emits token sequences (B, N, D): a transformer).

    Found by one forward pass over `x` (1, 3, H, W), with hooks on a per-call copy (`_hookable_copy`):
    the last module to finish with a (B, C, h, w) output, h * w > 1, i.e. the block just before global
    pooling.
    """
    found: list[tuple[str, int]] = []
    probe = _hookable_copy(backbone)
    for name, m in probe.named_modules():
        if name:
            m.register_forward_hook(lambda _m, _i, out, name=name: found.append((name, _rank(out))))
    with torch.no_grad():
        probe(x)
    if any(rank == 3 for _, rank in found):
        return None
    spatial = [name for name, rank in found if rank == 4]
    return spatial[-1] if spatial else None


def _rank(out) -> int:
    """4 for a (B, C, h, w) map with h * w > 1, 3 for tokens (B, N, D), else 0."""
    if not isinstance(out, torch.Tensor):
        return 0
    if out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
        return 4
    return 3 if out.dim() == 3 else 0


_layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backbone -> its feature_map_layer
_layers_lock = threading.Lock()


def _layer_of(backbone: nn.Module, x: torch.Tensor) -> str | None:
    """`feature_map_layer` of `backbone`, found once per backbone."""
    with _layers_lock:
        if backbone not in _layers:
            _layers[backbone] = feature_map_layer(backbone, x)
        return _layers[backbone]


def _view(transform, x: torch.Tensor) -> Image.Image:
    """The normalised (3, H, W) tensor back as the RGB image the model saw."""
    mean = getattr(transform, "mean", None)
    std = getattr(transform, "std", None)
    for t in getattr(transform, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            mean, std = t.mean, t.std
    if mean is not None:
        x = x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    else:
        x = (x - x.min()) / (x.max() - x.min() + 1e-12)
    arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def _normalise(m: torch.Tensor, q: float = 1.0) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its q-quantile (1.0: its maximum); all-zero stays zero."""
    top = torch.quantile(m.flatten(), q) if q < 1 else m.max()
    return (m / top).clamp(0, 1).numpy().astype(np.float32) if top > 0 else np.zeros(m.shape, np.float32)


def explain(loaded, image, *, method: str = "auto", target: int | None = None) -> Explanation:
    """A heatmap of what drives `loaded`'s score for `target` (default: its predicted class) on `image`.

    loaded: a `qtl.models.checkpoint.LoadedModel` (any variant, any backbone). image: one path, bytes or
    PIL image (ValueError for several: explain each on its own).
    method: "auto" (grad-cam on CNN backbones, else saliency), "grad-cam" or "saliency".
    target: a class index (an int); TypeError for anything else.
    The model runs in eval mode and is left in its own; gradients are taken even under the caller's
    torch.no_grad() or torch.inference_mode().
    Raises ValueError for an unknown method, or grad-cam on a backbone without a spatial feature map.
    """
    return explain_all({"model": loaded}, image, method=method, target=target)["model"]


def explain_all(
    models: Mapping[str, object], image, *, method: str = "auto", target: int | None = None
) -> dict[str, Explanation]:
    """`explain` for every model of `{name: LoadedModel}` on one image, in the order given.

    Frozen models on the same backbone object with the same preprocessing (the checkpoints loaded onto
    one shared backbone) share its forward pass: Grad-CAM then costs one backbone pass for all of them,
    plus a pooling and a head per model.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, numbers.Integral):
            raise TypeError(f"target must be a class index (an int), got {target!r}")
        target = int(target)
    for name, loaded in models.items():  # an IndexError from deep inside the backward pass, before
        classes = list(loaded.class_names)
        if target is not None and not 0 <= target < len(classes):
            raise ValueError(
                f"target class {target} is not one of {name}'s: 0 to {len(classes) - 1} ({classes})"
            )
    picture = one_image(image)
    groups: dict = {}
    for name, loaded in models.items():
        shared = loaded.model_config.frozen
        key = (id(loaded.model.backbone), repr(loaded.transform)) if shared else ("own", name)
        groups.setdefault(key, {})[name] = loaded
    out: dict[str, Explanation] = {}
    # gradients even under the caller's inference_mode (its tensors can never record a graph) or no_grad
    with torch.inference_mode(False), eval_mode(*(m.model for m in models.values())):
        for group in groups.values():
            out |= _explain_group(group, picture, method, target)
    return {name: out[name] for name in models}


def _explain_group(group: dict, picture: Image.Image, method: str, target: int | None) -> dict:
    """Explanations of models that run one backbone with one preprocessing, from one forward pass."""
    t0 = time.perf_counter()
    first = next(iter(group.values()))
    backbone = first.model.backbone
    device = next(first.model.parameters()).device
    transform = eval_transform(first)  # the preprocessing the checkpoint records
    x = transform(picture).unsqueeze(0).to(device)  # (1, 3, H, W)
    layer = None if method == "saliency" else _layer_of(backbone, x)
    if method == "grad-cam" and layer is None:
        raise ValueError(f"{first.model_config.backbone} has no convolutional feature map: use saliency")

    if layer is not None:  # grad-cam: d score / dA for the feature map A of a per-call copy
        run, capture = _capturing_copy(backbone, layer)
        with torch.no_grad():  # the trunk below A records nothing; _Capture turns recording on
            features = run(x)  # (1, F)
        wrt = capture.out  # (1, C, h, w)
    else:  # saliency: d score / d pixels
        wrt = x.requires_grad_(True)
        with torch.enable_grad():
            features = backbone(x)  # (1, F)

    out = {}
    view = _view(transform, x.detach()[0].cpu())
    shared_s = time.perf_counter() - t0
    names = list(group)
    for i, name in enumerate(names):
        loaded = group[name]
        t1 = time.perf_counter()
        with torch.enable_grad():
            logits = loaded.model.head(features)  # (1, C): the circuit runs inside the head
            probs = torch.softmax(logits.detach(), 1)[0].float().cpu()
            t = int(probs.argmax()) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, t], wrt, retain_graph=i < len(names) - 1)
        out[name] = Explanation(
            "grad-cam" if layer is not None else "saliency",
            t,
            loaded.class_names[t],
            probs,
            _heatmap(grad, wrt.detach(), x.shape[-2:], cam=layer is not None),
            view,
            shared_s + time.perf_counter() - t1,
            len(names) > 1,
        )
    return out


def _heatmap(grad: torch.Tensor, wrt: torch.Tensor, size, *, cam: bool) -> np.ndarray:
    """(H, W) map in [0, 1]: Grad-CAM from the feature map A (1, C, h, w) and d score / dA, or saliency
    from d score / d pixels (1, 3, H, W)."""
    if cam:
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
        cam_map = F.relu((weights * wrt).sum(1, keepdim=True))  # (1, 1, h, w)
        cam_map = F.interpolate(cam_map, size=size, mode="bilinear", align_corners=False)[0, 0]
        return _normalise(cam_map.float().cpu())
    # no smoothing: a blurred map is dominated by the image's own structure and fails the sanity check
    return _normalise(grad.abs().amax(dim=1)[0].float().cpu(), q=0.99)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """The heatmap (H, W) in [0, 1], coloured with a matplotlib colormap, blended over `image` (H x W)."""
    from matplotlib import colormaps

    colours = colormaps[cmap](heatmap)[..., :3]  # (H, W, 3) in [0, 1]
    base = np.asarray(image.convert("RGB").resize(heatmap.shape[::-1]), dtype=np.float32) / 255
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def explanation_figure(rows: list[tuple[str, dict[str, Explanation]]]):
    """A matplotlib figure: one row per image (its name, {model name: Explanation}), the model's view
    first, then each model's overlay titled with its prediction and method, and its `note` if blank."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a server's threads

    cols = 1 + max(len(r) for _, r in rows)
    fig = Figure(figsize=(2.6 * cols, 2.9 * len(rows)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for (name, row), ax_row in zip(rows, axes, strict=True):
        first = next(iter(row.values()))
        panels = [(name, first.image)] + [
            (
                f"{label}\n{ex.class_name} {ex.probs[ex.target]:.0%} · {ex.method}"
                + (f"\n{textwrap.fill(ex.note, 40)}" if ex.note else ""),  # within its panel
                overlay(ex.image, ex.heatmap),
            )
            for label, ex in row.items()
        ]
        for ax in ax_row:
            ax.axis("off")
        for ax, (title, picture) in zip(ax_row, panels, strict=False):
            ax.imshow(picture)
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig
