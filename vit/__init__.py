"""FoodVision ViT: a from-scratch Vision Transformer, a hybrid timm ViT and an EfficientNet baseline
for the pizza / steak / sushi task, with self-describing checkpoints and explanations.

Subpackages by job, in `LAYERS` from the bottom up; imports point down, never up (tests/test_imports.py
checks it, docs/package.md lists every module): files, messages and data -> models -> runtime -> explain, trust,
explore -> serve, train -> bench -> app -> app.py.
"""

# Bottom to top: a subpackage imports those of lower layers only (and, within its layer, explore the trust).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("files", "messages"),  # files written whole or not at all; errors a person reads, in any language
    ("data",),  # photos in: folders, splits, downloads, uploads, preprocessing
    ("models",),  # the family registry, the scratch ViT, checkpoints, features, attention
    ("runtime",),  # engines (PyTorch, ONNX Runtime) and exports
    ("explain", "trust", "explore"),  # maps and their scores; the gate; the model-level views
    ("serve", "train"),  # the Predictor and the served model set; training and evaluation
    ("bench",),  # benchmarks and the generated tables of the README and docs/
    ("app",),  # what each event and endpoint does, and what the page shows
)
