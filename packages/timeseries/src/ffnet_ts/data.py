"""Long-horizon forecasting data: dataset registry, checked downloads, the standard split protocol.

The protocol is the one every Look-Back-96 table (Informer, Autoformer, iTransformer, TimeMixer, FFNet)
uses, re-implemented from its description:

* ETTh1/ETTh2: train / val / test = 12 / 4 / 4 months = 8640 / 2880 / 2880 hourly rows (the remaining
  rows of the file are unused); ETTm1/ETTm2: the same months at 15 minutes (x4 rows).
* Every other dataset: 70 / 10 / 20 % (train = int(0.7 T), test = int(0.2 T), val = the rest).
* The val and test windows start ``lookback`` rows before their boundary, so the first forecast target
  is the first row of the split.
* A standard scaler is fitted on the train rows only; MSE / MAE are computed in the standardized space.
* Every window is evaluated (no ``drop_last``): ETTh1 with lookback 96 and horizon 96 has 2785 test windows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA_DIR_ENV = "FFNET_DATA_DIR"
CACHE_DIR_ENV = "FFNET_CACHE_DIR"
DATE_COLUMN_NAMES = ("date", "datetime", "timestamp", "time", "ds")


class DataError(ValueError):
    """Bad input data: the CLI prints the message as one line and exits with code 2."""


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A registered long-horizon dataset.

    Args:
        name: registry name (``--data NAME``).
        filename: the CSV's file name, looked up in ``$FFNET_DATA_DIR`` (and its ``timeseries/``) first.
        url: where the file is downloaded from when it is not found locally.
        sha256: sha256 of the CSV bytes (after decompression); ``None`` when this project could not verify it.
        md5: md5 of the downloaded bytes as reported by a third-party loader; checked when present, but it is
            not our verification (see ``note``).
        compression: ``None``, ``"gzip"`` or ``"zip:<member>"`` for the downloaded bytes.
        split: ``"ett_hour"``, ``"ett_minute"`` or ``"ratio"`` (70/10/20).
        horizons: the standard horizons; ``lookback`` the standard look-back window.
        irregular_ok: the canonical file has known timestamp irregularities that the standard protocol
            ignores (rows are treated as consecutive).
        lstnet_start / lstnet_freq: the download is an LSTNet-style headerless text matrix; a date column
            is synthesized (start, frequency) and the last column is named ``OT``.
    """

    name: str
    filename: str
    url: str
    sha256: str | None
    split: str
    freq: str
    md5: str | None = None
    compression: str | None = None
    target: str = "OT"
    horizons: tuple[int, ...] = (96, 192, 336, 720)
    lookback: int = 96
    irregular_ok: bool = False
    lstnet_start: str | None = None
    lstnet_freq: str | None = None
    note: str = ""


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small/"
_HICR = "https://raw.githubusercontent.com/ljnvs/HiCR-Mamba/d472c100956ed4373e9ca3700481ce88f8f1e4dd/datasets/"
_MTS = "https://raw.githubusercontent.com/wayne155/multivariate_timeseries_datasets/main/"
_UNVERIFIED = "sha256 not verified by this project (no copy reachable here); checked against the md5 that the "
_UNVERIFIED += "third-party loader chen-zi-bo/VMDNet reports, and the computed sha256 is recorded on first download."

REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("ETTh1", "ETTh1.csv", _ETT + "ETTh1.csv",
                    "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066", "ett_hour", "h",
                    note="zhouhaoyi/ETDataset, CC BY-ND 4.0; sha256 verified against the staged original."),
        DatasetInfo("ETTh2", "ETTh2.csv", _ETT + "ETTh2.csv",
                    "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b", "ett_hour", "h",
                    note="zhouhaoyi/ETDataset, CC BY-ND 4.0; sha256 verified against the staged original."),
        DatasetInfo("ETTm1", "ETTm1.csv", _ETT + "ETTm1.csv",
                    "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e", "ett_minute", "15min",
                    note="zhouhaoyi/ETDataset (git blob 62c9f979 matches), CC BY-ND 4.0; sha256 verified."),
        DatasetInfo("ETTm2", "ETTm2.csv", _ETT + "ETTm2.csv",
                    "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd", "ett_minute", "15min",
                    note="zhouhaoyi/ETDataset (git blob f9d46027 matches), CC BY-ND 4.0; sha256 verified."),
        DatasetInfo("Weather", "weather.csv", _HICR + "weather/weather.csv.gz",
                    "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63", "ratio", "10min",
                    compression="gzip", irregular_ok=True,
                    note="Autoformer release (Jena weather), byte-identical gzip mirror pinned to a commit; sha256 "
                         "of the CSV verified. The file has one duplicated timestamp and one 100-minute gap; the "
                         "standard protocol treats rows as consecutive, and so do we."),
        DatasetInfo("ECL", "electricity.csv", _MTS + "electricity/electricity.csv", None, "ratio", "h",
                    md5="a1973ba4f4bed84136013ffa1ca27dc8", irregular_ok=True, note=_UNVERIFIED),
        DatasetInfo("Exchange", "exchange_rate.csv", _MTS + "exchange_rate/exchange_rate.csv", None, "ratio", "D",
                    md5="2fc11972378a4c8817c1adfdde522bf9", irregular_ok=True, note=_UNVERIFIED),
        DatasetInfo("ILI", "national_illness.csv", _MTS + "illness.zip", None, "ratio", "W",
                    md5="e18542fafd509ad52ffedde1b0f1018d", compression="zip:illness/national_illness.csv",
                    horizons=(24, 36, 48, 60), lookback=36, irregular_ok=True, note=_UNVERIFIED),
        DatasetInfo("Traffic", "traffic.csv",
                    "https://raw.githubusercontent.com/laiguokun/multivariate-time-series-data/master/traffic/traffic.txt.gz",
                    None, "ratio", "h", md5="db745d0c9f074159581a076cbb3f23d6", compression="gzip",
                    irregular_ok=True, lstnet_start="2016-07-01 02:00:00", lstnet_freq="h",
                    note="LSTNet's original matrix (no header, no dates); a date column is synthesized. "
                         "Identity with Autoformer's traffic.csv is NOT verified. " + _UNVERIFIED),
    ]
}
_ALIASES = {"weather": "Weather", "electricity": "ECL", "ecl": "ECL", "exchange_rate": "Exchange",
            "exchange": "Exchange", "illness": "ILI", "national_illness": "ILI", "ili": "ILI", "traffic": "Traffic"}


def lookup(name: str) -> DatasetInfo | None:
    """Registry entry for ``name`` (case-insensitive, common aliases), or None."""
    if name in REGISTRY:
        return REGISTRY[name]
    low = name.lower()
    for key in REGISTRY:
        if key.lower() == low:
            return REGISTRY[key]
    return REGISTRY.get(_ALIASES.get(low, ""), None)


def cache_dir() -> Path:
    """User cache directory for downloads (``$FFNET_CACHE_DIR`` or ``$XDG_CACHE_HOME/ffnet/timeseries``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ffnet" / "timeseries"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_bytes(url: str, desc: str) -> bytes:
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            buf = io.BytesIO()
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    buf.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # URLError, HTTPError, timeouts
        raise DataError(f"could not download {url}: {e}; set {DATA_DIR_ENV} to a directory holding the CSV") from e
    return buf.getvalue()


def _decode(info: DatasetInfo, raw: bytes) -> bytes:
    if info.compression == "gzip":
        raw = gzip.decompress(raw)
    elif info.compression and info.compression.startswith("zip:"):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            raw = zf.read(info.compression[4:])
    if info.lstnet_start:  # headerless numeric matrix -> CSV with a synthesized date column
        mat = pd.read_csv(io.BytesIO(raw), header=None)
        cols = [str(i) for i in range(mat.shape[1] - 1)] + [info.target]
        mat.columns = cols
        mat.insert(0, "date", pd.date_range(info.lstnet_start, periods=len(mat), freq=info.lstnet_freq))
        raw = mat.to_csv(index=False).encode()
    return raw


def fetch(info: DatasetInfo, *, download: bool = True) -> Path:
    """Path to a registered dataset's CSV: ``$FFNET_DATA_DIR``, then the cache, then a checked download.

    A local copy whose sha256 differs from the pinned one is an error (never silently used). Datasets without
    a verified sha256 are trusted on first download: the computed hash is stored next to the file and checked
    on every later use.
    """
    candidates = []
    if os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV]).expanduser()
        candidates += [root / info.filename, root / "timeseries" / info.filename]
    cached = cache_dir() / info.filename
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            _check_local(info, path)
            return path
    if not download:
        raise DataError(f"{info.name}: {info.filename} not found in {DATA_DIR_ENV} or {cache_dir()}")
    from ffnet.fileio import atomic_write_bytes  # lazy: `import ffnet` pulls timm, not needed to read data

    raw = _download_bytes(info.url, desc=info.filename)
    if info.md5 is not None and hashlib.md5(raw).hexdigest() != info.md5:
        raise DataError(f"{info.name}: md5 mismatch for {info.url} (expected {info.md5}); refusing to use it")
    data = _decode(info, raw)
    digest = hashlib.sha256(data).hexdigest()
    if info.sha256 is not None and digest != info.sha256:
        raise DataError(f"{info.name}: sha256 mismatch for {info.url}: got {digest}, expected {info.sha256}")
    if info.sha256 is None:
        print(f"warning: {info.name}: no verified sha256 is pinned for this dataset; recorded {digest} "
              f"(trust on first use)", file=sys.stderr)
        atomic_write_bytes(cached.with_name(cached.name + ".sha256"), (digest + "\n").encode())
    atomic_write_bytes(cached, data)
    return cached


def _check_local(info: DatasetInfo, path: Path) -> None:
    expected = info.sha256
    recorded = path.with_name(path.name + ".sha256")
    if expected is None and recorded.is_file():
        expected = recorded.read_text().split()[0]
    if expected is not None and sha256_file(path) != expected:
        raise DataError(f"{info.name}: {path} does not match its sha256 ({expected}); delete it or fix "
                        f"{DATA_DIR_ENV}")


# ---------------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Series:
    """A validated multivariate series: ``values`` (T, C) float64 in column order ``columns``."""

    name: str
    dates: pd.DatetimeIndex
    values: np.ndarray
    columns: list[str]
    target: str
    split: str = "ratio"
    freq: str | None = None
    source: str = ""
    info: DatasetInfo | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.values)


def _find_date_column(df: pd.DataFrame) -> str:
    for col in df.columns:
        if str(col).strip().lower() in DATE_COLUMN_NAMES:
            return col
    first = df.columns[0]
    if df[first].dtype == object:
        parsed = pd.to_datetime(df[first], errors="coerce")
        if parsed.notna().all():
            return first
    raise DataError(f"no date column: expected one named 'date' (found columns: {', '.join(map(str, df.columns[:8]))}"
                    f"{', ...' if len(df.columns) > 8 else ''})")


def read_csv(path: str | os.PathLike, *, target: str | None = None, name: str | None = None,
             irregular_ok: bool = False) -> Series:
    """Read and validate a CSV with a date column and numeric columns.

    Raises:
        DataError: missing file, no date column, unparsable dates, non-numeric columns, NaNs, unsorted or
            irregular timestamps (unless ``irregular_ok``), or an unknown ``target``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if df.shape[1] < 2 or len(df) == 0:
        raise DataError(f"{path}: needs a date column and at least one numeric column with rows")
    date_col = _find_date_column(df)
    dates = pd.to_datetime(df[date_col], errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise DataError(f"{path}: unparsable date {df[date_col].iloc[row]!r} in column '{date_col}' at data row {row}")
    df = df.drop(columns=[date_col])
    bad = [str(c) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{path}: non-numeric column(s): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    values = df.to_numpy(dtype=np.float64)
    nan = ~np.isfinite(values)
    if nan.any():
        row, col = map(int, np.argwhere(nan)[0])
        raise DataError(f"{path}: {int(nan.sum())} missing/non-finite value(s), first in column '{df.columns[col]}' "
                        f"at {dates.iloc[row]} (data row {row}); fill or drop them first")
    dates = pd.DatetimeIndex(dates)
    freq = _check_regular(path, dates, irregular_ok)
    columns = [str(c) for c in df.columns]
    if target is None:
        target = "OT" if "OT" in columns else columns[-1]
    if target not in columns:
        raise DataError(f"{path}: target column '{target}' not found (columns: {', '.join(columns[:8])})")
    return Series(name=name or path.stem, dates=dates, values=values, columns=columns, target=target,
                  freq=freq, source=str(path))


def _check_regular(path: Path, dates: pd.DatetimeIndex, irregular_ok: bool) -> str | None:
    if len(dates) < 2:
        return None
    steps = np.diff(dates.asi8)
    step = int(np.median(steps))
    off = np.flatnonzero(steps != step)
    if len(off) and not irregular_ok:
        i = int(off[0])
        kind = "out of order" if steps[i] < 0 else ("duplicated timestamp" if steps[i] == 0 else "gap")
        raise DataError(f"{path}: timestamps are not regular ({len(off)} irregular step(s); first: {kind} "
                        f"{dates[i]} -> {dates[i + 1]}, expected step {pd.Timedelta(step)}); "
                        f"pass --allow-irregular to treat rows as consecutive")
    try:
        return pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    except ValueError:
        return None


def load(data: str, *, target: str | None = None, irregular_ok: bool = False, download: bool = True) -> Series:
    """Load ``data``: a registry name (ETTh1, ..., see ``REGISTRY``) or a path to a CSV.

    Registry datasets use their standard split. A path to a byte-identical copy of a registered file (same
    file name and sha256) is treated as that dataset; any other CSV uses the 70/10/20 split.
    """
    path = Path(data).expanduser()
    if path.is_file():
        info = next((i for i in REGISTRY.values() if i.filename == path.name and i.sha256
                     and sha256_file(path) == i.sha256), None)
    else:
        info = lookup(data)
        if info is None:
            if path.suffix or os.sep in data:
                raise DataError(f"data file not found: {data}")
            raise DataError(f"unknown dataset '{data}': not a registered name ({', '.join(REGISTRY)}) "
                            f"and no such file")
        path = fetch(info, download=download)
    if info is None:
        return read_csv(path, target=target, irregular_ok=irregular_ok)
    s = read_csv(path, target=target or info.target, name=info.name, irregular_ok=info.irregular_ok or irregular_ok)
    s.split, s.info = info.split, info
    s.freq = s.freq or info.freq
    return s


# ---------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------


def split_borders(n_rows: int, split: str, lookback: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of the train / val / test segments, val and test including their lookback."""
    if split in ("ett_hour", "ett_minute"):
        unit = 30 * 24 * (4 if split == "ett_minute" else 1)
        n_train, n_val, n_test = 12 * unit, 4 * unit, 4 * unit
    elif split == "ratio":
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
    else:
        raise ValueError(f"unknown split {split!r}")
    end_train, end_val = n_train, n_train + n_val
    return {
        "train": (0, end_train),
        "val": (max(end_train - lookback, 0), end_val),
        "test": (max(end_val - lookback, 0), min(end_val + n_test, n_rows)),
    }


def num_windows(border: tuple[int, int], lookback: int, horizon: int) -> int:
    return max(0, border[1] - border[0] - lookback - horizon + 1)


@dataclass
class Prepared:
    """Standardized data plus everything the protocol needs.

    ``data`` is (T, C) float32, columns ordered as ``columns`` (for ``MS`` the target is moved last, as in the
    reference protocol); ``out_idx`` are the columns that are forecast and scored.
    """

    data: torch.Tensor
    borders: dict[str, tuple[int, int]]
    mean: np.ndarray
    std: np.ndarray
    columns: list[str]
    out_idx: list[int]
    lookback: int
    horizon: int
    features: str
    series: Series
    cycle: Cycle | None = None  # set by ``remove_cycle``: ``data`` then holds the residual series
    # reference.fit_linear's result with the default alphas, kept so that the cycle decision and the reference
    # rows share one fit; init=False: dataclasses.replace (remove_cycle, ...) starts a new copy without it
    linear_fit: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_vars(self) -> int:
        return self.data.shape[1]

    def windows(self, split: str) -> int:
        return num_windows(self.borders[split], self.lookback, self.horizon)

    def target_rows(self, split: str) -> np.ndarray:
        """(windows, horizon) row indices of every forecast target of ``split``."""
        a = self.borders[split][0] + self.lookback
        return a + np.arange(self.windows(split))[:, None] + np.arange(self.horizon)

    def cycle_rows(self) -> torch.Tensor | None:
        """(T, C) float32 cycle values at every row when the cycle has a window amplitude, else None."""
        if self.cycle is None or self.cycle.shrink is None:
            return None
        return torch.from_numpy(self.cycle.at(self.series.dates.asi8[:len(self.data)]).astype(np.float32))

    def targets(self, split: str) -> np.ndarray:
        """(windows, horizon, scored columns) float32 standardized targets of every window of ``split``."""
        return self.data.numpy()[self.target_rows(split)][..., self.out_idx]


def prepare(series: Series, lookback: int, horizon: int, features: str = "M") -> Prepared:
    """Apply the standard protocol: select features, split, fit the scaler on train rows, standardize.

    Raises:
        DataError: a split has no complete window for ``lookback + horizon``.
    """
    if features not in ("M", "S", "MS"):
        raise DataError(f"--features must be M, S or MS (got {features!r})")
    if lookback < 1 or horizon < 1:
        raise DataError(f"lookback and horizon must be positive (got {lookback}, {horizon})")
    cols = list(series.columns)
    if features == "S":
        cols = [series.target]
    elif features == "MS":
        cols = [c for c in cols if c != series.target] + [series.target]
    idx = [series.columns.index(c) for c in cols]
    values = series.values[:, idx]
    borders = split_borders(len(values), series.split, lookback)
    for split, b in borders.items():
        if num_windows(b, lookback, horizon) < 1:
            raise DataError(f"series '{series.name}' is too short: {len(values)} rows leave the {split} split "
                            f"({b[1] - b[0]} rows incl. context) no window of lookback {lookback} + horizon {horizon}")
    train = values[borders["train"][0]:borders["train"][1]]
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)  # constant columns: keep them centered, do not divide by 0
    data = torch.from_numpy(((values - mean) / std).astype(np.float32))
    out_idx = [len(cols) - 1] if features in ("S", "MS") else list(range(len(cols)))
    return Prepared(data, borders, mean, std, cols, out_idx, lookback, horizon, features, series)


def gather_windows(data: torch.Tensor, start: int, idx: torch.Tensor, lookback: int, horizon: int):
    """Windows ``idx`` (0-based within a split starting at row ``start``): x (B, L, C), y (B, H, C)."""
    base = idx.to(torch.long)[:, None] + start
    x = data[base + torch.arange(lookback)]  # (B, L, C)
    y = data[base + lookback + torch.arange(horizon)]  # (B, H, C)
    return x, y


# ---------------------------------------------------------------------------------------------------------
# Cycle removal (ours; closed-form relative of CycleNet's residual cycle forecasting)
# ---------------------------------------------------------------------------------------------------------

DAY_NS = 86_400 * 10**9


def time_step_ns(dates: pd.DatetimeIndex) -> int | None:
    """The series' time step: the median spacing of its timestamps (None for fewer than 2 rows)."""
    if len(dates) < 2:
        return None
    step = int(np.median(np.diff(dates.asi8)))
    return step if step > 0 else None


def daily_period(step_ns: int | None) -> int | None:
    """Rows per cycle for a series sampled every ``step_ns``: the day for a step that divides a day (hourly 24,
    15 min 96, 10 min 144), the week (7) for daily data, None otherwise (weekly, monthly, odd steps)."""
    if not step_ns or step_ns <= 0:
        return None
    if step_ns < DAY_NS and DAY_NS % step_ns == 0:
        return DAY_NS // step_ns
    if step_ns == DAY_NS:
        return 7
    return None


CYCLE_SHRINK = 1.0  # window amplitude: the window's own estimate averaged with the train split's (1)
AMPLITUDES = ("fixed", "window")


@dataclass
class Cycle:
    """A per-variable cycle of ``period`` rows in the standardized space, fitted on the train rows only:
    ``table[p, c]`` is the mean of variable ``c`` over the train rows of phase ``p``. The phase of a timestamp
    ``t`` is ``((t - origin_ns) // step_ns) mod period``, so new data on the same time grid (``predict``) gets
    the phases the model was trained with.

    ``shrink`` None: the cycle is removed and added back as it is (``fixed`` amplitude). A number ``k``
    (``window`` amplitude): each window scales it by its own amplitude, estimated from its lookback rows and
    shrunk towards the train split's (``cycle_gain``)."""

    period: int
    table: np.ndarray  # (period, variables) float64
    origin_ns: int
    step_ns: int
    shrink: float | None = None

    @property
    def amplitude(self) -> str:
        return "fixed" if self.shrink is None else "window"

    def phases(self, dates_ns: np.ndarray) -> np.ndarray:
        return ((np.asarray(dates_ns, dtype=np.int64) - self.origin_ns) // self.step_ns) % self.period

    def at(self, dates_ns: np.ndarray) -> np.ndarray:
        """(..., variables) cycle values at the timestamps ``dates_ns`` (any shape)."""
        return self.table[self.phases(dates_ns)]

    def to_json(self) -> dict:
        return {"period": int(self.period), "table": self.table.tolist(), "origin_ns": int(self.origin_ns),
                "step_ns": int(self.step_ns), "shrink": self.shrink}

    @classmethod
    def from_json(cls, d: dict) -> Cycle:
        shrink = d.get("shrink")  # absent in checkpoints written before window amplitudes: fixed
        return cls(int(d["period"]), np.asarray(d["table"], dtype=np.float64), int(d["origin_ns"]),
                   int(d["step_ns"]), None if shrink is None else float(shrink))


def fit_cycle(prep: Prepared, period: int) -> Cycle:
    """The train split's per-phase mean of every (standardized) variable.

    Raises:
        DataError: the train split does not contain every phase at least twice.
    """
    dates = prep.series.dates.asi8
    step = time_step_ns(prep.series.dates)
    if step is None:
        raise DataError(f"series '{prep.series.name}' has no time step; a cycle needs regular timestamps")
    a, b = prep.borders["train"]
    cyc = Cycle(int(period), np.zeros((period, prep.n_vars)), int(dates[0]), step)
    ph = cyc.phases(dates[a:b])
    counts = np.bincount(ph, minlength=period)
    if counts.min() < 2:
        raise DataError(f"a cycle of {period} rows needs every phase at least twice in the train split "
                        f"({b - a} rows); use a shorter --cycle or --cycle off")
    z = prep.data[a:b].double().numpy()
    for c in range(prep.n_vars):
        cyc.table[:, c] = np.bincount(ph, weights=z[:, c], minlength=period) / counts
    return cyc


def cycle_gain(x: torch.Tensor, cx: torch.Tensor, shrink: float) -> torch.Tensor:
    """Per-window, per-variable correction ``g`` of a cycle's amplitude (window amplitude, ``Cycle.shrink``).

    ``x`` (..., L, C) is a window of the residual series (the series minus the cycle) and ``cx`` the cycle at
    the same rows. The window's own amplitude is the least-squares slope ``b`` of the series on the cycle over
    the lookback rows; the amplitude used is ``(b + shrink) / (1 + shrink)`` (``shrink`` = 1: halfway between
    the window's and the train split's, which is 1), and ``g`` is that minus 1: ``cov(x, cx) / ((1 + shrink)
    var(cx))``. A model then sees ``x - g cx`` and its forecast gets ``g cy`` added (``cy``: the cycle at the
    forecast rows), so its output stays a forecast of the residual series. Returns (..., 1, C)."""
    xc = x - x.mean(-2, keepdim=True)
    cc = cx - cx.mean(-2, keepdim=True)
    return (xc * cc).sum(-2, keepdim=True) / ((1.0 + shrink) * (cc * cc).sum(-2, keepdim=True) + 1e-6)


def remove_cycle(prep: Prepared, cycle: Cycle) -> Prepared:
    """A copy of ``prep`` whose ``data`` is the standardized series minus ``cycle`` (computed in float64).

    A model trained on it forecasts the residual; adding ``cycle`` at the target timestamps back
    (``add_cycle``) gives the forecast of the standardized series, and its error equals the residual error."""
    z = prep.data.double().numpy()
    resid = z - cycle.at(prep.series.dates.asi8[:len(z)])
    return replace(prep, data=torch.from_numpy(resid.astype(np.float32)), cycle=cycle)


def add_cycle(prep: Prepared, split: str, predictions: np.ndarray) -> np.ndarray:
    """Residual forecasts (windows, horizon, scored columns) of ``split`` -> forecasts of the standardized
    series (float32). Identity when ``prep`` has no cycle."""
    if prep.cycle is None:
        return np.asarray(predictions, dtype=np.float32)
    season = prep.cycle.at(prep.series.dates.asi8[prep.target_rows(split)])[..., prep.out_idx]
    return (np.asarray(predictions, dtype=np.float64) + season).astype(np.float32)
