"""Training and inference speed of minirc's Mask R-CNN vs torchvision's, same small configuration.

    python benchmarks/bench_train.py                      # shapes_demo and tiny, minirc (cpu) and torchvision
    python benchmarks/bench_train.py --config shapes_demo --repeats 10
    (run it with a Python where torch and torchvision are installed)

Measures, per framework and config, on a batch of shapes images (the demo's data):

* seconds per training iteration (forward + backward + SGD step; median of ``--repeats`` after
  ``--warmup`` untimed iterations that also compile the Numba kernels), wall clock and process CPU
  time (all threads; on a shared machine the CPU time moves less with the load than the wall time),
* images per second at inference (eval mode, median batch time),
* peak resident memory of the process (``ru_maxrss``; each framework runs in its own subprocess so
  the numbers do not mix; the minirc number includes Numba's compiler).

The torchvision model is built from the same :class:`MaskRCNNConfig` (ResNet body of the same
blocks and widths, with the config's norm (FrozenBatchNorm2d or
BatchNorm2d), FPN, anchors, RPN/RoI sampling sizes, heads), so both
do the same arithmetic; torchvision's MultiScaleRoIAlign has no ``aligned`` flag, which changes
no cost. Both use every core of the machine (Numba's and torch's default thread counts).
Goal (issue 5): minirc no slower than 1.5x torchvision per training iteration.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _batch(cfg_name: str, batch_size: int):
    from minirc.train.demo import demo_config
    from minirc.data import ShapesDataset

    d = demo_config(cfg_name)
    ds = ShapesDataset(batch_size, image_size=d.image_size, classes=d.classes, max_objects=d.train_max_objects,
                       seed=0, empty_fraction=0.0)
    items = [ds[i] for i in range(batch_size)]
    return d, ds.num_classes, [im for im, _ in items], [t for _, t in items]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_minirc(cfg_name, batch_size, warmup, repeats):
    from minirc import no_grad
    from minirc import random as mrandom
    from minirc.model import MaskRCNN
    from minirc.model.config import preset
    from minirc.optim import SGD

    d, k, images, targets = _batch(cfg_name, batch_size)
    mrandom.manual_seed(0)
    model = MaskRCNN(preset(d.model, num_classes=k))
    opt = SGD(list(model.parameters()), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def train_step():
        model.train()
        losses = model(images, targets)
        total = None
        for v in losses.values():
            total = v if total is None else total + v
        opt.zero_grad()
        total.backward()
        opt.step()

    def infer():
        model.eval()
        with no_grad():
            model(images)

    return _time(train_step, infer, warmup, repeats, batch_size)


def _torch_model(cfg, num_classes):
    """torchvision MaskRCNN with the layers and settings of a minirc MaskRCNNConfig."""
    import torch.nn as nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, RoIPool
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    b = cfg.backbone
    block = BasicBlock if b.block == "basic" else Bottleneck
    if b.norm == "bn":  # trainable BatchNorm2d, the presets made for training from scratch
        norm = lambda c: nn.BatchNorm2d(c, eps=b.frozen_bn_eps)  # noqa: E731
    else:
        norm = lambda c: FrozenBatchNorm2d(c, eps=b.frozen_bn_eps)  # noqa: E731

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, b.stem_channels, 7, 2, 3, bias=False)
            self.bn1 = norm(b.stem_channels)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes = b.stem_channels
            for i, (n, w) in enumerate(zip(b.layers, b.widths)):
                stride = 1 if i == 0 else 2
                layers = []
                for j in range(n):
                    down = None
                    if j == 0 and (stride != 1 or inplanes != w * block.expansion):
                        down = nn.Sequential(nn.Conv2d(inplanes, w * block.expansion, 1, stride, bias=False),
                                             norm(w * block.expansion))
                    layers.append(block(inplanes, w, stride if j == 0 else 1, down, norm_layer=norm))
                    inplanes = w * block.expansion
                setattr(self, f"layer{i + 1}", nn.Sequential(*layers))

    backbone = BackboneWithFPN(Body(), {f"layer{i}": str(i - 1) for i in range(1, 5)}, list(b.out_channels),
                               cfg.fpn.out_channels, extra_blocks=LastLevelMaxPool() if cfg.fpn.extra_pool else None)
    c = cfg.fpn.out_channels

    def pooler(size, ratio):
        if cfg.roi_heads.pooler_type == "roi_pool":
            return RoIPool(size, 1.0 / 4)  # not multi-scale in torchvision; single level (cost comparable)
        return MultiScaleRoIAlign(["0", "1", "2", "3"], size, ratio)

    def box_head():
        d = cfg.box_head.representation_size
        if cfg.box_head.norm == "none":
            return TwoMLPHead(c * cfg.box_head.pool_size ** 2, d)
        # minirc's norm="bn": BatchNorm after fc6 and fc7, before each ReLU
        return nn.Sequential(nn.Flatten(1), nn.Linear(c * cfg.box_head.pool_size ** 2, d), nn.BatchNorm1d(d),
                             nn.ReLU(), nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU())

    r, h, mh, t = cfg.rpn, cfg.roi_heads, cfg.mask_head, cfg.transform
    return MaskRCNN(
        backbone, num_classes=None, min_size=t.min_size, max_size=t.max_size,
        image_mean=list(t.image_mean), image_std=list(t.image_std),
        rpn_anchor_generator=AnchorGenerator(cfg.anchors.sizes, cfg.anchors.aspect_ratios),
        rpn_pre_nms_top_n_train=r.pre_nms_top_n_train, rpn_pre_nms_top_n_test=r.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=r.post_nms_top_n_train, rpn_post_nms_top_n_test=r.post_nms_top_n_test,
        rpn_nms_thresh=r.nms_thresh, rpn_fg_iou_thresh=r.fg_iou_thresh, rpn_bg_iou_thresh=r.bg_iou_thresh,
        rpn_batch_size_per_image=r.batch_size_per_image, rpn_positive_fraction=r.positive_fraction,
        box_roi_pool=pooler(cfg.box_head.pool_size, cfg.box_head.sampling_ratio),
        box_head=box_head(),
        box_predictor=FastRCNNPredictor(cfg.box_head.representation_size, num_classes),
        box_score_thresh=h.score_thresh, box_nms_thresh=h.nms_thresh, box_detections_per_img=h.detections_per_img,
        box_fg_iou_thresh=h.fg_iou_thresh, box_bg_iou_thresh=h.bg_iou_thresh,
        box_batch_size_per_image=h.batch_size_per_image, box_positive_fraction=h.positive_fraction,
        bbox_reg_weights=h.bbox_reg_weights,
        mask_roi_pool=pooler(mh.pool_size, mh.sampling_ratio),
        mask_head=MaskRCNNHeads(c, list(mh.layers), mh.dilation),
        mask_predictor=MaskRCNNPredictor(mh.layers[-1], mh.dim_reduced, num_classes))


def run_torch(cfg_name, batch_size, warmup, repeats):
    import torch

    from minirc.model.config import preset

    d, k, images, targets = _batch(cfg_name, batch_size)
    torch.manual_seed(0)
    model = _torch_model(preset(d.model, num_classes=k), k)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9,
                          weight_decay=1e-4)
    timgs = [torch.from_numpy(im) for im in images]
    ttgts = [{"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"]),
              "masks": torch.from_numpy(t["masks"])} for t in targets]

    def train_step():
        model.train()
        loss = sum(model(timgs, ttgts).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(timgs)

    out = _time(train_step, infer, warmup, repeats, batch_size)
    out["threads"] = torch.get_num_threads()
    return out


def _time(train_step, infer, warmup, repeats, batch_size):
    t0 = time.perf_counter()
    for _ in range(warmup):
        train_step()
    warm = time.perf_counter() - t0
    train, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        train_step()
        train.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    infer()
    inf = []
    for _ in range(max(3, repeats // 2)):
        t = time.perf_counter()
        infer()
        inf.append(time.perf_counter() - t)
    return {"s_per_iter": statistics.median(train), "cpu_s_per_iter": statistics.median(cpu),
            "images_per_s": batch_size / statistics.median(inf),
            "warmup_s": warm, "peak_mb": _peak_mb()}


def _subprocess(framework, cfg, args):
    cmd = [sys.executable, __file__, "--child", framework, "--config", cfg, "--batch-size", str(args.batch_size),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", help="demo preset(s) (default: shapes_demo and tiny)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", choices=("minirc", "torchvision"), help=argparse.SUPPRESS)
    args = p.parse_args()
    configs = args.config or ["shapes_demo", "tiny"]
    if args.child:
        fn = run_minirc if args.child == "minirc" else run_torch
        print(json.dumps(fn(configs[0], args.batch_size, args.warmup, args.repeats)))
        return
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch/torchvision not importable here: timing minirc only")
    print(f"batch of {args.batch_size} shapes images, median of {args.repeats} iterations after {args.warmup} "
          f"warm-up; {os.cpu_count()} cores; minirc backend: cpu")
    print(f"{'config':12s} {'framework':12s} {'s/iter':>8s} {'CPU s/iter':>11s} {'img/s (eval)':>13s} "
          f"{'peak MB':>8s} {'warm-up s':>10s}")
    for cfg in configs:
        rows = {"minirc": _subprocess("minirc", cfg, args)}
        if have_torch:
            rows["torchvision"] = _subprocess("torchvision", cfg, args)
        for name, r in rows.items():
            if "error" in r:
                print(f"{cfg:12s} {name:12s} error: {r['error']}")
                continue
            print(f"{cfg:12s} {name:12s} {r['s_per_iter']:8.3f} {r['cpu_s_per_iter']:11.3f} {r['images_per_s']:13.1f} "
                  f"{r['peak_mb']:8.0f} {r['warmup_s']:10.1f}")
        if have_torch and "error" not in rows["minirc"] and "error" not in rows["torchvision"]:
            ratio = rows["minirc"]["s_per_iter"] / rows["torchvision"]["s_per_iter"]
            inf = rows["torchvision"]["images_per_s"] / rows["minirc"]["images_per_s"]
            print(f"{cfg:12s} minirc / torchvision: training {ratio:.2f}x the time per iteration "
                  f"(goal <= 1.5x), inference {inf:.2f}x the time per image")


if __name__ == "__main__":
    os.environ.setdefault("MINIRC_BACKEND", "cpu")
    main()
