"""The model-level views: the nearest training photos and the test-set explorer, and inside the ViT
(Dosovitskiy et al. 2021, Fig. 7: `figure7` defines the numbers, `inside` measures them on the test
photos, `inside_plots` draws them, `inside_words` reads them in sentences); their precomputed records
live beside the checkpoints."""
