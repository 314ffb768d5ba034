"""Analysis of trained models.

inference   `predict` over loaded checkpoints, quantum traces, evaluation on a split
explain     Grad-CAM and gradient saliency through the whole model, circuit included
robustness  accuracy under noise and on (fake) quantum backends
hardware_runs  a checkpoint on a device: estimate, one job, mitigation, scoring, resume from the database
difflab     time per step and gradient agreement of engines and differentiation methods
plateau     the barren-plateau scan: gradient variance against qubits and depth (`qtl diagnose`)
"""
