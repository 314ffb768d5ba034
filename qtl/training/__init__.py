"""Training: the loop and the steps it takes.

fit          `fit(ModelConfig, TrainConfig)`: the loop (train, evaluate, schedule, log, checkpoint)
optim        the optimizers (one Adam) and Adam's update for the steps that bypass `.step()`
steps        `step_for_run`: which step a run takes; autograd's and the compiled step
closed_form  the whole step of a real dressed circuit in closed form, without autograd
metrics      accuracy, per-class precision/recall/F1, confusion matrix, ROC-AUC
gradients    gradient norms per parameter group each epoch; the vanishing-circuit warning
"""
