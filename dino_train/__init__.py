"""dino_train: DINO pretraining (``dino-train``, :mod:`.train`) and k-NN evaluation (``dino-eval``)."""
__version__ = "0.1.0"
