"""Serving: the Predictor (`predictor`: one request path, decoded once, one pass, a typed result), its
content-keyed caches (`cache`) and the set of models the app serves, built behind the page (`model_set`).

    from vit.serve.predictor import Predictor
"""
