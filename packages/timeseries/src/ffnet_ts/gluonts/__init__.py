"""gluonts adapter for FFNet-TS: ``FFNetEstimator`` (a ``PyTorchLightningEstimator``) and its predictor.

Importing this subpackage imports gluonts and Lightning (about 10 s); ``import ffnet_ts`` does not.

Split as in gluonts' own models: :mod:`.module` (the torch network), :mod:`.lightning_module` (training and
validation steps), :mod:`.estimator` (transformations, instance splitter, predictor, and every gluonts
workaround this package needs).

For univariate items the estimator's default (``distr_output="auto"``) is a Student-t distribution per step,
trained by negative log-likelihood, as gluonts' own DLinear and PatchTST estimators do (with its degrees of
freedom kept above 5: :class:`MinDFStudentTOutput`): forecasts are
``DistributionForecast`` objects with real quantiles. With ``distr_output=None`` (and always for multivariate
items) FFNet-TS is a point forecaster trained with MSE, and forecasts are ``SampleForecast`` objects holding
exactly one sample (mean = median = every quantile). Numbers from gluonts-style evaluation (sampled training
windows, a test window at each series' end) are not comparable to the standard-protocol numbers of
``ffnet-ts forecast``.
"""

from .distributions import MinDFStudentTOutput
from .estimator import FFNetEstimator, FFNetPredictor, PointForecastGenerator
from .lightning_module import FFNetLightningModule
from .module import FFNetTSModel

__all__ = ["FFNetEstimator", "FFNetLightningModule", "FFNetPredictor", "FFNetTSModel", "MinDFStudentTOutput",
           "PointForecastGenerator"]
