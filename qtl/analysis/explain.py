"""Why did a model decide that? Heatmaps over the input, from the gradient of the predicted class score
backpropagated through the whole model: the backbone, the dressed head and the quantum circuit.

    ex = explain(loaded, "ant.jpg")            # Grad-CAM on a CNN backbone, gradient saliency otherwise
    ex.heatmap                                 # (H, W) float32 in [0, 1], over ex.image (the model's view)
    overlay(ex.image, ex.heatmap).save("why.png")

Methods:
    grad-cam  (Selvaraju et al. 2017) the last convolutional feature map A (C, h, w), weighted per channel
              by the spatial mean of d score / dA, summed, ReLU, upsampled. CNN backbones only.
    saliency  (Simonyan et al. 2014) |d score / d pixel|, max over colour channels. Any backbone,
              transformers included.
The engines are differentiable (the native simulator by autograd, PennyLane through its torch interface),
so the circuit's part of the gradient is exact, not approximated. Frozen backbones stay frozen: gradients
are taken with respect to the input and the feature map only, never accumulated into any parameter, so
a model shared between sessions is safe to explain.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from qtl.analysis.inference import as_images, eval_transform

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


def feature_map_layer(backbone: nn.Module, x: torch.Tensor) -> str | None:
    """Name of the module whose output is the backbone's last spatial feature map, or None when the
    backbone is not a CNN (a module emits token sequences (B, N, D): a transformer).

    Found by one forward pass over `x` (1, 3, H, W): the last module to finish with a (B, C, h, w)
    output, h * w > 1, i.e. the block just before global pooling.
    """
    found: list[tuple[str, int]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: found.append((name, _rank(out))))
        for name, m in backbone.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for h in hooks:
            h.remove()
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

    loaded: a `qtl.models.checkpoint.LoadedModel` (any variant, any backbone). image: a path, bytes or PIL
    image.
    method: "auto" (grad-cam on CNN backbones, else saliency), "grad-cam" or "saliency".
    Raises ValueError for an unknown method, or grad-cam on a backbone without a spatial feature map.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}")
    c = loaded.model_config
    model = loaded.model
    device = next(model.parameters()).device
    transform = eval_transform(loaded)  # the preprocessing the checkpoint records
    x = transform(as_images(image)[0]).unsqueeze(0).to(device)  # (1, 3, H, W)
    key = model.backbone
    if key not in _layers and method != "saliency":
        _layers[key] = feature_map_layer(model.backbone, x)
    layer = _layers.get(key) if method != "saliency" else None
    if method == "grad-cam" and layer is None:
        raise ValueError(f"{c.backbone} has no convolutional feature map: use the saliency method")
    use_cam = layer is not None

    captured: list[torch.Tensor] = []
    me = threading.get_ident()  # a shared model may run forward in other threads meanwhile
    hook = None
    if use_cam:
        module = model.backbone.get_submodule(layer)
        hook = module.register_forward_hook(
            lambda _m, _i, out: captured.append(out) if threading.get_ident() == me else None
        )
    try:
        with torch.enable_grad():
            x.requires_grad_(True)
            logits = model.head(model.backbone(x))  # (1, C): the circuit runs inside the head
            probs = torch.softmax(logits.detach(), 1)[0].float().cpu()
            target = int(probs.argmax()) if target is None else int(target)
            wrt = captured[-1] if use_cam else x
            (grad,) = torch.autograd.grad(logits[0, target], wrt)
    finally:
        if hook is not None:
            hook.remove()

    size = x.shape[-2:]
    if use_cam:
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
        cam = F.relu((weights * wrt.detach()).sum(1, keepdim=True))  # (1, 1, h, w)
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
        heatmap = _normalise(cam.float().cpu())
    else:
        # no smoothing: a blurred map is dominated by the image's own structure and fails the sanity check
        sal = grad.abs().amax(dim=1)[0]  # (H, W)
        heatmap = _normalise(sal.float().cpu(), q=0.99)
    return Explanation(
        "grad-cam" if use_cam else "saliency",
        target,
        loaded.class_names[target],
        probs,
        heatmap,
        _view(transform, x.detach()[0].cpu()),
    )


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """The heatmap (H, W) in [0, 1], coloured with a matplotlib colormap, blended over `image` (H x W)."""
    from matplotlib import colormaps

    colours = colormaps[cmap](heatmap)[..., :3]  # (H, W, 3) in [0, 1]
    base = np.asarray(image.convert("RGB").resize(heatmap.shape[::-1]), dtype=np.float32) / 255
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def explanation_figure(rows: list[tuple[str, dict[str, Explanation]]]):
    """A matplotlib figure: one row per image (its name, {model name: Explanation}), the model's view
    first, then each model's overlay titled with its prediction and method."""
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
                f"{label}\n{ex.class_name} {ex.probs[ex.target]:.0%} · {ex.method}",
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
