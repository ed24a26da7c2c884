"""The app's API: the gr.api endpoints /predict, /explain, /attention, /methods, /classify, /inside and /explorer,
and the records they return. Their signatures and docstrings are what API and MCP clients read; each endpoint
is one call to a `Handlers` method, so the page and the API answer alike.

No `from __future__ import annotations` here: gr.api reads the endpoints' return annotations as
objects (`inspect.signature(fn).return_annotation`), and a string would make one output of two.
"""
from typing import TYPE_CHECKING, Callable

import numpy as np

from vit import explain
from vit.app import ui
from vit.app.gradio_io import ImageFile, file_data, label_value, result_file
from vit.app.handlers import OPACITY, ROLLOUT_DISCARD, Handlers, answers, decode
from vit.app.inside_tab import InsideView, inside_view
from vit.explain import methods as registry
from vit.serve.model_set import methods_of

if TYPE_CHECKING:  # the predictor imports in seconds: the page is served before the models load
    from vit.serve.predictor import Predictor, Result


def trust_record(r: "Result") -> dict:
    """The gate's fields of /predict, /explain and the MCP tools (null verdict and score without a gate)."""
    t = getattr(r, "trust", None)
    if t is None:
        return {"in_distribution": None, "ood_score": None, "ood_threshold": None, "prediction_set": [],
                "temperature": 1.0}
    return {"in_distribution": t.in_distribution,
            "ood_score": None if t.ood_score is None else round(t.ood_score, 4),
            "ood_threshold": None if t.ood_threshold is None else round(t.ood_threshold, 4),
            "prediction_set": list(t.prediction_set), "temperature": round(t.temperature, 4)}


def neighbours_record(r: "Result") -> dict:
    """The nearest training photos of /predict, /explain and the MCP tools: `neighbours`, nearest first, each
    {photo (relative to the data root), label, distance (cosine), percentile (among held-back food photos'
    nearest distances)}; `neighbours_note`: why there are none (the model has no bank), else null."""
    return {"neighbours": [n.to_dict() for n in getattr(r, "neighbours", [])],
            "neighbours_note": str(r.neighbours_note) if getattr(r, "neighbours_note", None) else None}


def predict_record(model_id: str, p: "Predictor", r: "Result") -> dict:
    """What /predict returns beside the label (whose confidences are the calibrated probabilities)."""
    return {"model": model_id, "latency_ms": round(r.latency_ms, 2), "device": ui.device_text(),
            "size_mb": round(p.ckpt.size_mb, 2), "num_params": p.meta.get("num_params"), **trust_record(r),
            **neighbours_record(r)}


def faithfulness_record(r: "Result") -> dict:
    """The map's deletion / insertion AUCs and the random bar's (None where not scored)."""
    f = r.faithfulness
    keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
    return {k: (round(float(getattr(f, k)), 4) if f is not None else None) for k in keys}


def scale_record(r: "Result") -> dict:
    """How the overlay's colours read: for attention weights (vit.explain.methods.weights) the fixed scale, the
    drawn row's peak weight x number of patch keys, its normalised entropy, whether that is nearly uniform,
    and the controls that chose the row (layer from 1, head, discard); for any other map, "relative"."""
    if getattr(r, "heat", None) is None:
        return {}
    if not registry.weights(r.method):
        return {"scale": "relative"}
    s = explain.sharpness(r.heat)
    controls = dict(r.controls)  # as the page says them: layer from 1, "head N" from 1
    if registry.LAYER in controls:
        controls[registry.LAYER] += 1
    if isinstance(controls.get(registry.HEAD), int):
        controls[registry.HEAD] = f"head {controls[registry.HEAD] + 1}"
    return {"scale": f"x uniform, log2 {explain.SCALE[0]:g}-{explain.SCALE[1]:g}", "peak_x_uniform": round(s.peak, 3),
            "entropy": round(s.entropy, 4), "nearly_uniform": s.nearly_uniform, "patch_keys": s.cells, **controls}


def explain_record(model_id: str, r: "Result") -> dict:
    """What /explain returns beside the overlay."""
    scored = {"steps": r.faithfulness.steps, "random_seeds": list(r.faithfulness.random_seeds)} \
        if r.faithfulness is not None else {}
    return {"model": model_id, "method": r.method, "label": r.top, "probs": r.probs, **faithfulness_record(r),
            **scored, "latency_ms": round(r.latency_ms, 2), "explain_ms": round(r.explain_ms, 2),
            "map_ms": round(r.map_ms, 2), "score_ms": round(r.score_ms, 2), "grid": list(r.grid),
            **scale_record(r), **trust_record(r), **neighbours_record(r)}


def _nested(values, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


INSIDE_MEASURED = ("attention_distance_px", "attention_distance_fraction", "uniform_distance_px", "uniform_distance_fraction",
                   "attention_entropy", "cls_attention_entropy", "attention_peak_x_uniform", "cls_attention_peak_x_uniform",
                   "photos", "split")  # from the record on the test photos: null when there is none


def inside_record(v: InsideView) -> dict:
    """What /inside returns for one ViT: Figure 7's numbers (vit.explore.figure7; docs/inside.md)."""
    r = v.record
    measured = dict.fromkeys(INSIDE_MEASURED) if r is None else {
        "attention_distance_px": _nested(r.attention_distance_px, 3),
        "attention_distance_fraction": _nested(r.attention_distance_fraction),
        "uniform_distance_px": round(r.uniform_distance_px, 3),
        "uniform_distance_fraction": round(r.uniform_distance_fraction, 4),
        "attention_entropy": _nested(r.attention_entropy), "cls_attention_entropy": _nested(r.cls_attention_entropy),
        "attention_peak_x_uniform": _nested(r.attention_peak, 3),
        "cls_attention_peak_x_uniform": _nested(r.cls_attention_peak, 3), "photos": r.photos, "split": r.split}
    return {"model": v.model, **measured, "note": str(v.note or ""), "position_similarity": _nested(v.similarity),
            "grid": list(v.grid), "input_px": v.image_px, "patch_px": v.patch_px,
            "filters_explained_variance": v.weights["filters_explained_variance"]}


def inside(h: Handlers) -> Callable:
    """The /inside endpoint (registered by vit.app.inside_tab with its tab), `model` defaulting to the first ViT."""
    default = next((i for i in h.models.ids if h.models.has_attention(i)), h.default)

    @answers
    def inside(model: str = default) -> dict:
        """Inside a Vision Transformer: Figure 7 of the ViT paper (Dosovitskiy et al. 2021) for one of the app's ViTs.

        Args:
            model: a ViT's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit"); a model without
                attention is refused.
        Returns:
            {"model", "attention_distance_px": [[per head] per layer] (mean attention distance over the test photos, in
            input pixels: for each patch query, the attention-weighted distance to the patch keys, the rows restricted to
            the patch tokens and renormalised), "attention_distance_fraction" (the same / the image side),
            "uniform_distance_px" and "uniform_distance_fraction" (what uniform attention gives), "attention_entropy" and
            "cls_attention_entropy" ([[per head] per layer]: normalised entropy of the patch queries' rows and of the
            class token's row over the patch keys, 1 = uniform), "attention_peak_x_uniform" and
            "cls_attention_peak_x_uniform" (their largest weight x number of patch keys), "photos", "split" (all null,
            with "note" saying why, when not measured for this checkpoint), "position_similarity" ([[positions] x
            positions]: cosine similarity of the position embeddings, row-major), "grid" ([rows, cols]), "input_px",
            "patch_px", "filters_explained_variance" (the patch filters' first principal components' shares; null for a
            hybrid, whose patch embedding reads CNN features, not pixels)}.
        """
        return inside_record(inside_view(h.models, model))

    return inside


def api(h: Handlers) -> list[Callable]:
    """The gr.api endpoints /predict, /explain, /attention, /methods, /classify and /explorer (/inside is
    `inside`'s, registered with its tab). Their signatures and docstrings are what API and MCP clients read,
    `model` defaulting to the page's default model: hence functions made here, around `h`, each a call to one
    of its methods; a request that cannot be answered raises the gr.Error the page would show
    (vit.app.handlers.answers)."""
    default = h.default

    @answers
    def predict(image: ImageFile, model: str = default) -> tuple[dict, dict]:
        """Classify a food photo: class probabilities and how long the model took.

        Args:
            image: the food photo (JPEG, PNG, WebP, ...).
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
        Returns:
            The label ({"label": top class, "confidences": [{"label", "confidence"}, ...]}, calibrated
            probabilities) and a record of the model, its latency in ms, the device, its size in MB, its number
            of parameters, and its gate's verdict: in_distribution (true / false, null when the model has no
            gate), ood_score, ood_threshold (out of distribution when the score is above it), prediction_set
            (the 90 % conformal set of class names, most probable first) and temperature (probabilities are
            softmax(logits / temperature)); neighbours: the 5 training photos nearest to it in the model's own
            feature space, nearest first, each {photo, label, distance, percentile}, and neighbours_note (why
            there are none).
        """
        p = h.models.get(model)
        r = p.answer(decode(image))
        return label_value(r.probs), predict_record(model, p, r)

    @answers
    def explain(image: ImageFile, model: str = default, method: str = "") -> tuple[ImageFile, dict]:
        """Explain a prediction with one method: a heat map over the pixels the model saw, and how faithful it is.

        Args:
            image: the food photo.
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
            method: an explanation method of that model (see /methods); empty for the model's default.
        Returns:
            The overlay image, and a record: model, method, label, probs, deletion_auc, insertion_auc,
            random_deletion_auc, random_insertion_auc (deletion: lower is better; insertion: higher),
            latency_ms (the forward pass), explain_ms (the map and its score), scale ("relative", or for attention
            and rollout the fixed "x uniform" scale, then peak_x_uniform: the drawn row's largest weight x number
            of patch keys, 1 = uniform; entropy: its normalised entropy, 1 = uniform; nearly_uniform: entropy
            >= 0.97; patch_keys; and the layer, head and discard that chose the row), the gate's
            in_distribution, ood_score, ood_threshold, prediction_set and temperature, and the neighbours (as
            /predict).
        """
        p, r = h.explain(model, image, method or None)
        return file_data(result_file(ui.render_overlay(r, OPACITY))), explain_record(model, r)

    @answers
    def attention(image: ImageFile, model: str = default, view: str = registry.first_using(registry.LAYER), layer: int = 1, head: str = "mean",
                  opacity: float = 0.5, discard: float = 0.9) -> tuple[ImageFile | None, ImageFile | None]:
        """Attention maps: one layer's class-token attention or the rollout over all layers, and every layer.

        Args:
            image: the food photo.
            model: the model's id (its checkpoint's file stem).
            view: "attention" (one layer), "rollout" (all layers) or "grad-cam"; a model without attention
                always gives its default map.
            layer: the attention layer, from 1.
            head: "mean", "max" or "head N".
            opacity: the overlay's opacity, 0 to 1.
            discard: rollout's share of the weakest attention dropped, 0 to 0.99.
        Returns:
            The overlay image and the per-layer mosaic (None for a model without attention).
        """
        methods_ = methods_of(h.models, model)
        method = view if view in methods_ else (methods_[0] if methods_ else None)
        p, r = h.explain(model, image, method, layer, head, discard, score=False)
        pictures = h.pictures(p, r, opacity, head)
        return file_data(pictures.overlay), file_data(pictures.layers)

    def methods() -> dict:
        """Which explanation methods each model offers.

        Returns:
            {model id: [method ids, the model's default first]}.
        """
        return {i: list(methods_of(h.models, i)) for i in h.models.ids if i in h.models.meta}

    @answers
    def classify(image: ImageFile, model: str = default, method: str = "", layer: int = ui.LAYER_DEFAULT,
                 head: str = "mean", opacity: float = OPACITY, discard: float = ROLLOUT_DISCARD
                 ) -> tuple[dict, str, ImageFile, str, ImageFile, ImageFile | None, ImageFile, str]:
        """Everything the page shows for a photo, in one call: the prediction, its explanation and its score.

        Args:
            image: the food photo (JPEG, PNG, WebP, ...).
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
            method: an explanation method of that model (see /methods); empty for the model's default.
            layer: the attention layer shown by "attention", from 1 (0 or less: the last).
            head: "mean", "max" or "head N" (attention and rollout).
            opacity: the overlay's opacity, 0 to 1.
            discard: rollout's share of the weakest attention dropped, 0 to 0.99.
        Returns:
            The label (calibrated probabilities, as /predict), the timing text (after a warning when the photo
            is out of distribution), the overlay, the faithfulness text, the deletion / insertion curves, every
            layer's attention (None for a model without attention), the patch grid and the verdict (in
            distribution or not, the 90 % prediction set, or that the model has no gate).
        """
        v = h.view(image, model, method or None, layer, head, opacity, discard)
        return (label_value(v.label), v.timing, file_data(v.overlay), v.faithfulness, file_data(v.curves),
                file_data(v.layers), file_data(v.patches), v.verdict)

    @answers
    def explorer(model: str = default) -> dict:
        """A model's test-set explorer, precomputed (python -m vit.explore): its confusion matrix, mistakes and
        2-D map of every photo.

        Args:
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
        Returns:
            {"classes": [class names], "confusion": the test split's matrix, rows the truth and columns the
            answer, "mistakes": [{"photo" (relative to the data root), "split" ("test" or "val"), "truth",
            "answer", "probability" (calibrated, of the answer)}], the test split's first, "points": [{"x", "y"
            (in [0, 1]), "split" ("train", "val", "test" or "nonfood"), "label" (the truth; null for non-food),
            "answer", "photo"}], "map": how the map was made, "test" and "val": n and accuracy}.
        """
        return h.records.view(model)

    return [predict, explain, attention, methods, classify, explorer]
