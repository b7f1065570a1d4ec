"""An SSD-style detector head written in torch (convolutions -> box offsets and scores -> decoded
boxes -> ``torchvision.ops.nms`` -> the kept boxes and scores) compiled and compared with eager.

torch.export keeps ``torchvision::nms`` as one op (its size data-dependent); the frontend maps it
to NonMaxSuppression, which runs on the host between compiled stages (tensoregg.staging). Where
torchvision's extension cannot load (a CUDA build beside CPU torch), the op is defined here with
torchvision's schema, fake (meta) kernel and CPU algorithm, so the export is the same."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensoregg  # noqa: E402


def _nms_eager(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's CPU kernel: boxes by score (stable, descending), each kept one suppressing the
    later ones overlapping it by an IoU above the threshold."""
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in torch.sort(scores, stable=True, descending=True).indices.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        inter = ((torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
                 * (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0))
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def _torchvision_nms():
    try:
        import torchvision

        return torchvision.ops.nms
    except (ImportError, RuntimeError, OSError):  # the extension does not load
        pass
    if not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", _nms_eager, "CPU")
        _torchvision_nms.lib = lib  # kept alive with the op

        @torch.library.register_fake("torchvision::nms")
        def _(dets, scores, iou_threshold):
            return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)
    return torch.ops.torchvision.nms


class DetectorHead(torch.nn.Module):
    """Two convolutions, box-offset and score heads over a 4x4 grid of anchors, SSD's decoding
    (center offsets scaled by the anchor size, log-scale sizes), NMS; returns kept boxes and scores."""

    def __init__(self, iou_threshold: float = 0.3) -> None:
        super().__init__()
        self.nms, self.iou_threshold = _torchvision_nms(), iou_threshold
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.loc = torch.nn.Conv2d(8, 4, 3, padding=1)
        self.conf = torch.nn.Conv2d(8, 1, 3, padding=1)
        ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
        anchors = torch.stack([xs + 0.5, ys + 0.5, torch.full_like(xs, 2.0), torch.full_like(xs, 2.0)], -1)
        self.register_buffer("anchors", anchors.reshape(-1, 4))

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every anchor's box (corners) and score."""
        f = self.body(x)
        loc = self.loc(f).permute(0, 2, 3, 1).reshape(-1, 4)
        scores = torch.sigmoid(self.conf(f)).reshape(-1)
        a = self.anchors
        center = a[:, :2] + loc[:, :2] * 0.1 * a[:, 2:]
        size = a[:, 2:] * torch.exp(loc[:, 2:] * 0.2)
        return torch.cat([center - size / 2, center + size / 2], 1), scores

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.decode(x)
        keep = self.nms(boxes, scores, self.iou_threshold)
        return boxes[keep], scores[keep]


class FilteredHead(DetectorHead):
    """The head with SSD's score filter before NMS: a bool mask (``boxes[scores > threshold]``, a
    Compress) whose kept positions are returned too (``torch.nonzero``)."""

    def forward(self, x: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, ...]:
        boxes, scores = self.decode(x)
        mask = scores > threshold
        boxes, scores = boxes[mask], scores[mask]
        keep = self.nms(boxes, scores, self.iou_threshold)
        return boxes[keep], scores[keep], torch.nonzero(mask)


def assert_matches_eager(model: torch.nn.Module, module: tensoregg.Module, *inputs: torch.Tensor) -> list:
    with torch.no_grad():
        want = model(*inputs)
    got = module.run(*(t.numpy() for t in inputs))
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)
    return got


def test_ssd_head_with_nms_matches_eager():
    torch.manual_seed(0)
    model = DetectorHead().eval()
    module = tensoregg.compile(model, "llvm", example_inputs=(torch.zeros(1, 3, 8, 8),))
    assert "NonMaxSuppression" in module.graph_text
    counts = set()
    for seed in range(4):
        x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        counts.add(len(assert_matches_eager(model, module, x)[0]))
    assert 0 < module.program.compiles == len(counts)  # the gathers after NMS, once per count


@pytest.mark.slow
def test_score_filter_then_nms_matches_eager():
    """Two data-dependent ops in a row (the mask's Compress, then NMS over what it kept): every
    stage after the filter compiled per count; nothing kept (a threshold over every score) too."""
    torch.manual_seed(0)
    model = FilteredHead().eval()
    module = tensoregg.compile(model, "llvm", example_inputs=(torch.zeros(1, 3, 8, 8), torch.tensor(0.5)))
    for seed, threshold in [(0, 0.45), (1, 0.45), (0, 2.0)]:
        x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        got = assert_matches_eager(model, module, x, torch.tensor(threshold))
        assert (len(got[2]) > 0) == (threshold < 1)


class KeptShapes(torch.nn.Module):
    """Reshapes and a sum of what NMS kept: a view to its size unknown at export (-1 in the IR)."""

    def __init__(self) -> None:
        super().__init__()
        self.nms = _torchvision_nms()

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kept = boxes[self.nms(boxes, scores, 0.5)]
        return kept.reshape(-1, 2, 2) * 2, kept.flatten(), scores.sum()


def test_views_of_what_nms_kept_match_eager():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 2, (12, 2)).astype(np.float32)
    boxes = torch.tensor(np.concatenate([corner, corner + rng.uniform(1, 5, (12, 2)).astype(np.float32)], 1))
    model = KeptShapes()
    module = tensoregg.compile(model, "llvm", example_inputs=(boxes, torch.rand(12)), optimize=False)
    scores = torch.rand(12, generator=torch.Generator().manual_seed(0))
    assert len(assert_matches_eager(model, module, boxes, scores)[1]) < 48  # some boxes were suppressed
