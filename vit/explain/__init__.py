"""Why a model predicts what it does: explanation maps, their faithfulness, and pictures of both.

    h = compute(model, x, "chefer")                     # Heat: (rows, cols) map on the model's grid
    f = score(forward_batch, x, h.heat, h.target)        # deletion / insertion AUC vs random orders
    curves_plot(f, "chefer"); overlay(view, h.heat)      # PIL images

Modules: `methods` (the method registry: ids, titles, needs, controls), `rollout` (class-token attention,
rollout; the maps come from vit.models.attention), `maps` (the methods' maps), `lrp` and `lrp_cnn` (LRP
for ViTs and CNNs), `perturb` (blur baseline, batched perturbed passes), `faithfulness` (deletion /
insertion), `road`, `render` (pictures: attention weights on one fixed scale shared by every model, other
maps on their own range), `cli` (`python -m vit.explain`: the faithfulness table).
"""
from vit.explain.faithfulness import Ends, Faithfulness, RandomCurves, auc, blurred_logits, random_curves, score
from vit.explain.maps import (ForwardBatch, Heat, cam_from, chefer, grad_cam, grad_cam_heat, model_grid, occlusion,
                              rise_masks)
from vit.explain.methods import Method, compute
from vit.explain.perturb import blur
from vit.explain.render import (CMAP, SCALE, Sharpness, colour_bar, curves_plot, layer_mosaic, normalise, on_scale,
                                overlay, patch_grid, scale_bar, scaled_overlay, sharpness, times_uniform)
from vit.explain.rollout import HEAD_REDUCTIONS, cls_attention, head_select, rollout, rollout_map

__all__ = ["CMAP", "Ends", "HEAD_REDUCTIONS", "SCALE", "Faithfulness", "ForwardBatch", "Heat", "Method",
           "RandomCurves", "Sharpness", "auc", "blur", "blurred_logits", "cam_from", "chefer", "cls_attention",
           "colour_bar", "compute", "curves_plot", "grad_cam", "grad_cam_heat", "head_select", "layer_mosaic",
           "model_grid", "normalise", "occlusion", "on_scale", "overlay", "patch_grid", "random_curves",
           "rise_masks", "rollout", "rollout_map", "scale_bar", "scaled_overlay", "score", "sharpness",
           "times_uniform"]
