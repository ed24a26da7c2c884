"""The model-level views: each answer's nearest training photos in the model's own feature space (`bank`),
and the test-set explorer's record (`explorer`: confusion, mistakes, a 2-D map of every photo), both
precomputed per checkpoint by `python -m vit.explore` (`cli`) and read by the app."""
