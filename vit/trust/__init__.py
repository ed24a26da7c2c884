"""What a request says about itself: in distribution or not (an OOD detector on the model's
penultimate features), calibrated probabilities (temperature scaling) and a prediction set with a
coverage guarantee (split conformal). Fitted once per checkpoint (vit.trust.fit, `python -m
vit.trust.fit`, the end of `vit.train`); the fitted state travels in the checkpoint file."""
from vit.trust.gate import Gate, GateError, Trust, load_gate, no_gate

__all__ = ["Gate", "GateError", "Trust", "load_gate", "no_gate"]
