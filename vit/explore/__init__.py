"""The model-level views: each answer's nearest training photos in the model's own feature space (`bank`),
and the test-set explorer's record (`explorer`: confusion, mistakes, a 2-D map of every photo), both
precomputed per checkpoint by `python -m vit.explore` (`cli`) and read by the app; and inside the ViT
(Dosovitskiy et al. 2021, Fig. 7: `figure7` defines its numbers, `inside` measures them on the test photos
with `python -m vit.explore.inside`, `inside_plots` draws them, `inside_words` reads them in sentences)."""
