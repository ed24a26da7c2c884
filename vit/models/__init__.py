"""The models and their files: the family registry (`families`: nothing else names a family), the
scratch ViT (`scratch_vit`), the builders and offline weights (`zoo`), self-describing checkpoints
(`checkpoint`), building and loading through the registry (`factory`), each checkpoint's eval
preprocessing (`preprocess`), the penultimate features (`features`) and attention maps on request
(`attention`). The floor every other subpackage stands on: it imports nothing of theirs."""
