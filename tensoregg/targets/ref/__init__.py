"""The ``ref`` target: the optimized Graph run by the reference interpreter (numpy), the oracle of
every test. Its description's figures are the first machine kind's measured anchors (one AMD EPYC
core: 102.7 GFLOP/s fp32 FMA peak, ~21 GB/s copy bandwidth; ../shared/notes/anchors.md), for a cost
model that needs some machine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensoregg.ir import Graph, run_graph
from tensoregg.targets import Target, register_target

REF = Target("ref", peak_flops=102.7e9, mem_bandwidth=21e9, kernel_overhead_s=2e-6)


@dataclass
class Interpreted:
    """A Graph as the reference interpreter runs it."""

    graph: Graph

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run_graph(self.graph, feeds)


register_target("ref", summary="the reference interpreter (numpy): every op, one thread, slow",
                describe=lambda: REF, build=lambda graph, target: Interpreted(graph))
