"""``FFNetEstimator``: FFNet-TS as a gluonts ``PyTorchLightningEstimator``.

Every gluonts workaround of this package lives in this module:

* gluonts does not cast targets: a float64 ``PandasDataset`` reaches the network as float64 and fails with
  "mat1 and mat2 must have the same dtype". The transformation starts with ``AsNumpyArray(..., float32)``.
* gluonts always adds its own ``ModelCheckpoint`` callback, so ``trainer_kwargs={"enable_checkpointing":
  False}`` raises a ``MisconfigurationException``. That key is dropped (with a warning); use
  ``default_root_dir`` to choose where Lightning writes.
* ``PyTorchLightningEstimator.train_model`` pops ``callbacks`` out of ``trainer_kwargs``; a copy is passed
  so an estimator can be trained twice.
* ``@validated()`` builds a pydantic model from ``__init__``'s annotations in gluonts' own namespace, so string
  annotations (``from __future__ import annotations``) of gluonts types cannot be resolved there and an
  explicitly passed ``train_sampler`` or ``distr_output`` failed with "not yet prepared ... ForwardRef". This
  module therefore keeps real annotation objects (no ``__future__`` import).
* ``PyTorchPredictor.predict`` yields from inside ``torch.no_grad()``, so the caller runs with autograd off
  while the generator is suspended (and indefinitely if it is left partly consumed); :class:`FFNetPredictor`
  restores the caller's mode around every forecast.
* ``SampleForecastGenerator`` re-runs a network until it has ``num_samples`` samples (100 forward passes per
  batch for a point forecaster); :class:`PointForecastGenerator` runs it once and yields one-sample forecasts.
"""

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic, select
from gluonts.model.forecast import SampleForecast
from gluonts.model.forecast_generator import ForecastGenerator, to_numpy
from gluonts.torch.distributions import DistributionOutput
from gluonts.torch.model.estimator import PyTorchLightningEstimator
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.transform import (
    AddObservedValuesIndicator,
    AsNumpyArray,
    ExpectedNumInstanceSampler,
    InstanceSampler,
    InstanceSplitter,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
)

from ..model import DATASET_DEFAULTS, MODEL_VARIANTS
from .distributions import MinDFStudentTOutput
from .lightning_module import FFNetLightningModule
from .module import SCALINGS

PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values"]
TRAINING_INPUT_NAMES = PREDICTION_INPUT_NAMES + ["future_target", "future_observed_values"]


class PointForecastGenerator(ForecastGenerator):
    """Runs the network once per batch and yields ``SampleForecast`` objects with a single sample."""

    @validated()
    def __init__(self) -> None:
        pass

    def __call__(self, inference_data_loader, prediction_net, input_names, output_transform, num_samples,
                 **kwargs):
        for batch in inference_data_loader:
            outputs = to_numpy(prediction_net(**select(input_names, batch, ignore_missing=True)))
            if output_transform is not None:
                outputs = output_transform(batch, outputs)
            for i, output in enumerate(outputs):  # output: (1, H) or (1, H, M)
                yield SampleForecast(
                    output,
                    start_date=batch[FieldName.FORECAST_START][i],
                    item_id=batch[FieldName.ITEM_ID][i] if FieldName.ITEM_ID in batch else None,
                    info=batch["info"][i] if "info" in batch else None,
                )


class FFNetPredictor(PyTorchPredictor):
    """``PyTorchPredictor`` whose ``predict`` leaves the caller's autograd mode alone.

    gluonts' ``predict`` is a generator that yields from inside ``with torch.no_grad()``. Grad mode is
    thread-local, so while that generator is suspended at a ``yield`` the *caller* runs with autograd off:
    between forecasts, and for as long as a partly consumed generator (``next(iter(predictor.predict(ds)))``
    kept alive, a ``zip`` with a shorter iterable) is not closed. Seen in this project's tests: one such
    generator turned autograd off for every later test in the process. Every step of the inner generator runs
    under no_grad (a later batch is computed inside a later ``next``), and the caller's mode is restored
    before each forecast is handed out.
    """

    def predict(self, dataset: Dataset, num_samples: int | None = None):  # type: ignore[override]
        inner = super().predict(dataset, num_samples=num_samples)
        try:
            while True:
                mode = torch.is_grad_enabled()
                torch.set_grad_enabled(False)  # the next batch may be computed inside this next()
                try:
                    forecast = next(inner)
                except StopIteration:
                    return
                finally:
                    torch.set_grad_enabled(mode)
                yield forecast
        finally:
            mode = torch.is_grad_enabled()
            inner.close()  # runs gluonts' no_grad __exit__, which restores the mode it saw on entry
            torch.set_grad_enabled(mode)


def _sanitize_trainer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if kwargs.get("enable_checkpointing") is False:
        warnings.warn("FFNetEstimator: gluonts always adds a ModelCheckpoint callback, so enable_checkpointing=False "
                      "would make Lightning fail; ignoring it (set default_root_dir to choose where it writes)",
                      stacklevel=3)
        kwargs.pop("enable_checkpointing")
    return kwargs


class FFNetEstimator(PyTorchLightningEstimator):
    """Estimator for FFNet-TS (a Student-t head or point forecasts; each window scaled by RevIN unless ``scaling``).

    Args:
        prediction_length: forecast horizon.
        context_length: look-back window (default 96, the standard protocol's).
        target_dim: 1 for univariate items, M for items whose target is an (M, T) array.
        dim / kernel_size / small_kernel / ffn_ratio / dropout / head_dropout / patch_size / patch_stride:
            FFNet-TS hyper-parameters (defaults: the reference architecture, ``DATASET_DEFAULTS["default"]``
            regularization).
        lr / weight_decay: Adam. lr 1e-4 (the paper's; session 26): on the validation months of ETTh1 and ETTh2
            (univariate items, 30 x 50 batches, Student-t head, 3 seeds) it beat 1e-3, gluonts' usual default,
            in all 6 runs (mean validation MSE -2.2 % and -1.9 %), and 3e-4 was worse than both.
        batch_size / num_batches_per_epoch: gluonts-style sampled training.
        trainer_kwargs: ``lightning.Trainer`` arguments (default ``max_epochs=100``, ``gradient_clip_val=10``).
        train_sampler / validation_sampler: gluonts instance samplers.
        distr_output: ``"auto"`` (default): a Student-t per step for univariate items, as gluonts' own DLinear
            and PatchTST estimators, with its degrees of freedom kept above 5 (:class:`MinDFStudentTOutput`;
            gluonts' ``StudentTOutput()`` let them sink to 2 and the 10-90 % band held 64 % of ETTh2's
            validation values), point forecasts for multivariate ones. A gluonts
            ``DistributionOutput``: a distribution per step trained by negative log-likelihood,
            ``DistributionForecast``s with real quantiles (univariate items only). ``None``: point forecasts
            trained with MSE, one-sample ``SampleForecast``s (mean = median = every quantile).
        level_features / level_lr: ours, not in the paper (session 29). RevIN hides each window's level from the
            network. On ETTh1's univariate items, which are globally standardized and come back toward their
            mean, that cost about 4 %: the same network without RevIN reached validation MSE 0.698 against
            0.750. But RevIN is worth keeping on ETTh2 (0.245 without it against 0.203). With
            ``level_features`` the window's mean and log std are embedded and added to the patch tokens
            (:class:`FFNetTSModel`). The embedding learns at ``level_lr``: at the network's 1e-4 it barely moves
            in a 30 x 50-batch run.
            Default off (opt-in). ``"auto"`` turns them on with a distribution head and off for the point
            forecaster. Off by default because on Weather's validation months they cost 11 % (Student-t, 2
            seeds: 0.481 -> 0.533) while ETTm1 gained 3 % and ETTm2 was unchanged.
            Validation months, 30 x 50 batches:
            - Student-t head (df > 5), 3 seeds. ETTh1: MSE 0.753 -> 0.722, wQL 0.447 -> 0.435. ETTh2: MSE
              0.201 -> 0.202, wQL 0.224 -> 0.227.
            - Point forecaster (MSE loss), 2 seeds. ETTh1: MSE 0.768 -> 0.732. ETTh2: MSE 0.201 -> 0.235
              (+17 %), and test confirms it.
            ``level_lr`` 1e-2 was worse on ETTh2 (0.208). Alternatives that did not help: a linear map from the
            window to the loc, or a per-step level correction of the loc.
            ``benchmarks/results/timeseries_gluonts_level_validation.md`` has the runs.
        scaling: ``"std"`` (default): RevIN, the paper's, each window centred and divided by its std.
            ``"mean"``: gluonts' ``MeanScaler`` (the default of gluonts' DLinear and PatchTST), the window
            divided by its mean absolute value and not centred, so the network sees its level. ``None``: the
            raw window. Validation months, 2 seeds, Student-t head, std -> mean: ETTh1 0.750 -> 0.725, ETTm1
            0.408 -> 0.398, Weather 0.481 -> 0.463 (where RevIN hid a spike's level in the rain items), but
            ETTh2 0.203 -> 0.225 and ETTm2 0.128 -> 0.183. So the default stays ``"std"``
            (``benchmarks/results/timeseries_gluonts_scaling_validation.md``).
    """

    @validated()
    def __init__(
        self,
        prediction_length: int,
        context_length: int | None = None,
        target_dim: int = 1,
        dim: int = MODEL_VARIANTS["ffnet_ts"]["dim"],
        kernel_size: int = MODEL_VARIANTS["ffnet_ts"]["kernel_size"],
        small_kernel: int | None = MODEL_VARIANTS["ffnet_ts"]["small_kernel"],
        ffn_ratio: int = DATASET_DEFAULTS["default"]["ffn_ratio"],
        dropout: float = DATASET_DEFAULTS["default"]["dropout"],
        head_dropout: float = DATASET_DEFAULTS["default"]["head_dropout"],
        patch_size: int = MODEL_VARIANTS["ffnet_ts"]["patch_size"],
        patch_stride: int = MODEL_VARIANTS["ffnet_ts"]["patch_stride"],
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        trainer_kwargs: dict[str, Any] | None = None,
        train_sampler: InstanceSampler | None = None,
        validation_sampler: InstanceSampler | None = None,
        distr_output: DistributionOutput | str | None = "auto",
        level_features: bool | str = False,
        level_lr: float = 1e-3,
        scaling: str | None = "std",
    ) -> None:
        defaults = {"max_epochs": 100, "gradient_clip_val": 10.0}
        defaults.update(_sanitize_trainer_kwargs(trainer_kwargs or {}))
        super().__init__(trainer_kwargs=defaults)
        self.prediction_length = prediction_length
        self.context_length = context_length or 96
        self.target_dim = target_dim
        self.model_kwargs = dict(dim=dim, kernel_size=kernel_size, small_kernel=small_kernel, ffn_ratio=ffn_ratio,
                                 dropout=dropout, head_dropout=head_dropout, patch_size=patch_size,
                                 patch_stride=patch_stride)
        self.level_lr = level_lr
        self.lr, self.weight_decay = lr, weight_decay
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.train_sampler = train_sampler or ExpectedNumInstanceSampler(num_instances=1.0,
                                                                         min_future=prediction_length)
        self.validation_sampler = validation_sampler or ValidationSplitSampler(min_future=prediction_length)
        if distr_output == "auto":
            distr_output = MinDFStudentTOutput(5.0) if target_dim == 1 else None
        elif isinstance(distr_output, str):
            raise ValueError(f"FFNetEstimator: distr_output must be 'auto', None or a DistributionOutput, got "
                             f"{distr_output!r}")
        if distr_output is not None and target_dim != 1:
            raise ValueError(f"FFNetEstimator: distr_output needs univariate items (target_dim=1), got target_dim="
                             f"{target_dim}; leave distr_output=None for point forecasts of multivariate items")
        self.distr_output = distr_output
        if scaling not in SCALINGS:
            raise ValueError(f"FFNetEstimator: scaling must be 'std', 'mean' or None, got {scaling!r}")
        if level_features == "auto":  # the features stand in for the level that RevIN ("std") takes away
            level_features = distr_output is not None and scaling == "std"
        elif not isinstance(level_features, bool):
            raise ValueError(f"FFNetEstimator: level_features must be 'auto', True or False, got {level_features!r}")
        if level_features and scaling != "std":
            raise ValueError(f"FFNetEstimator: level_features need scaling='std' (RevIN), got scaling={scaling!r}; "
                             "the other scalings do not centre the window, so the network already sees its level")
        self.model_kwargs["level_features"] = level_features
        self.model_kwargs["scaling"] = scaling

    def create_transformation(self) -> Transformation:
        return (
            SelectFields([FieldName.ITEM_ID, FieldName.INFO, FieldName.START, FieldName.TARGET], allow_missing=True)
            # NOTE: gluonts leaves float64 targets as they are; the network is float32.
            + AsNumpyArray(FieldName.TARGET, expected_ndim=1 if self.target_dim == 1 else 2, dtype=np.float32)
            + AddObservedValuesIndicator(target_field=FieldName.TARGET, output_field=FieldName.OBSERVED_VALUES)
        )

    def create_lightning_module(self) -> FFNetLightningModule:
        return FFNetLightningModule(
            model_kwargs={"prediction_length": self.prediction_length, "context_length": self.context_length,
                          "target_dim": self.target_dim, "model_kwargs": self.model_kwargs,
                          "distr_output": self.distr_output},
            lr=self.lr, weight_decay=self.weight_decay, level_lr=self.level_lr)

    def _create_instance_splitter(self, mode: str) -> InstanceSplitter:
        sampler = {"training": self.train_sampler, "validation": self.validation_sampler,
                   "test": TestSplitSampler()}[mode]
        return InstanceSplitter(
            target_field=FieldName.TARGET, is_pad_field=FieldName.IS_PAD, start_field=FieldName.START,
            forecast_start_field=FieldName.FORECAST_START, instance_sampler=sampler,
            past_length=self.context_length, future_length=self.prediction_length,
            time_series_fields=[FieldName.OBSERVED_VALUES], dummy_value=0.0)

    def create_training_data_loader(self, data: Dataset, module: FFNetLightningModule,
                                    shuffle_buffer_length: int | None = None, **kwargs) -> Iterable:
        instances = self._create_instance_splitter("training").apply(Cyclic(data).stream(), is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size, shuffle_buffer_length=shuffle_buffer_length,
                                  field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor,
                                  num_batches_per_epoch=self.num_batches_per_epoch)

    def create_validation_data_loader(self, data: Dataset, module: FFNetLightningModule, **kwargs) -> Iterable:
        instances = self._create_instance_splitter("validation").apply(data, is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size, field_names=TRAINING_INPUT_NAMES,
                                  output_type=torch.tensor)

    def create_predictor(self, transformation: Transformation, module: FFNetLightningModule) -> PyTorchPredictor:
        return FFNetPredictor(
            input_transform=transformation + self._create_instance_splitter("test"),
            input_names=PREDICTION_INPUT_NAMES, prediction_net=module,
            forecast_generator=(PointForecastGenerator() if self.distr_output is None
                                else self.distr_output.forecast_generator), batch_size=self.batch_size,
            prediction_length=self.prediction_length, device="auto")

    def train_model(self, *args, **kwargs):
        # NOTE: the base class pops "callbacks" out of self.trainer_kwargs; keep ours intact for a second train().
        saved = copy.deepcopy(self.trainer_kwargs)
        try:
            return super().train_model(*args, **kwargs)
        finally:
            self.trainer_kwargs = saved
