"""Deploying trained classifiers: portable exported graphs, and a REST API that serves checkpoints.

portable    the classifier as plain tensor ops: the trained circuit folded into constant matrices
export      `export_model`: ONNX or TorchScript files with preprocessing and class names inside
runtime     exported files run by onnxruntime or TorchScript, answering like `qtl.analysis.predict`
standalone  classify with an exported ONNX file using only onnxruntime, numpy and Pillow (no qtl)
"""
