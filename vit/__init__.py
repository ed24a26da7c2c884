"""FoodVision ViT: a from-scratch Vision Transformer, a hybrid timm ViT and an EfficientNet baseline
for the pizza / steak / sushi task, with self-describing checkpoints and explanations.

Subpackages by job, bottom to top (imports point down, never up; tests/test_imports.py checks it):
models and data -> runtime (engines, exports) -> explain, trust -> serve (the Predictor), train ->
app (handlers and page), bench (figures and the generated tables) -> app.py.
"""
