"""The app's API: the gr.api endpoints /predict, /explain, /attention, /methods, /classify and /explorer, and
the records they return. Their signatures and docstrings are what API and MCP clients read; each endpoint is
one call to a `Handlers` method, so the page and the API answer alike.

No `from __future__ import annotations` here: gr.api reads the endpoints' return annotations as
objects (`inspect.signature(fn).return_annotation`), and a string would make one output of two.
"""
from typing import TYPE_CHECKING, Callable

from vit.app import ui
from vit.app.gradio_io import ImageFile, file_data, label_value, result_file
from vit.app.handlers import OPACITY, ROLLOUT_DISCARD, Handlers, answers, decode
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
            "neighbours_note": getattr(r, "neighbours_note", None)}


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


def explain_record(model_id: str, r: "Result") -> dict:
    """What /explain returns beside the overlay."""
    scored = {"steps": r.faithfulness.steps, "random_seeds": list(r.faithfulness.random_seeds)} \
        if r.faithfulness is not None else {}
    return {"model": model_id, "method": r.method, "label": r.top, "probs": r.probs, **faithfulness_record(r),
            **scored, "latency_ms": round(r.latency_ms, 2), "explain_ms": round(r.explain_ms, 2),
            "map_ms": round(r.map_ms, 2), "score_ms": round(r.score_ms, 2), "grid": list(r.grid),
            **trust_record(r), **neighbours_record(r)}


def api(h: Handlers) -> list[Callable]:
    """The gr.api endpoints /predict, /explain, /attention, /methods, /classify and /explorer. Their signatures and docstrings
    are what API and MCP clients read, `model` defaulting to the page's default model: hence functions
    made here, around `h`, each a call to one of its methods; a request that cannot be answered raises the
    gr.Error the page would show (vit.app.handlers.answers)."""
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
            latency_ms (the forward pass), explain_ms (the map and its score), the gate's in_distribution,
            ood_score, ood_threshold, prediction_set and temperature, and the neighbours (as /predict).
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
