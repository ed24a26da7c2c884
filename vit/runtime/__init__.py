"""Where forward passes run: PyTorch eager or ONNX Runtime behind one interface (`engines`), writing and
checking ONNX exports (`export`, `python -m vit.runtime.export`), and which engine serves a checkpoint,
exporting it first when that is what it takes (`choice`)."""
