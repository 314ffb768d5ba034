"""Models: the classifiers qtl trains, and the files they live in.

backbones/  ImageNet backbones by name (torchvision, the bundled efficientnet_lite0, timm)
weights     are a backbone's ImageNet weights here, downloadable, or offline; the bundled fallback
heads       `DressedQuantumCircuit` (Linear -> tanh * pi/2 -> circuit -> Linear), its twin, `Projected`
kernels     `KernelSVM`: the kernel baselines (quantum fidelity kernel, RBF) on the same features
variants    the five variants as one `Classifier` (backbone + head): `build_model(ModelConfig)`
checkpoint  the one safe checkpoint format: `save_checkpoint`, `load_checkpoint`
store       a folder of checkpoints: list, import uploads, delete
"""
