"""Guards shared by every fit: the training stage and the optimize stage's fine-tunes."""
from __future__ import annotations

import math


def finite_loss_guard(k):
    """A Keras callback (for tf_keras `k`) that stops a fit at the first batch whose loss is NaN or
    infinite; `at` is then (epoch, batch, "NaN" or "infinite"), both counted from 0."""

    class FiniteLossGuard(k.callbacks.Callback):
        at = None
        _epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.at = (self._epoch, batch, "NaN" if math.isnan(float(loss)) else "infinite")
                self.model.stop_training = True

    return FiniteLossGuard()
