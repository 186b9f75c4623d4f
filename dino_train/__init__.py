"""dino_train: DINO models, checkpoints and pretraining."""
__version__ = "0.1.0"
