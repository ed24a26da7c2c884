"""The models and their files: the family registry (`families`: nothing else names a family), the
scratch ViT (`scratch_vit`), the builders and offline weights (`zoo`), self-describing checkpoints
(`checkpoint`), building and loading through the registry (`factory`), the penultimate features
(`features`) and attention maps on request (`attention`). It stands on vit.data (preprocessing, photos)
and imports nothing above it."""
