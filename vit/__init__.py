"""FoodVision ViT: a from-scratch Vision Transformer, a hybrid timm ViT and an EfficientNet baseline
for the pizza / steak / sushi task, with self-describing checkpoints and explanations.

Data flows down this list: images (images, data) -> models (model, zoo) -> checkpoints (checkpoint)
-> probabilities and attention (predict, explain) -> what the app shows (ui, report).
"""
