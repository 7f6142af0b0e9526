"""The training stage and its helpers: `train` (run.py), knowledge distillation (distill.py),
stochastic weight averaging (swa.py) and device placement (distribute.py).

Importing a helper (`edgecls.training.distill`, which the optimize stage uses) does not import the
stage itself: run.py loads on first use of its names here.
"""
__all__ = ["train", "TrainResult", "preprocessing_for", "distill_temperature_for"]


def __getattr__(name):
    import importlib

    run = importlib.import_module(".run", __name__)
    try:
        return getattr(run, name)
    except AttributeError:
        raise AttributeError(f"module 'edgecls.training' has no attribute {name!r}") from None
