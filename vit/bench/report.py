"""The performance tables of `python -m vit.bench` and docs/performance.md, from a benchmark result."""
from __future__ import annotations

# ---------------------------------------------------------------- performance (python -m vit.bench)

VARIANTS = {"baseline": "plain (inference_mode)", "no_grad": "no_grad instead of inference_mode",
            "channels_last": "channels-last convolutions", "int8": "int8 dynamic quantisation (nn.Linear)",
            "compile": "torch.compile"}


def _ms(s: dict) -> str:
    return f"{s['p50']:.1f}"


def _x(r: float) -> str:
    return f"{r:.2f}x"


def _verdict(ok: bool) -> str:
    return "meets it" if ok else "**misses it**"


def machine_line(result: dict) -> str:
    """One sentence naming where and how the figures were measured."""
    m, s = result["machine"], result["settings"]
    line = (f"Measured by `python -m vit.bench --runs {s['runs']}` on {m['cpu']} ({m['cores']} cores, "
            f"{m['cpu_capability']}), torch {m['torch']} with {m['torch_threads']} threads, timm {m['timm']}"
            f"{', onnxruntime ' + m['onnxruntime'] if m.get('onnxruntime') else ''}, "
            f"Python {m['python']}. Matmul floor: {result['floor']['matmul_gflops_per_s']:.0f} GFLOP/s "
            f"({result['floor']['how']}).")
    if m.get("load_avg_start", 0.0) > max(0.5, 0.1 * m["cores"]):  # absent from a record read back from its table
        line += (f" **Other work was running** (load average {m['load_avg_start']:.1f} at the start, "
                 f"{m.get('load_avg_end', float('nan')):.1f} at the end): the figures are noisy; the best-run "
                 "ratios are the least disturbed.")
    return line


def model_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Per checkpoint: size, FLOPs, latency against the floor, throughput, explanation cost, memory."""
    headers = ["model", "parameters", "file MB", "GFLOPs", "p50 ms", "p95 ms", "floor ms", "x floor",
               f"images/s (bs {result['settings']['batch_size']})", "explanation", "explanation p50 ms",
               "serving RSS MB"]
    rows = []
    for family, m in result["models"].items():
        title = m.get("title", family)
        if m["status"] != "ok":
            rows.append([title, f"missing: {m['error']}"] + [""] * (len(headers) - 2))
            continue
        rss = m.get("rss_mb", {})
        rss_text = f"{rss['serve_mb']:.0f} ({rss['import_mb']:.0f} before loading)" if "serve_mb" in rss else \
            ("probe failed: " + rss["error"] if "error" in rss else "")
        rows.append([title, f"{m['params'] / 1e6:.2f} M", f"{m['file_mb']:.1f}", f"{m['gflops']:.3f}",
                     _ms(m["latency_ms"]), f"{m['latency_ms']['p95']:.1f}", f"{m['floor_ms']:.2f}",
                     f"{m['latency_over_floor']:.1f}x", f"{m['throughput_images_per_s']:.0f}", m["explain"]["what"],
                     _ms(m["explain"]["latency_ms"]), rss_text])
    return headers, rows


def reference_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Each comparison with its ratio and, where the issue set one, its bar."""
    headers = ["comparison", "measured p50 ms", "reference p50 ms", "ratio (p50)", "ratio (best run)", "bar",
               "verdict"]
    refs, titles = result["references"], {f: m.get("title", f) for f, m in result["models"].items()}
    rows = []
    if "scratch_vs_timm" in refs:
        r = refs["scratch_vs_timm"]
        logits = "match" if r["logits_allclose"] else "**differ**"
        rows.append([f"{titles[r['model']]} vs timm `{r['timm_class'].rsplit('.', 1)[-1]}`, same weights "
                     f"(logits {logits}, max diff {r['max_abs_diff']:.1e})", _ms(r["ours_ms"]), _ms(r["timm_ms"]),
                     _x(r["ratio"]["p50"]), _x(r["ratio"]["best"]), f"<= {r['bar']}", _verdict(r["within_bar"])])
    for family, r in refs.get("attention_over_forward", {}).items():
        m = result["models"][family]
        rows.append([f"{titles[family]}: all layers' attention maps vs plain forward", _ms(m["attention_maps_ms"]),
                     _ms(m["latency_ms"]), _x(r["p50"]), _x(r["best"]), f"<= {r['bar']}", _verdict(r["within_bar"])])
    h = refs.get("hybrid_vs_lite0", {})
    if "ratio" in h:
        rows.append([f"{titles[h['model']]} vs plain {h['reference']} at {h['input_px']} px "
                     f"({h['hybrid_gflops']:.2f} vs {h['lite0_gflops']:.2f} GFLOPs; the Lite0 stem is "
                     f"{h['stem_share']['p50']:.0%} of the hybrid's time, {h['stem_share']['best']:.0%} by best runs)", _ms(h["hybrid_ms"]), _ms(h["lite0_ms"]),
                     _x(h["ratio"]["p50"]), _x(h["ratio"]["best"]), "", ""])
    return headers, rows


def optimisation_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Each CPU speed-up against the plain model, with what it does to the logits and the accuracy."""
    headers = ["model", "variant", "p50 ms", "speedup (p50)", "speedup (best run)", "logits max diff",
               "test accuracy"]
    rows = []
    for family, variants in result["optimisations"].items():
        title = result["models"][family].get("title", family)
        for v in variants:
            acc = ""
            if "test" in v:
                acc = f"{v['test']['accuracy']:.1%} (plain: {v['baseline_test']['accuracy']:.1%}; same top-1 on " \
                      f"{v['test']['agreement']:.0%} of {v['test']['n_images']} images)"
            diff = "0 (bit-exact)" if v["bit_exact"] else f"{v['max_abs_diff']:.1e}"
            name = VARIANTS.get(v["variant"], v["variant"])
            if " at once" in name:
                name = name.replace(" at once", " requests at once") + " (time for all; speedup vs one by one)"
            rows.append([title, name, _ms(v["latency_ms"]), _x(v["speedup"]), _x(v["speedup_best"]), diff, acc])
    return headers, rows


ENGINES = {"torch": "PyTorch eager (inference_mode)", "onnxruntime": "ONNX Runtime (vit.runtime.engines)",
           "onnxruntime int8": "ONNX Runtime, int8 export", "bare onnxruntime": "bare ONNX Runtime session"}


def engine_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Each engine at each batch size: latency against the floor, eager and the bare session; top-1."""
    headers = ["model", "engine", "batch", "p50 ms", "p95 ms", "x floor", "vs eager (p50)", "vs bare session (p50)",
               "top-1 = eager"]
    rows = []
    for family, engines in result.get("engines", {}).items():
        title = result["models"][family].get("title", family)
        for e in engines:
            agree = f"{e['top1_agreement']:.1%}" if "top1_agreement" in e else ""
            bare = _x(e["over_bare"]) if "over_bare" in e else ""
            rows.append([title, ENGINES.get(e["engine"], e["engine"]), str(e["batch_size"]), _ms(e["latency_ms"]),
                         f"{e['latency_ms']['p95']:.1f}", f"{e['over_floor']:.1f}x", _x(e["over_torch"]), bare, agree])
    return headers, rows


def explanation_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """A full /explain per model and method: the map plus its deletion / insertion score and random bar."""
    explained = result.get("explanations", {})
    timed = any("redraw_ms" in e for rows_ in explained.values() for e in rows_)  # runs from before: no columns
    headers = ["model", "method", "engine", "p50 s", "max s", "bar s", "within bar"]
    headers += ["map ms", "score ms", "redraw ms", "method switch ms"] if timed else []
    rows = []
    for family, methods in explained.items():
        title = result["models"][family].get("title", family)
        for e in methods:
            name = f"{e['method']} (default)" if e["default"] else e["method"]
            rows.append([title, name, e["engine"], f"{e['p50_s']:.2f}", f"{e['max_s']:.2f}", f"{e['bar_s']:.0f}",
                         _verdict(e["within_bar"]), *(interaction_cells(e) if timed else [])])
    return headers, rows


def interaction_cells(e: dict) -> list[str]:
    """The default method's map / score split, redraw and method switch (vit.bench.explanations.bench_interaction;
    blank for the other methods and in runs from before it)."""
    if "redraw_ms" not in e:
        return [""] * 4
    return [f"{e['map_ms']:.0f}", f"{e['score_ms']:.0f}", f"{e['redraw_ms']:.0f}",
            f"{e['switch_ms']:.0f} (from {e['switch_from']})"]


def gate_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The out-of-distribution gate's added server time per /predict (vit.bench.gate_cost): medians."""
    headers = ["model", "engine", "request ms", "model's pass ms", "gate ms", "gate's share of the request"]
    rows = []
    for family, g in result.get("gate", {}).items():
        title = result["models"].get(family, {}).get("title", family)
        if g.get("gate") is None:
            rows.append([title, "", "", "", "no gate", ""])
            continue
        rows.append([title, f"{g['engine']} (gate: {g['backbone_engine']})", f"{g['request_ms']:.1f}",
                     f"{g['forward_ms']:.1f}", f"{g['gate_ms']:.1f}", f"{g['gate_share']:.0%}"])
    return headers, rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


PERFORMANCE_NOTES = (
    "p50/p95: percentiles of {runs} warm runs after {warmup} untimed ones, batch size 1. "
    "GFLOPs: counted with `torch.utils.flop_counter.FlopCounterMode` (FLOPs = 2 x multiply-accumulates). "
    "Floor: those FLOPs at the matmul rate above, the time a perfectly efficient CPU kernel would take; "
    "'x floor' is how many floors the forward pass takes. Compared figures were timed interleaved "
    "({block} calls of each in turn) so that background load hits both sides alike, except the rows with "
    "requests at once: those are timed on their own, since their extra threads slow whatever runs next. "
    "Serving RSS: peak "
    "resident memory of a fresh process that loads one checkpoint and classifies and explains one image; "
    "the benchmark's own process peaked at {bench_peak_rss_mb:.0f} MB (ru_maxrss).")


def _notes(result: dict) -> str:
    return PERFORMANCE_NOTES.format(**result["settings"], block=result["block"],
                                    bench_peak_rss_mb=result["bench_peak_rss_mb"])


def _sections(result: dict) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    return [("Models", model_rows(result)), ("References", reference_rows(result)),
            ("CPU optimisations (batch size 1; speedup over the plain model)", optimisation_rows(result)),
            ("Engines (PyTorch eager vs ONNX Runtime; x floor: times the batch's matmul floor)", engine_rows(result)),
            ("Full explanations (`/explain`: map, deletion and insertion curves, random bar; "
             "p50 of {runs} after one untimed)".format(runs=result["settings"].get("explain_runs", 0)),
             explanation_rows(result)),
            ("Out-of-distribution gate (`/predict`: Predictor.answer, the shared Lite0 pass and the kNN verdict "
             "after the model's own; bar: 10 % of the request)", gate_rows(result))]


def performance_markdown(result: dict) -> str:
    """The README's Performance section, from `vit.bench.run`'s result."""
    parts = [machine_line(result), ""]
    for title, (headers, rows) in _sections(result):
        parts += [f"### {title}", "", markdown_table(headers, rows), ""]
    parts.append(_notes(result))
    return "\n".join(parts)


def performance_text(result: dict) -> str:
    """The same figures as aligned plain-text tables, for a terminal."""
    parts = [machine_line(result), ""]
    for title, (headers, rows) in _sections(result):
        parts += [title, text_table(headers, rows), ""]
    parts.append(_notes(result))
    return "\n".join(parts)
