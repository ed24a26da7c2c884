"""What a /predict costs beside its two forward passes (issue 31): the app's answer path, from the decoded
upload to the JSON, against two bare ONNX Runtime sessions (the model's export and the gate backbone's,
default session options) each with its own preprocessing, timed interleaved on the same photo.

The answer path is `Predictor.answer` (the model's preprocessing, its session, the gate's preprocessing
and backbone session, the kNN verdict, the tempered softmax and the conformal set) and the JSON of what
/predict returns. The bare pair is the floor: the same two graphs with nothing of ours around them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vit.bench.timing import Case, ratio, time_interleaved
from vit.data.images import Decoded, open_image
from vit.data.preprocess import eval_transform
from vit.runtime import engines
from vit.serve.predictor import Predictor
from vit.trust import backbone

BAR = 1.1  # the answer path at most this many times the bare pair (p50)


def photo(side: int = 512, seed: int = 0) -> Decoded:
    """A fixed photo-sized upload, decoded as a request decodes it."""
    rng = np.random.default_rng(seed)
    return Decoded(open_image(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))))


def bare_session(path: str | Path):
    import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # default options: no tuning


def bench_request(path: str | Path, runs: int = 30, warmup: int = 5) -> dict:
    """{request_ms, bare_ms (medians), ratio (p50 and best), bar, within_bar, top1_same} for one checkpoint
    served on ONNX Runtime with its gate; {"skipped": why} when there is no such pair to compare."""
    p = Predictor.from_checkpoint(path)
    if p.wait_for_engine() != "onnxruntime" or p.gate is None or not p.shared_gate:
        return {"skipped": "needs an ONNX Runtime engine and a gate on the shared backbone"}
    net = backbone.get("auto")
    if net.name != "onnxruntime":
        return {"skipped": "the gate's backbone does not run on ONNX Runtime here"}
    model, gate = bare_session(p.engine.path), bare_session(backbone.export_path())
    model_input, gate_input = eval_transform(p.preprocessing.to_dict()), eval_transform(backbone.PREPROCESSING)
    upload = photo()

    def answer(_) -> str:
        r = p.answer(upload)
        t = r.trust
        return json.dumps({"label": r.top, "confidences": r.probs, "latency_ms": r.latency_ms,
                           "in_distribution": t.in_distribution, "ood_score": t.ood_score,
                           "prediction_set": list(t.prediction_set), "temperature": t.temperature})

    def bare(_) -> np.ndarray:
        x = model_input(upload.image)[None].numpy()
        (logits,) = model.run(["logits"], {"image": x})
        gate.run(["features"], {"image": gate_input(upload.image)[None].numpy()})
        return logits

    times = time_interleaved({"request": Case(answer, None), "bare": Case(bare, None)}, runs=runs, warmup=warmup)
    r = ratio(times["request"], times["bare"])
    same = p.answer(upload).top == p.class_names[int(np.argmax(bare(None)))]
    return {"request_ms": times["request"]["p50"], "bare_ms": times["bare"]["p50"], "ratio": r, "bar": BAR,
            "within_bar": r["p50"] <= BAR, "top1_same": same, "engine": engines.OrtEngine.name}
