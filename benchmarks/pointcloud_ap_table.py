"""Side-by-side AP R40 table (BEV / 3D, moderate) of ``ffnet-3d eval --json`` results on seeded
synthetic validation sets, with the mean over the seeds of each (checkpoint, generator) pair.

The AP is not recomputed here: each JSON is what ``ffnet-3d eval`` printed for one checkpoint on one
validation set; this script only lays them out, so every number can be traced to its file.

Usage (the README's table):
    uv run python benchmarks/pointcloud_ap_table.py --name pointcloud_v2_ap \\
        "shipped (before)|v2|1000=runs/v2/eval/shipped_v2val1000.json" ...

Each argument is ``CHECKPOINT|VALSET|SEED=PATH``. Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

CLASSES = ("Car", "Pedestrian", "Cyclist")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="CHECKPOINT|VALSET|SEED=PATH")
    ap.add_argument("--name", default="pointcloud_v2_ap")
    ap.add_argument("--note", default="", help="a line printed under the table")
    args = ap.parse_args(argv)
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for spec in args.runs:
        key, _, path = spec.rpartition("=")
        ckpt, valset, seed = key.split("|")
        groups[(ckpt, valset)][seed] = {"path": path, "ap": json.loads(Path(path).read_text())["ap"]}
    lines = ["| checkpoint | val set (generator) | seeds | " + " | ".join(f"{c} BEV / 3D mod" for c in CLASSES) + " |",
             "|---|---|---|" + "---|" * len(CLASSES)]
    payload = []
    for (ckpt, valset), seeds in groups.items():
        cells = []
        row = {"checkpoint": ckpt, "val_set": valset, "seeds": {}, "mean": {}}
        for s, r in seeds.items():
            row["seeds"][s] = {"path": r["path"], **{c: {m: r["ap"][c][m]["moderate"]["R40"] for m in ("bev", "3d")}
                                                   for c in CLASSES}}
        for c in CLASSES:
            vals = {m: [r["ap"][c][m]["moderate"]["R40"] for r in seeds.values()] for m in ("bev", "3d")}
            mean = {m: sum(v) / len(v) for m, v in vals.items()}
            row["mean"][c] = mean
            per = " ; ".join(f"{b:.1f}/{d:.1f}" for b, d in zip(vals["bev"], vals["3d"]))
            cells.append(f"**{mean['bev']:.1f} / {mean['3d']:.1f}** ({per})")
        lines.append(f"| {ckpt} | {valset} | {', '.join(seeds)} | " + " | ".join(cells) + " |")
        payload.append(row)
    text = ("AP R40, moderate, BEV / 3D: **mean over the seeds** (each seed's value in brackets, same order as "
            "the seeds column).\n\n" + "\n".join(lines) + "\n" + (f"\n{args.note}\n" if args.note else ""))
    save(args.name, {"rows": payload}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
