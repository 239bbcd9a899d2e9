"""ffnet-ts: FFNet-TS long-horizon forecasting on the standard protocol, gluonts-native.

    from ffnet_ts import data, train
    from ffnet_ts.model import create_model
    series = data.load("ETTh1")                      # registry name or CSV path ($FFNET_DATA_DIR, cache, download)
    prep = data.prepare(series, lookback=96, horizon=96)
    model = create_model("ffnet_ts", n_vars=prep.n_vars, lookback=96, horizon=96)
    train.fit(model, prep, train.TrainConfig(epochs=10))
    print(train.evaluate(model, prep, "test"))       # every test window (2785 for ETTh1 H=96)

gluonts users: ``from ffnet_ts.gluonts import FFNetEstimator`` (imports gluonts/Lightning lazily).

Importing ``ffnet_ts`` before ``torch`` (as the ``ffnet-ts`` command does) turns on torch's transparent-huge-page
allocation for large CPU tensors (``THP_MEM_ALLOC_ENABLE=1``, unless the variable is already set): see
:func:`ffnet_ts.accel.keep_freed_memory` for why.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:  # torch reads the variable once, at its first allocation
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
