"""Deploying trained classifiers: portable exported graphs, and a REST API that serves checkpoints.

portable    the classifier as plain tensor ops: the trained circuit folded into constant matrices
export      `export_model`: ONNX or TorchScript files with preprocessing and class names inside
runtime     exported files run by onnxruntime or TorchScript, answering like `qtl.analysis.predict`
standalone  classify with an exported ONNX file using only onnxruntime, numpy and Pillow (no qtl)
limits      what a server accepts (bytes, images, pixels, formats) and how it refuses the rest
batching    `MicroBatcher`: concurrent requests share batches on a few compute threads
models      `ModelStore`: the loaded checkpoints a server answers with
server      `create_app`: the FastAPI app (POST /predict, GET /models, /healthz, /docs)
ray_serve   the same app as Ray Serve replicas
"""
