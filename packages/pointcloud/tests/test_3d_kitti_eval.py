"""KITTI AP on hand-built cases whose AP is known in closed form."""
from __future__ import annotations

import numpy as np
import pytest
from ffnet_3d.io import KittiObjects
from ffnet_3d.kitti_eval import format_table, get_thresholds, kitti_eval

SIZES = {"Car": (1.5, 1.6, 4.0), "Pedestrian": (1.7, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.8)}  # h, w, l


def objects(names, xs, zs=None, occluded=None, truncated=None, bbox_h=60.0, scores=None, shift=0.0,
            bboxes=None) -> KittiObjects:
    """Objects in camera coordinates, side by side along x at depth z; ``shift`` moves them along
    their length axis (ry = 0 -> length along camera x)."""
    n = len(names)
    zs = np.full(n, 20.0) if zs is None else np.asarray(zs, float)
    dims = np.array([SIZES.get(nm, (1.5, 1.6, 4.0)) for nm in names], float)
    loc = np.stack([np.asarray(xs, float) + shift, np.full(n, 1.6), zs], 1)
    if bboxes is None:
        bboxes = np.stack([np.arange(n) * 20.0, np.full(n, 100.0), np.arange(n) * 20.0 + 15, 100.0 + np.full(n, bbox_h)],
                          1)
    return KittiObjects(
        name=np.asarray(names, dtype="<U16"),
        truncated=np.zeros(n) if truncated is None else np.asarray(truncated, float),
        occluded=np.zeros(n, int) if occluded is None else np.asarray(occluded, int),
        alpha=np.zeros(n), bbox=np.asarray(bboxes, float), dims=dims, loc=loc, ry=np.zeros(n),
        score=None if scores is None else np.asarray(scores, float),
    )


def frames_of(cls, n_frames, per_frame, **kw):
    gts, dts = [], []
    for f in range(n_frames):
        xs = np.arange(per_frame) * 10.0
        gts.append(objects([cls] * per_frame, xs, **kw))
        dts.append(objects([cls] * per_frame, xs, scores=np.linspace(0.9, 0.5, per_frame) - f * 1e-3, **kw))
    return gts, dts


def ap(res, cls, metric, diff="moderate", key="R40"):
    r = res[cls][metric][diff]
    return None if r is None else r[key]


@pytest.mark.parametrize("cls", ["Car", "Pedestrian", "Cyclist"])
def test_perfect_detections_give_100(cls):
    gts, dts = frames_of(cls, 10, 5)  # 50 valid objects >= 41 -> every recall level is reached
    res = kitti_eval(gts, dts)
    for metric in ("bbox", "bev", "3d"):
        for diff in ("easy", "moderate", "hard"):
            assert ap(res, cls, metric, diff) == pytest.approx(100.0)
            assert ap(res, cls, metric, diff, "R11") == pytest.approx(100.0)
    others = [c for c in SIZES if c != cls]
    assert all(ap(res, c, "3d") is None for c in others)  # no ground truth: undefined, not 0


def test_few_ground_truths_follow_the_devkit_sampling():
    # one GT, one perfect detection: 1 threshold -> only the recall-0 precision point is non-zero
    gts, dts = frames_of("Car", 1, 1)
    res = kitti_eval(gts, dts, metrics=("3d",))
    assert ap(res, "Car", "3d") == pytest.approx(0.0)
    assert ap(res, "Car", "3d", key="R11") == pytest.approx(100.0 / 11)
    # 40 GT all detected: 40 thresholds -> recall 40/40 is never sampled -> 39/40
    gts, dts = frames_of("Car", 8, 5)
    assert ap(kitti_eval(gts, dts, metrics=("3d",)), "Car", "3d") == pytest.approx(97.5)
    np.testing.assert_allclose(get_thresholds(np.ones(3), 3), [1.0, 1.0, 1.0])


def test_half_the_objects_detected_gives_half_ap():
    gts, dts = frames_of("Car", 16, 5)  # 80 valid cars
    dts = [d.select(np.arange(len(d)) < 3) if i % 2 == 0 else d.select(np.arange(len(d)) < 2)
           for i, d in enumerate(dts)]  # 3 + 2 per pair of frames = 40 detections, all correct
    res = kitti_eval(gts, dts, metrics=("bev",))
    assert ap(res, "Car", "bev") == pytest.approx(50.0)  # precision 1 at recalls 1/40 .. 20/40


def test_shifted_boxes_lose_exactly_what_iou_says():
    # shifting a box of length l by d along its length gives IoU (l - d) / (l + d) in BEV and 3D
    car_shift = 1.0  # car l = 4 -> IoU 3/5 = 0.6 < 0.7
    gts, _ = frames_of("Car", 10, 5)
    _, dts = frames_of("Car", 10, 5, shift=car_shift)
    res = kitti_eval(gts, dts, metrics=("bev", "3d"))
    assert ap(res, "Car", "bev") == 0.0 and ap(res, "Car", "3d") == 0.0
    res = kitti_eval(gts, dts, metrics=("3d",), min_overlaps={"Car": 0.55})  # 0.6 > 0.55: all TP
    assert ap(res, "Car", "3d") == pytest.approx(100.0)
    ped_shift = 0.2  # ped l = 0.8 -> IoU 0.6 > 0.5
    gts, _ = frames_of("Pedestrian", 10, 5)
    _, dts = frames_of("Pedestrian", 10, 5, shift=ped_shift)
    assert ap(kitti_eval(gts, dts, metrics=("3d",)), "Pedestrian", "3d") == pytest.approx(100.0)
    _, dts = frames_of("Pedestrian", 10, 5, shift=0.3)  # IoU 0.5/1.1 = 0.45 < 0.5
    assert ap(kitti_eval(gts, dts, metrics=("3d",)), "Pedestrian", "3d") == 0.0


def test_false_positives_lower_precision():
    gts, dts = frames_of("Car", 10, 5)
    # every frame also gets one high-scoring false positive far away -> precision 5/6 at every recall
    fp = [objects(["Car"], [200.0], scores=[0.99]) for _ in dts]
    dts = [KittiObjects(*[np.concatenate([getattr(a, f), getattr(b, f)]) for f in
                          ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry", "score")])
           for a, b in zip(dts, fp)]
    res = kitti_eval(gts, dts, metrics=("bev",))
    # thresholds step through scores: precision at k TPs is k / (k + 10)... monotone interpolation
    r = res["Car"]["bev"]["moderate"]
    prec = np.asarray(r["precision"])
    assert 0 < r["R40"] < 100
    assert prec[1] == pytest.approx(prec[1:41].max())
    assert prec[40] == pytest.approx(50 / 60)


def test_difficulty_levels_from_height_occlusion_truncation():
    gts, dts = frames_of("Car", 10, 5)
    for g in gts:  # object 0 of each frame: occluded (2) -> only "hard"; object 1: 30 px tall -> not "easy"
        g.occluded[0] = 2
        g.bbox[1, 3] = g.bbox[1, 1] + 30
        g.truncated[2] = 0.4  # -> only "hard"
    res = kitti_eval(gts, dts, metrics=("3d",))
    assert res["Car"]["3d"]["easy"]["num_gt"] == 20
    assert res["Car"]["3d"]["moderate"]["num_gt"] == 30
    assert res["Car"]["3d"]["hard"]["num_gt"] == 50
    # matched detections of ignored objects are not false positives
    assert ap(res, "Car", "3d", "easy") == pytest.approx(47.5)  # 20 valid GT, all found: 20 thresholds -> 19/40
    assert ap(res, "Car", "3d", "hard") == pytest.approx(100.0)


def test_neighbour_class_and_dontcare():
    gts, dts = frames_of("Car", 10, 5)
    # a Van in every frame, detected as Car: ignored, not a FP
    gts = [KittiObjects(*[np.concatenate([getattr(g, f), getattr(v, f)]) for f in
                          ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry")])
           for g, v in zip(gts, [objects(["Van"], [100.0]) for _ in gts])]
    van_det = objects(["Car"], [100.0], scores=[0.99])
    dts = [KittiObjects(*[np.concatenate([getattr(d, f), getattr(van_det, f)]) for f in
                          ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry", "score")])
           for d in dts]
    assert ap(kitti_eval(gts, dts, metrics=("3d",)), "Car", "3d") == pytest.approx(100.0)

    # DontCare: an unmatched detection whose image box lies in a DontCare region is no FP (bbox metric)
    gts, dts = frames_of("Car", 10, 5)
    dc_box = np.array([[500.0, 100.0, 600.0, 200.0]])
    gts_dc = [KittiObjects(*[np.concatenate([getattr(g, f), getattr(objects(["DontCare"], [0.0], bboxes=dc_box), f)])
                             for f in ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry")])
              for g in gts]
    fp_in = objects(["Car"], [300.0], scores=[0.99], bboxes=np.array([[510.0, 110.0, 590.0, 190.0]]))
    fp_out = objects(["Car"], [300.0], scores=[0.99], bboxes=np.array([[900.0, 110.0, 990.0, 190.0]]))

    def add(ds, extra):
        return [KittiObjects(*[np.concatenate([getattr(d, f), getattr(extra, f)]) for f in
                               ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry", "score")])
                for d in ds]

    assert ap(kitti_eval(gts_dc, add(dts, fp_in), metrics=("bbox",)), "Car", "bbox") == pytest.approx(100.0)
    assert ap(kitti_eval(gts_dc, add(dts, fp_out), metrics=("bbox",)), "Car", "bbox") < 100.0
    # BEV / 3D: DontCare labels carry no 3D box, so they never excuse a detection (as in the devkit)
    assert ap(kitti_eval(gts_dc, add(dts, fp_in), metrics=("3d",)), "Car", "3d") < 100.0


def test_small_detections_are_ignored():
    gts, dts = frames_of("Car", 10, 5)
    fp_small = objects(["Car"], [300.0], scores=[0.99], bboxes=np.array([[0.0, 0.0, 10.0, 20.0]]))  # 20 px < 25
    dts = [KittiObjects(*[np.concatenate([getattr(d, f), getattr(fp_small, f)]) for f in
                          ("name", "truncated", "occluded", "alpha", "bbox", "dims", "loc", "ry", "score")])
           for d in dts]
    assert ap(kitti_eval(gts, dts, metrics=("3d",)), "Car", "3d") == pytest.approx(100.0)


def test_format_table():
    gts, dts = frames_of("Car", 10, 5)
    table = format_table(kitti_eval(gts, dts, metrics=("bev", "3d")))
    assert "| Car | 100.00 / 100.00 / 100.00 | 100.00 / 100.00 / 100.00 |" in table
    assert "| Pedestrian | - / - / - |" in table
