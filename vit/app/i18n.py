"""The page's words in English and Japanese: one table per language (`EN`, `JA`), the same keys in both.

The page follows the browser's language (`ja` -> Japanese, anything else -> English; Gradio's footer
Settings, or the page's 🌐 link, switch it). A string reaches the visitor in one of three ways:

- **Static** text (labels, buttons, tabs, headings, menu entries): `marker(key)` in the component. Gradio
  translates it in the browser from `translations(...)`, which app.py passes to `launch(i18n=...)`. A
  marker is translated only when it is a component's whole label or value, and it is not filled with
  numbers: text with numbers that is known when the page is built (the header, "Compare all 3") is
  formatted once per language at start-up and handed to `translations` as an extra key.
- **Built** text (verdict, answer, faithfulness, model card, status, errors, tables): `say(lang, key,
  **values)` fills the table's template on the server. Handlers get `lang` ("en" or "ja") from the page's
  hidden probe, a Textbox whose value is `marker("fv.lang")` (Gradio translates it to "en" or "ja"),
  kept in a gr.State (app.py). The API and the MCP tools get English.
- **Names**: class names through `CLASS_NAMES` (a checkpoint of other classes keeps its own names);
  method titles ("fv.method.<id>") and model families' descriptions ("fv.family.<name>") come in English
  from their registries and in Japanese from `JA`. Errors a person reads carry a code (vit.messages.Said):
  their sentence is the entry "fv.err.<code>".

A new string is one entry in `EN` and one in `JA` under the same key, which starts with "fv." (a key
named like one of Gradio's own namespaces, e.g. "slider", would show "[object Object]"); then
`marker(key)` in a component or `say(lang, key, ...)` in a handler's text. tests/test_i18n.py fails when a
key is in one table only, when a template's {fields} differ between the two, or when a page text is
written outside the tables.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import gradio as gr

from vit.explain import methods as registry
from vit.explore import inside_words
from vit.messages import Said
from vit.models import families

LANGS = ("en", "ja")  # the first is the fallback: any other browser language reads English
DEFAULT = LANGS[0]
CLASS_NAMES: dict[str, dict[str, str]] = {"ja": {"pizza": "ピザ", "steak": "ステーキ", "sushi": "寿司"}}

EN: dict[str, str] = {
    "fv.lang": "en",  # the language probe's value (a hidden Textbox): how handlers learn the page's language
    "fv.switch": "[🌐 日本語](?view=settings)",  # opens Gradio's Settings, whose menu switches the language
    # --- the Classify tab
    "fv.tab.classify": "Classify",
    "fv.photo": "Food photo",
    "fv.model": "Model",
    "fv.classify": "Classify",
    "fv.compare_all": "Compare all {n}",
    "fv.card": "Model card",
    "fv.examples": "Examples (answered by {model} with its default method)",
    "fv.prediction": "Prediction",
    "fv.explanation": "Explanation (on the pixels the model saw)",
    "fv.explanation.short": "Explanation",
    "fv.controls": "Explanation controls",
    "fv.method": "Explanation method",
    "fv.layer": "Layer",
    "fv.head": "Head",
    "fv.head.mean": "mean",
    "fv.head.max": "max",
    "fv.head.n": "head {n}",
    "fv.opacity": "Overlay opacity",
    "fv.discard": "Rollout discard",
    "fv.discard.info": "share of the weakest attention dropped",
    "fv.curves": "Faithfulness curves: left, the map's hottest cells blurred first (lower is better); right, "
                 "revealed first (higher is better); dashed, a random order; the numbers are the areas under the "
                 "curves",
    "fv.layers": "Class-token attention, every layer",
    "fv.patches": "How the model cuts the image (patches / map cells)",
    # --- beside the overlay: how to read its colours (vit.explain.render's two scales)
    "fv.scale.relative": "**Colours: relative scale**, stretched from this map's lowest cell to its highest: not "
                         "comparable between maps or models.",
    "fv.scale.fixed": "**Colours: one fixed scale** for every model and layer, 1× = attention spread evenly over the "
                      "{cells} patches. This map is {row}. Its strongest patch gets **{peak}×** an even share; "
                      "normalised entropy **{entropy}** (1 = even, 0 = one patch).",
    "fv.scale.nearly_uniform": "⚖️ **Nearly uniform** (entropy ≥ {line}): this attention is spread almost evenly over "
                               "the photo; read little into its pattern.",
    "fv.row.mean": "the mean of its {heads} heads",
    "fv.row.max": "the largest weight over its heads, renormalised",
    "fv.row.attention": "the class token's attention in layer {layer}, {which}",
    "fv.row.rollout": "the class token's row of the rollout over every layer, {which}, discard {discard}{dropped}",
    "fv.row.dropped": ": the weakest {share} of each layer's weights are dropped first, which makes much of its "
                      "sharpness",
    # --- the Inside the ViT tab (its sentences: vit.explore.inside_words.WORDS, added below)
    "fv.tab.inside": "Inside the ViT",
    "fv.inside.intro": "## Inside the ViT\nThe three views of the ViT paper's Figure 7 (Dosovitskiy et al. 2021) for "
                       "each Vision Transformer served here, side by side: what its first layer looks for in a patch, "
                       "what it learned about where patches sit, and how far its attention reaches in each layer. The "
                       "attention figures are means over the test photos (`python -m vit.explore.inside`); how each "
                       "is computed: `docs/inside.md`.",
    "fv.inside.panel.filters": "### Patch filters: the first principal components",
    "fv.inside.panel.position": "### Position embeddings: how alike each position is to every other",
    "fv.inside.panel.distance": "### Mean attention distance per head, by layer",
    # --- the nearest training photos under the answer (vit.explore.bank), and the Explorer tab
    "fv.neighbours": "Nearest training photos",
    "fv.near.none": "ℹ️ *No nearest training photos: {why}.*",
    "fv.near.head.out": "**The training photos closest to it are far: not look-alikes.** The gate says this photo is "
                        "not {classes}; these are only the nearest photos the model knows",
    "fv.near.head.farther": "**Nearest training photos, farther than usual**: the nearest is farther than it is for "
                            "{pct} % of held-back food photos",
    "fv.near.head.usual": "**Nearest training photos**, as near as usual for food photos",
    "fv.near.text": "{head} (in this model's own feature space: cosine distance, and pN: farther than the nearest "
                    "training photo of N % of held-back food photos; {votes} of {n} are {majority}).",
    "fv.near.caption": "{label} · {distance}",
    "fv.near.caption_pct": "{label} · {distance} · p{pct}",
    "fv.not_here": "*The photos are not on this server (yet): their names.*",
    "fv.tab.explorer": "Explorer",
    "fv.explorer.intro": "How each model does on the photos it was tested on, and how it sees every photo: the test "
                         "split's confusion matrix, every mistake on the test and validation photos, and a map of the "
                         "model's own features where photos it sees as alike lie close together. Click a mistake or a "
                         "point to open the photo in Classify.",
    "fv.explorer.mistakes": "Mistakes: test, then validation (truth → answer, calibrated probability)",
    "fv.explorer.summary": "**{title}**: {right} of the {n} test photos right ({accuracy}), {mistakes} mistakes; "
                           "{val_mistakes} more among the {val_n} validation photos ({val_accuracy} right).{near} The "
                           "map is a {method} of the model's own penultimate features: photos it sees as alike lie "
                           "close together. Precomputed by `python -m vit.explore`.",
    "fv.explorer.near": " The majority of each photo's 5 nearest training photos agrees with the model's answer on "
                        "{test} of the test photos and {val} of the validation photos.",
    "fv.explorer.corner": "truth ↓ · answer →",
    "fv.explorer.right": "right",
    "fv.explorer.diagonal": "{split} split: {trace} of {total} on the diagonal.",
    "fv.explorer.caption": "{truth} → {answer} {probability} ({split})",
    "fv.explorer.no_mistakes": "No mistakes.",
    "fv.explorer.click": "Click a photo to open it in the Classify tab, with the model's answer and its map.",
    "fv.explorer.head": "| photo | split | truth | answer | probability |",
    "fv.explorer.answered": "answered {answer}",
    "fv.explorer.legend": "● training  ■ validation  ▲ test  ✕ non-food  ·  dark outline: a wrong answer",
    "fv.explorer.hover": "Hover a point for its photo; click one to open it in Classify.",
    "fv.explorer.aria": "2-D map of {n} photos",
    "fv.split.train": "training",
    "fv.split.val": "validation",
    "fv.split.test": "test",
    "fv.split.nonfood": "non-food",
    # --- the header and the status line
    "fv.header": "# 🍕🥩🍣 FoodVision ViT\nClassify a food photo as **{classes}** with {models} and see *why*: each "
                 "answer comes with a map of the pixels it rests on ({named} by default) and a score of how "
                 "faithful that map is. The ViT trained here from scratch saw only a few hundred photos; no ViT "
                 "ImageNet weights were used anywhere (see each model's card).",
    "fv.header.models": "{n} models",
    "fv.header.one_model": "1 model",
    "fv.header.no_method": "an explanation",
    "fv.status.loading": "> ⏳ **{model} is loading** (requests for it wait)",
    "fv.status.unavailable": "> ⚠️ **{model} unavailable:** {why}",
    # --- the model card
    "fv.card.loading": "⏳ *Loading this model; a request for it waits until it is ready.*",
    "fv.card.unavailable": "⚠️ **Unavailable:** {why}",
    "fv.card.unavailable_model": "**{model} is unavailable:** {why}",
    "fv.card.started": "- **Started from:** {init}",
    "fv.card.trained": "- **Trained on:** {n_train} photos ({n_val} more held out for validation), {epochs}{learned}",
    "fv.card.learned": "; learned from their labels and from the {teacher}'s predictions{features}",
    "fv.card.features": " and feature maps",
    "fv.card.teacher": " (the teacher started from {init} weights: that knowledge reaches this model through it)",
    "fv.card.classes": "- **Classes:** {classes}",
    "fv.card.methods": "- **Explanations:** {methods}",
    "fv.card.accuracy": "- **Test accuracy:** {accuracy} on {n} photos",
    "fv.card.no_accuracy": "- **Test accuracy:** not measured",
    "fv.card.validation": " (validation: {accuracy} on {n})",
    "fv.card.size": "- **Size:** {mb} MB on disk, {params} parameters, input {px} px",
    "fv.arch.layers": "{depth} layers × {heads} heads, width {width}",
    "fv.arch.patches": "{patch} px patches on {size} px",
    "fv.arch.distilled": "DeiT distillation token",
    "fv.arch.family": " ({description})",
    "fv.epochs": "{epochs} epochs",
    "fv.epochs.passes": "{epochs} epochs of {repeats} passes",
    "fv.epochs.short": "{epochs}",
    "fv.epochs.short_passes": "{epochs} × {repeats} passes",
    "fv.init.random": "random",
    "fv.init.imagenet": "imagenet",
    "fv.init.imagenet_cnn_stem_only": "imagenet (CNN stem only)",
    "fv.init.source": "{weights} ({source})",
    "fv.init.trained": ", trained {epochs}",
    "fv.init.continued": ", then continued",
    "fv.init.from": " from {name}",
    "fv.init.digest": " ({digest})",
    "fv.list": ", ",  # between the items of a list (classes, methods, architecture)
    "fv.or": " or ",  # before the last of the classes a photo may show
    "fv.or.sep": ", ",  # between the others
    "fv.and": " and ",  # before the last of the methods the header names
    # --- the verdict (vit.trust): words first, figures in a <details>
    "fv.details": "figures",
    "fv.verdict.no_gate": "ℹ️ **This model has no out-of-distribution gate**: it cannot tell whether the photo shows "
                          "{classes} at all.",
    "fv.verdict.out": "### ⚠️ This doesn't look like {classes}\nThe model can only answer with one of its classes: "
                      "its guess and the map below are **unreliable**.",
    "fv.verdict.sure": "✅ Looks like {classes}: **{answer}**",
    "fv.verdict.unsure": "✅ Looks like {classes} · not sure: **{answer}**",
    "fv.verdict.empty": "✅ Looks like {classes}, but no class is likely enough to name",
    "fv.verdict.far": "The photo is far from every training photo: out-of-distribution score {score} > threshold "
                      "{threshold}.",
    "fv.verdict.near": "Out-of-distribution score {score} ≤ threshold {threshold}.",
    "fv.verdict.set": "{coverage} prediction set: {classes}.",
    "fv.verdict.set_empty": "{coverage} prediction set: empty.",
    "fv.verdict.fit": "`python -m vit.trust.fit` adds one.",
    "fv.verdict.damaged": "Its gate is damaged and not used: {detail}",
    # --- the answer line: a warning when unreliable, then timing and size (figures)
    "fv.unreliable": "⚠️ ***Unreliable:*** *the guess above and the map below are for a photo outside what this model "
                     "learned.*",
    "fv.timing": "⏱️ speed and size",
    "fv.timing.pass": "**{ms} ms prediction** ({timed})",
    "fv.timing.pass_reused": "**{ms} ms prediction** ({timed}, this photo's earlier pass reused)",
    "fv.timing.map": "{ms} ms {method} map",
    "fv.timing.map_reused": "{method} map reused (made earlier for this photo)",
    "fv.timing.size": "📦 {mb} MB on disk · {params} M parameters",
    "fv.timed.forward_pass": "forward pass",
    "fv.timed.forward_pass_with_attention_maps": "forward pass with attention maps",
    "fv.device.cpu": "CPU, {n} threads",
    # --- the map's faithfulness: words first, AUCs in a <details>
    "fv.faith.title": "**Is the map faithful?** ({method}{title})",
    "fv.faith.yes": "Yes: blurring the cells it marks first hurts the answer much more than a random order, and "
                    "revealing them first helps much more.",
    "fv.faith.some": "Somewhat: it beats a random order of the same cells, by a small margin.",
    "fv.faith.no": "Not clearly: on one of the two tests at least, it does no better than a random order of the same "
                   "cells; read it with care.",
    "fv.faith.deletion": "Blurring the hottest cells first: deletion AUC **{auc}** vs {random} at random (lower is "
                         "better).",
    "fv.faith.insertion": "Revealing them first: insertion AUC **{auc}** vs {random} at random (higher is better).",
    # --- Compare all
    "fv.compare.not_own": "*{method} does not apply: its default instead.*",
    "fv.compare.loading": "still loading; please try again in a few seconds.",
    "fv.compare.unavailable": "unavailable: {why}",
    # --- the Compare models tab
    "fv.tab.compare": "Compare models",
    "fv.compare.intro": "From each checkpoint's metadata. Latency: median of 20 warm forward passes at batch size 1 on "
                        "this server; press the button to measure.",
    "fv.measure": "Measure latency on this server",
    "fv.col.model": "model",
    "fv.col.init": "started from",
    "fv.col.data": "data",
    "fv.col.epochs": "epochs",
    "fv.col.accuracy": "test accuracy",
    "fv.col.params": "parameters",
    "fv.col.mb": "MB",
    "fv.col.p50": "p50 ms (bs=1)",
    "fv.table.data": "{n_train} train / {n_val} val",
    "fv.table.unavailable": "unavailable: {why}",
    "fv.plot.loss": "Loss per epoch",
    "fv.plot.acc": "Accuracy per epoch",
    "fv.plot.epoch": "epoch",
    "fv.plot.loss_y": "cross-entropy",
    "fv.plot.acc_y": "accuracy",
    "fv.plot.curve": "curve",
    "fv.plot.train": "train",
    "fv.plot.val": "val",
    "fv.reliability": "Reliability diagram",
    "fv.reliability.caption": "**Reliability diagram**: accuracy (up) against confidence (across) per confidence bin "
                              "(15 equal-width bins), before (grey) and after (blue) temperature scaling; a dot's "
                              "size is the photos in its bin; on the dotted diagonal a model's \"80 %\" is right "
                              "80 % of the time. See docs/trust.md.",
    "fv.reliability.val": "{model}: {n} validation photos (from the checkpoint's gate)",
    "fv.reliability.test": "{model}: {n} test photos (from {file})",
    "fv.reliability.unavailable": "{model}: unavailable",
    "fv.reliability.no_gate": "{model}: no gate, no temperature (`python -m vit.trust.fit` adds them)",
    "fv.reliability.no_bars": "{model}: no reliability bars in its checkpoint nor in {file} (`python -m vit.trust.ood` "
                              "measures them)",
    "fv.reliability.no_before": "{model}: no bars before temperature scaling in {file} (an older run)",
    # --- messages: a tiny photo, and the errors a person reads (vit.messages.Said codes)
    "fv.warn.tiny": "The image is only {width} x {height} pixels; the prediction means little.",
    "fv.err.image.none": "No image given: upload a photo, take one with the webcam, or click an example.",
    "fv.err.image.empty": "{name} is empty (0 bytes).",
    "fv.err.image.too_large": "{name} is too large to open safely ({detail}). The limit is {limit} megapixels; please "
                              "upload a smaller image.",
    "fv.err.image.not_image": "{name} is not an image this app can read (empty, damaged, or another kind of file). "
                              "Please upload a JPEG, PNG or WebP photo.",
    "fv.err.image.damaged": "{name} could not be decoded: it looks truncated or damaged ({detail}).",
    "fv.err.image.unreadable": "{name} could not be read as an image ({detail}).",
    "fv.err.image.megapixels": "The image is {width} x {height} = {megapixels} megapixels; the limit is {limit} "
                               "megapixels. Please upload a smaller image.",
    "fv.err.image.no_pixels": "The image has no pixels ({width} x {height}).",
    "fv.err.model.unknown": "unknown model {model!r}; choose one of {models}",
    "fv.err.model.loading": "{model} is still loading; please try again in a few seconds.",
    "fv.err.model.unavailable": "{model} is unavailable: {detail}",
    "fv.err.request.unknown_method": "unknown method {method!r} for {model}; choose one of {methods}",
    "fv.err.request.no_layer": "layer {layer} does not exist: this model has layers 1 .. {layers}",
    "fv.err.request.no_head": "head {head} does not exist: this model has heads 1 .. {heads}",
    "fv.err.request.unknown_head": "unknown head {head!r}: use 'mean', 'max' or 'head 1' .. 'head {heads}'",
    "fv.err.request.no_attention": "{model} has no attention maps: Inside the ViT is for the Vision Transformers "
                                   "({vits})",
    "fv.err.inside.not_measured": "not measured for {name} ({how})",
    "fv.err.inside.stale": "measured on another {name} (sha256 {sha}); rerun {how}",
    "fv.err.explorer.no_record": "no explorer record for {model!r}: {why}",
    "fv.err.explorer.no_file": "no explorer records in {folder} ({file}; {how} writes it)",
    "fv.err.explorer.unreadable": "{path} is unreadable ({detail})",
    "fv.err.explorer.format": "{path}: format {found}, this app reads {format}",
    "fv.err.explorer.adds_one": "{how} adds one",
    "fv.err.explorer.no_checkpoints": "no checkpoints",
    "fv.err.explorer.not_here": "{photo} is not on this server (yet): nothing to open",
    "fv.err.explorer.no_point": "the map has no point {index}",
    "fv.err.explorer.nonfood": "{photo} is one of the non-food images the gate is measured against, not a photo of "
                               "the data set: nothing to open",
    "fv.err.bank.none": "this model has no bank of training photos ({how} adds one)",
    "fv.err.bank.damaged": "this model's bank of training photos is damaged and not used ({detail})",
    "fv.err.bank.stale": "this model's bank of training photos is stale and not used ({bank} was made from other "
                         "weights or classes than {checkpoint}; {how} makes it anew)",
}

JA: dict[str, str] = {
    "fv.lang": "ja",
    "fv.switch": "[🌐 English](?view=settings)",
    "fv.tab.classify": "分類",
    "fv.photo": "料理の写真",
    "fv.model": "モデル",
    "fv.classify": "分類する",
    "fv.compare_all": "{n} つのモデルで比べる",
    "fv.card": "モデルカード",
    "fv.examples": "例（{model} が既定の手法で答えます）",
    "fv.prediction": "予測",
    "fv.explanation": "説明（モデルが見た画素の上に）",
    "fv.explanation.short": "説明",
    "fv.controls": "説明の設定",
    "fv.method": "説明の手法",
    "fv.layer": "層",
    "fv.head": "ヘッド",
    "fv.head.mean": "ヘッドの平均",
    "fv.head.max": "ヘッドの最大",
    "fv.head.n": "ヘッド {n}",
    "fv.opacity": "重ねる濃さ",
    "fv.discard": "ロールアウトの切り捨て",
    "fv.discard.info": "弱い注意から切り捨てる割合",
    "fv.curves": "忠実性の曲線：左はマップの熱いセルから順にぼかしたとき（低いほど良い）、右はそこから順に見せたとき"
                 "（高いほど良い）。破線はランダムな順番、数値は曲線の下の面積です",
    "fv.layers": "クラストークンの注意（全層）",
    "fv.patches": "モデルによる画像の区切り方（パッチ／マップのセル）",
    "fv.scale.relative": "**色：相対的な目盛り**。このマップの最も低いセルから最も高いセルまでに引き伸ばしているので、"
                         "マップどうしやモデルどうしでは比べられません。",
    "fv.scale.fixed": "**色：すべてのモデルと層に共通の固定目盛り**。1× は注意が {cells} 個のパッチに均等に広がった状態です。"
                      "このマップは{row}です。最も強いパッチは均等な取り分の **{peak}×** を受けています。"
                      "正規化エントロピーは **{entropy}** です（1 = 均等、0 = 1 つのパッチだけ）。",
    "fv.scale.nearly_uniform": "⚖️ **ほぼ均等**（エントロピー ≥ {line}）：この注意は写真全体にほぼ均等に広がっています。"
                               "模様から多くを読み取らないでください。",
    "fv.row.mean": "{heads} 個のヘッドの平均",
    "fv.row.max": "ヘッドごとの最大の重みを正規化し直したもの",
    "fv.row.attention": "層 {layer} のクラストークンの注意（{which}）",
    "fv.row.rollout": "全層にわたるロールアウトのクラストークンの行（{which}、切り捨て {discard}{dropped}）",
    "fv.row.dropped": "：各層の重みのうち弱い {share} を先に切り捨てるので、鋭さの多くはそのためです",
    "fv.tab.inside": "ViT の中身",
    "fv.inside.intro": "## ViT の中身\nViT の論文の図 7（Dosovitskiy ほか 2021）の 3 つの見方を、ここで動く Vision "
                       "Transformer ごとに並べて示します。最初の層がパッチの中に何を探すか、パッチの位置について何を"
                       "学んだか、各層で注意がどこまで届くか、です。注意の数値はテスト写真での平均です"
                       "（`python -m vit.explore.inside`）。それぞれの求め方は `docs/inside.md` にあります。",
    "fv.inside.panel.filters": "### パッチのフィルタ：最初の主成分",
    "fv.inside.panel.position": "### 位置埋め込み：各位置がほかの位置とどれだけ似ているか",
    "fv.inside.panel.distance": "### ヘッドごとの平均注意距離（層ごと）",
    "fv.neighbours": "近い学習写真",
    "fv.near.none": "ℹ️ *近い学習写真はありません：{why}。*",
    "fv.near.head.out": "**最も近い学習写真も遠く、似た写真ではありません。** ゲートは、この写真が{classes}ではないと"
                        "判断しています。これらは、モデルが知っている中で最も近い写真というだけです",
    "fv.near.head.farther": "**近い学習写真（いつもより遠い）**：最も近い写真までの距離が、取り分けておいた料理の写真の "
                            "{pct} % より遠くなっています",
    "fv.near.head.usual": "**近い学習写真**：料理の写真として、いつもどおりの近さです",
    "fv.near.text": "{head}（このモデル自身の特徴空間でのコサイン距離です。p の後の数字は、取り分けておいた料理の写真の"
                    "うち、最も近い学習写真までの距離がこの写真より短いものの割合（%）です。{n} 枚のうち {votes} 枚が"
                    "{majority}です）。",
    "fv.near.caption": "{label} · {distance}",
    "fv.near.caption_pct": "{label} · {distance} · p{pct}",
    "fv.not_here": "*写真はこのサーバーに（まだ）ないため、名前だけを示します。*",
    "fv.tab.explorer": "エクスプローラー",
    "fv.explorer.intro": "各モデルがテスト写真にどれだけ正しく答えるか、そしてすべての写真をどう見ているかを示します。"
                         "テスト分割の混同行列、テストと検証の写真での誤りのすべて、そしてモデル自身の特徴のマップ"
                         "（モデルが似ていると見る写真ほど近くに並びます）です。誤りか点をクリックすると、その写真を"
                         "「分類」タブで開きます。",
    "fv.explorer.mistakes": "誤り：テスト、次に検証（正解 → 答え、較正済みの確率）",
    "fv.explorer.summary": "**{title}**：テスト写真 {n} 枚のうち {right} 枚が正解（{accuracy}）で、誤りは {mistakes} 枚"
                           "です。ほかに検証写真 {val_n} 枚のうち {val_mistakes} 枚を誤りました（正解 {val_accuracy}）。"
                           "{near}マップは、モデル自身の最後から 2 番目の層の特徴を {method} で平面に写したもので、"
                           "モデルが似ていると見る写真ほど近くに並びます。`python -m vit.explore` で事前に計算しました。",
    "fv.explorer.near": "各写真に最も近い 5 枚の学習写真の多数決は、テスト写真の {test}、検証写真の {val} でモデルの"
                        "答えと一致します。",
    "fv.explorer.corner": "正解 ↓ · 答え →",
    "fv.explorer.right": "正解",
    "fv.explorer.diagonal": "{split}分割：対角線上は {total} 枚中 {trace} 枚。",
    "fv.explorer.caption": "{truth} → {answer} {probability}（{split}）",
    "fv.explorer.no_mistakes": "誤りはありません。",
    "fv.explorer.click": "写真をクリックすると、「分類」タブでモデルの答えとマップとともに開きます。",
    "fv.explorer.head": "| 写真 | 分割 | 正解 | 答え | 確率 |",
    "fv.explorer.answered": "答え：{answer}",
    "fv.explorer.legend": "● 学習  ■ 検証  ▲ テスト  ✕ 食べ物以外  ·  濃い縁取り：誤った答え",
    "fv.explorer.hover": "点にカーソルを合わせると写真の名前が出ます。クリックすると「分類」タブで開きます。",
    "fv.explorer.aria": "写真 {n} 枚の 2 次元マップ",
    "fv.split.train": "学習",
    "fv.split.val": "検証",
    "fv.split.test": "テスト",
    "fv.split.nonfood": "食べ物以外",
    "fv.header": "# 🍕🥩🍣 FoodVision ViT\n料理の写真を {models}で **{classes}** に分類し、その*理由*を示します。"
                 "答えごとに、根拠となった画素のマップ（既定は {named}）と、そのマップがどれだけ忠実かのスコアが付きます。"
                 "ここでゼロから学習した ViT が見た写真は数百枚だけで、ViT の ImageNet 重みはどこにも使っていません"
                 "（各モデルのカードを参照）。",
    "fv.header.models": "{n} 個のモデル",
    "fv.header.one_model": "1 個のモデル",
    "fv.header.no_method": "説明",
    "fv.status.loading": "> ⏳ **{model} を読み込み中**（このモデルへのリクエストは待ちます）",
    "fv.status.unavailable": "> ⚠️ **{model} は使えません：** {why}",
    "fv.card.loading": "⏳ *このモデルを読み込み中です。リクエストは準備ができるまで待ちます。*",
    "fv.card.unavailable": "⚠️ **使えません：** {why}",
    "fv.card.unavailable_model": "**{model} は使えません：** {why}",
    "fv.card.started": "- **初期値：** {init}",
    "fv.card.trained": "- **学習：** 写真 {n_train} 枚（ほかに検証用 {n_val} 枚）で {epochs}{learned}",
    "fv.card.learned": "。ラベルと {teacher} の予測{features}から学びました",
    "fv.card.features": "と特徴マップ",
    "fv.card.teacher": "（教師は {init} の重みから始めたので、その知識は教師を通してこのモデルに届いています）",
    "fv.card.classes": "- **クラス：** {classes}",
    "fv.card.methods": "- **説明の手法：** {methods}",
    "fv.card.accuracy": "- **テストの正解率：** 写真 {n} 枚で {accuracy}",
    "fv.card.no_accuracy": "- **テストの正解率：** 未測定",
    "fv.card.validation": "（検証：{n} 枚で {accuracy}）",
    "fv.card.size": "- **大きさ：** ディスク上 {mb} MB、パラメータ {params} 個、入力 {px} px",
    "fv.arch.layers": "{depth} 層 × {heads} ヘッド、幅 {width}",
    "fv.arch.patches": "{size} px の画像に {patch} px のパッチ",
    "fv.arch.distilled": "DeiT の蒸留トークン",
    "fv.arch.family": "（{description}）",
    "fv.epochs": "{epochs} エポック",
    "fv.epochs.passes": "{epochs} エポック（各 {repeats} 周）",
    "fv.epochs.short": "{epochs}",
    "fv.epochs.short_passes": "{epochs} × {repeats} 周",
    "fv.init.random": "ランダム",
    "fv.init.imagenet": "ImageNet",
    "fv.init.imagenet_cnn_stem_only": "ImageNet（CNN の幹のみ）",
    "fv.init.source": "{weights}（{source}）",
    "fv.init.trained": "から {epochs} 学習",
    "fv.init.continued": "し、その続きを学習",
    "fv.init.from": "（{name} から）",
    "fv.init.digest": "（{digest}）",
    "fv.list": "、",
    "fv.or": "か",
    "fv.or.sep": "か",
    "fv.and": "と",
    "fv.details": "数値",
    "fv.verdict.no_gate": "ℹ️ **このモデルには分布外ゲートがありません**：写真が{classes}なのかどうかを判断できません。",
    "fv.verdict.out": "### ⚠️ {classes}には見えません\nこのモデルは自分のクラスのどれかで答えるしかないので、"
                      "推測と下のマップは**信頼できません**。",
    "fv.verdict.sure": "✅ {classes}のようです：**{answer}**",
    "fv.verdict.unsure": "✅ {classes}のようですが、確信はありません：**{answer}**",
    "fv.verdict.empty": "✅ {classes}のようですが、どのクラスとも言い切れません",
    "fv.verdict.far": "写真はどの学習写真からも遠く離れています：分布外スコア {score} > しきい値 {threshold}。",
    "fv.verdict.near": "分布外スコア {score} ≤ しきい値 {threshold}。",
    "fv.verdict.set": "{coverage} 予測集合：{classes}。",
    "fv.verdict.set_empty": "{coverage} 予測集合：空。",
    "fv.verdict.fit": "`python -m vit.trust.fit` で追加できます。",
    "fv.verdict.damaged": "ゲートが壊れているため使っていません：{detail}",
    "fv.unreliable": "⚠️ ***信頼できません：*** *上の推測と下のマップは、このモデルが学んだ範囲の外の写真についてのものです。*",
    "fv.timing": "⏱️ 速さと大きさ",
    "fv.timing.pass": "**予測 {ms} ms**（{timed}）",
    "fv.timing.pass_reused": "**予測 {ms} ms**（{timed}、この写真で前に計算したものを再利用）",
    "fv.timing.map": "{method} マップ {ms} ms",
    "fv.timing.map_reused": "{method} マップは再利用（この写真で前に作ったもの）",
    "fv.timing.size": "📦 ディスク上 {mb} MB · パラメータ {params} M 個",
    "fv.timed.forward_pass": "順伝播",
    "fv.timed.forward_pass_with_attention_maps": "注意マップ付きの順伝播",
    "fv.device.cpu": "CPU、{n} スレッド",
    "fv.faith.title": "**このマップは忠実？**（{method}{title}）",
    "fv.faith.yes": "はい：マップが示すセルから先にぼかすと、ランダムな順番よりずっと答えが崩れ、先に見せるとずっと戻ります。",
    "fv.faith.some": "ある程度：同じセルのランダムな順番には勝ちますが、差は小さいです。",
    "fv.faith.no": "はっきりしません：二つの検査の少なくとも一方で、同じセルのランダムな順番に勝てていません。慎重に見てください。",
    "fv.faith.deletion": "熱いセルから先にぼかす：削除 AUC **{auc}**、ランダムでは {random}（低いほど良い）。",
    "fv.faith.insertion": "熱いセルから先に見せる：挿入 AUC **{auc}**、ランダムでは {random}（高いほど良い）。",
    "fv.compare.not_own": "*{method} はこのモデルでは使えないので、既定の手法で答えました。*",
    "fv.compare.loading": "まだ読み込み中です。数秒後にもう一度お試しください。",
    "fv.compare.unavailable": "使えません：{why}",
    "fv.tab.compare": "モデルの比較",
    "fv.compare.intro": "各チェックポイントのメタデータから。遅延：このサーバーでバッチサイズ 1 の温まった順伝播 20 回の中央値です。"
                        "ボタンを押すと測ります。",
    "fv.measure": "このサーバーで遅延を測る",
    "fv.col.model": "モデル",
    "fv.col.init": "初期値",
    "fv.col.data": "データ",
    "fv.col.epochs": "エポック",
    "fv.col.accuracy": "テストの正解率",
    "fv.col.params": "パラメータ",
    "fv.col.mb": "MB",
    "fv.col.p50": "p50 ms（バッチ 1）",
    "fv.table.data": "学習 {n_train} / 検証 {n_val}",
    "fv.table.unavailable": "使えません：{why}",
    "fv.plot.loss": "エポックごとの損失",
    "fv.plot.acc": "エポックごとの正解率",
    "fv.plot.epoch": "エポック",
    "fv.plot.loss_y": "交差エントロピー",
    "fv.plot.acc_y": "正解率",
    "fv.plot.curve": "曲線",
    "fv.plot.train": "学習",
    "fv.plot.val": "検証",
    "fv.reliability": "信頼度図",
    "fv.reliability.caption": "**信頼度図**：確信度の区間（幅の等しい 15 区間）ごとに、確信度（横）に対する正解率（縦）を、"
                              "温度スケーリングの前（灰色）と後（青）で示します。点の大きさは区間の写真の数です。点線の対角線上では、"
                              "モデルの「80 %」は 80 % の確率で当たります。docs/trust.md を参照。",
    "fv.reliability.val": "{model}：検証写真 {n} 枚（チェックポイントのゲートから）",
    "fv.reliability.test": "{model}：テスト写真 {n} 枚（{file} から）",
    "fv.reliability.unavailable": "{model}：使えません",
    "fv.reliability.no_gate": "{model}：ゲートも温度もありません（`python -m vit.trust.fit` で追加できます）",
    "fv.reliability.no_bars": "{model}：チェックポイントにも {file} にも信頼度の棒がありません（`python -m vit.trust.ood` "
                              "で測れます）",
    "fv.reliability.no_before": "{model}：{file} に温度スケーリング前の棒がありません（古い実行）",
    "fv.warn.tiny": "画像は {width} × {height} ピクセルしかありません。予測にはあまり意味がありません。",
    "fv.err.image.none": "画像がありません。写真をアップロードするか、ウェブカメラで撮るか、例をクリックしてください。",
    "fv.err.image.empty": "{name} は空です（0 バイト）。",
    "fv.err.image.too_large": "{name} は大きすぎて安全に開けません。上限は {limit} メガピクセルです。もっと小さい画像を"
                              "アップロードしてください。",
    "fv.err.image.not_image": "{name} は、このアプリで読める画像ではありません（空か、壊れているか、別の種類のファイルです）。"
                              "JPEG・PNG・WebP の写真をアップロードしてください。",
    "fv.err.image.damaged": "{name} をデコードできませんでした。途中で切れているか、壊れているようです。",
    "fv.err.image.unreadable": "{name} を画像として読めませんでした。",
    "fv.err.image.megapixels": "画像は {width} × {height} = {megapixels} メガピクセルで、上限は {limit} メガピクセルです。"
                               "もっと小さい画像をアップロードしてください。",
    "fv.err.image.no_pixels": "画像に画素がありません（{width} × {height}）。",
    "fv.err.model.unknown": "不明なモデル {model!r} です。{models} から選んでください。",
    "fv.err.model.loading": "{model} はまだ読み込み中です。数秒後にもう一度お試しください。",
    "fv.err.model.unavailable": "{model} は使えません：{detail}",
    "fv.err.request.unknown_method": "{model} に手法 {method!r} はありません。{methods} から選んでください。",
    "fv.err.request.no_layer": "層 {layer} はありません。このモデルの層は 1〜{layers} です。",
    "fv.err.request.no_head": "ヘッド {head} はありません。このモデルのヘッドは 1〜{heads} です。",
    "fv.err.request.unknown_head": "不明なヘッド {head!r} です。'mean'、'max'、'head 1'〜'head {heads}' のどれかを"
                                   "使ってください。",
    "fv.err.request.no_attention": "{model} には注意マップがありません。「ViT の中身」は Vision Transformer（{vits}）"
                                   "のためのものです。",
    "fv.err.inside.not_measured": "`{name}` ではまだ測っていません（`{how}`）",
    "fv.err.inside.stale": "別の `{name}` で測ったものです（sha256 {sha}）。`{how}` を実行し直してください",
    "fv.err.explorer.no_record": "{model!r} のエクスプローラー記録がありません：{why}",
    "fv.err.explorer.no_file": "{folder} にエクスプローラー記録がありません（{file}。`{how}` で書き出せます）",
    "fv.err.explorer.unreadable": "{path} を読めません（{detail}）",
    "fv.err.explorer.format": "{path} の形式は {found} ですが、このアプリが読むのは {format} です",
    "fv.err.explorer.adds_one": "`{how}` で追加できます",
    "fv.err.explorer.no_checkpoints": "チェックポイントがありません",
    "fv.err.explorer.not_here": "{photo} はこのサーバーに（まだ）ないため、開けません",
    "fv.err.explorer.no_point": "マップに点 {index} はありません",
    "fv.err.explorer.nonfood": "{photo} はゲートの測定に使う食べ物以外の画像で、データセットの写真ではないため、"
                               "開けません",
    "fv.err.bank.none": "このモデルには学習写真のバンクがありません（`{how}` で追加できます）",
    "fv.err.bank.damaged": "このモデルの学習写真のバンクは壊れているため使っていません（{detail}）",
    "fv.err.bank.stale": "このモデルの学習写真のバンクは古いため使っていません（{bank} は {checkpoint} とは別の重みか"
                         "クラスから作られています。`{how}` で作り直せます）",
}

# Names from the registries: English there, Japanese here (a method or family registered later reads English
# until it gets an entry; tests/test_i18n.py asks for one).
EN.update({f"fv.method.{m}": registry.title(m) for m in registry.ids()})
EN.update({f"fv.family.{f}": families.get(f).description for f in families.names()})
EN.update(inside_words.WORDS)  # the Inside tab's sentences: English there (docs/inside.md says them too)
JA.update({
    "fv.method.attention": "注意：1 つの層",
    "fv.method.rollout": "注意のロールアウト",
    "fv.method.chefer": "Chefer の関連度",
    "fv.method.lrp": "LRP（保存的な関連度）",
    "fv.method.occlusion": "遮蔽（オクルージョン）",
    "fv.method.rise": "RISE",
    "fv.method.grad-cam": "Grad-CAM",
    "fv.family.scratch_vit": "私たちの Vision Transformer（Dosovitskiy ほか 2021、式 1〜4）、ランダムな重みから学習",
    "fv.family.timm_vit": "ImageNet の EfficientNet-Lite0 の幹の上に timm の VisionTransformer（3.1 節のハイブリッド）",
    "fv.family.effnet": "CNN のベースライン、ImageNet から微調整",
})
JA.update({  # vit.explore.inside_words.WORDS in Japanese
    "fv.inside.filters": "この ViT の {dim} 個のパッチフィルタが最も大きく変わる {n} 個の方向を、色で示します（灰色 = 0、"
                         "左上が最初）。{px} × {px} px の各パッチの中に何を探しているかです。最初の {first} 個でフィルタの"
                         "ばらつきの {share_first}、{n} 個すべてで {share_all} を占めます。",
    "fv.inside.filters.none": "画素のフィルタはありません。この ViT のパッチ埋め込みが読むのは画素ではなく、CNN の幹の "
                              "{channels} 個の特徴チャネルで、{px} × {px} px のセルを 1 つずつ読みます（{k} × {k} の射影）。",
    "fv.inside.position": "この ViT は各パッチの位置を学んでいます。隣り合う位置の埋め込みは似ています（コサイン類似度 "
                          "{neighbours}、ランダムな 2 つの位置では {random}）{centre}{mirror}。",
    "fv.inside.position.centre": "。中央と縁は逆向きです（{centre}）",
    "fv.inside.position.mirror": "。左右の鏡像の位置どうしが似ている（{mirror}）ので、パッチが左右のどちら側にあるかより、"
                                 "端からどれだけ離れているかをよく表しています",
    "fv.inside.position.none": "位置埋め込みに配置は見えません。隣り合う位置 {neighbours}、ランダムな 2 つの位置 {random}、"
                               "ばらつき {spread}（ランダムな {dim} 次元ベクトルなら {random_spread}）。{cnn}",
    "fv.inside.position.cnn": "おそらく CNN の幹の特徴が、各セルの位置をすでに伝えているのでしょう（推測で、測ってはいません）。",
    "fv.inside.distance.none": "注意の数値はありません：{note}。",
    "fv.inside.distance.even": "どの層のどのヘッドでも、各パッチは {patches} 個すべてのパッチにほぼ均等に注意を向けています"
                               "（正規化エントロピー {entropy}、1 = 均等。最も強いパッチでも均等な取り分の {peak}×）。"
                               "そのため点はすべて、均等な注意の破線（{uniform} px）の上にあります。パッチを選び出すのは"
                               "クラストークンだけです（エントロピー {cls_entropy}、最も強いもので {cls_peak}×）。"
                               "{split} の写真 {photos} 枚での平均です。",
    "fv.inside.distance": "層 1 では、各パッチは自分で選んだ少数のパッチに注意を向けます（正規化エントロピー {entropy}、"
                          "最も強いものは均等な取り分の {peak}×）。その距離は平均 {distance} px で、均等な注意なら "
                          "{uniform} px です。選択的ですが、{local}。{split} の写真 {photos} 枚での平均です。",
    "fv.inside.local.some": "論文の図で距離が最も短いヘッドのように、局所的なヘッドもあります",
    "fv.inside.local.none": "論文の図で距離が最も短いヘッドのような、局所的なヘッドはありません",
    "fv.inside.contrast": "**{sharp} の最初の層にあって、{flat} の最初の層にないもの：** 各パッチが少数のほかのパッチを"
                          "選び出します（正規化エントロピー {sharp_entropy}、最も強いものは均等な取り分の {sharp_peak}×）。"
                          "一方 {flat} のパッチは、{patches} 個すべてに注意を均等に広げています（{flat_entropy}、"
                          "{flat_peak}×）{cnn}。",
    "fv.inside.contrast.cnn": "。CNN の幹が最初の層より前に各セルを近くのセルと混ぜているためで、論文もハイブリッドでは"
                              "注意が局所的でなくなることを見いだしています",
    "fv.inside.contrast.plain": "層 1 では、{sharp} のパッチのほうが {flat} のパッチ（{flat_entropy}）より選択的に注意を"
                                "向けます（正規化エントロピー {sharp_entropy}、1 = 均等）。",
})
TABLES: dict[str, dict[str, str]] = {"en": EN, "ja": JA}


def lang_of(value: object) -> str:
    """The page's language from the probe's value ("en" / "ja" once Gradio has translated it); English for
    anything else (an untranslated marker, an API client)."""
    return value if value in LANGS else DEFAULT


def say(lang: str, key: str, **values: object) -> str:
    """The table's text for `key` in `lang`, its {fields} filled (English where `lang` lacks the key)."""
    template = TABLES.get(lang, EN).get(key, EN[key])
    return template.format(**values) if values else template


def words(lang: str) -> dict[str, str]:
    """The whole table of `lang`, English where it lacks a key: for functions that take their templates as a
    `words` table (vit.explore.inside_words, below the app, says the Inside tab's sentences for docs/ too)."""
    return {**EN, **TABLES.get(lang, EN)}


def known(key: str) -> bool:
    return key in EN


def name(lang: str, key: str, fallback: str) -> str:
    """A registry's name in `lang` ("fv.method.lrp"), or `fallback` when the table has none."""
    return TABLES.get(lang, EN).get(key) or EN.get(key) or fallback


def method_title(method: str, lang: str = DEFAULT) -> str:
    return name(lang, f"fv.method.{method}", registry.title(method))


def class_name(name_: str, lang: str = DEFAULT) -> str:
    """A class as the page says it: ja "ピザ" for "pizza"; a checkpoint's other classes keep their names."""
    return CLASS_NAMES.get(lang, {}).get(name_, name_)


def listed(items: Iterable[str], lang: str = DEFAULT, last: str = "fv.list", sep: str = "fv.list") -> str:
    """Items joined as `lang` lists them: `sep` between them, `last` before the last one ("fv.or.sep", "fv.or":
    "pizza, steak or sushi", "ピザかステーキか寿司")."""
    items = list(items)
    if len(items) < 2:
        return "".join(items) or "?"
    return say(lang, sep).join(items[:-1]) + say(lang, last) + items[-1]


def said(error: Exception, lang: str = DEFAULT) -> str:
    """An error's sentence in `lang`: the table's "fv.err.<code>" filled with its values (a value that is itself
    a coded note, e.g. why a record is missing, said in `lang` too); its own English text when it has no code
    the table knows."""
    code = getattr(error, "code", None) if isinstance(error, Said) else None
    key = f"fv.err.{code}"
    if not (code and known(key)):
        return str(error)
    return say(lang, key, **{k: said(v, lang) if isinstance(v, Said) else v for k, v in error.values.items()})


def details(summary: str, body: str) -> str:
    """Markdown: a closed <details> whose `summary` line opens `body` (the figures behind a sentence)."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def key_of(text: str, prefix: str) -> str:
    """A free text from a record as a table key: ("imagenet (CNN stem only)", "fv.init") -> "fv.init.imagenet_cnn_stem_only"."""
    return f"{prefix}." + re.sub(r"\W+", "_", text.lower()).strip("_")


def marker(key: str) -> gr.I18nData:
    """A static text that Gradio translates in the browser (the component's whole label or value)."""
    return gr.I18n()(key)


def translations(extra: Mapping[str, Mapping[str, str]] | None = None) -> gr.I18n:
    """The gr.I18n for launch(i18n=...): both tables, then the texts formatted at start-up (`extra`: {lang: {key:
    text}}, e.g. "fv.header" filled with the models served). A key missing in a language reads English there,
    so the page never shows a raw key."""
    extra = extra or {}
    return gr.I18n(**{lang: {**EN, **TABLES[lang], **extra.get(DEFAULT, {}), **extra.get(lang, {})} for lang in LANGS})
