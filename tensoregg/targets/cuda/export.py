"""A compiled ``cuda`` program as what runs it (``tensoregg.runtime.cuda.CudaCode``: the launches
with every parameter's place in the memory plan) and as an artifact's code (the save hook; loaded
back by ``tensoregg.runtime.cuda.load_cuda``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tensoregg.ir.loops import Barrier, Invoke, statements
from tensoregg.runtime.artifact import TargetCode, npy
from tensoregg.runtime.cuda import CudaCode, LaunchSpec, Param
from tensoregg.runtime.signature import specs

if TYPE_CHECKING:
    from tensoregg.targets.cuda.program import CudaProgram

SOURCE, WEIGHTS = "model.cu", "weights.npy"


def cuda_code(program: CudaProgram) -> CudaCode:
    """What runs ``program`` (its cubins as compiled so far)."""
    g, plan = program.graph, program.program.plan
    launches = []
    for item in program.launches:
        low = program.program.lowered[item.node]
        places, kernel = plan.param_places(low), low.kernel
        stored = {id(b) for b in kernel.outputs}
        params = tuple(Param(places[i].kind, places[i].at, kernel.params[i].dtype.name,
                             id(kernel.params[i]) in stored) for i in item.params)
        barriers = any(isinstance(s, (Barrier, Invoke)) for s in statements([item.launch.stage]))
        launches.append(LaunchSpec(item.launch.name, item.launch.blocks, item.launch.threads,
                                   item.launch.shared_bytes, barriers, params))
    outputs = specs(g, g.outputs)
    written = {n: p.at for n, p in plan.places.items() if p.kind == "output"}
    constants = {n: g.initializers[n] for n in g.outputs if n in g.initializers and n not in written}
    weights = plan.weights_blob[plan.weights_base:]
    return CudaCode(program.source, {a: c.image for a, c in program.cubins.items()}, launches, weights,
                    plan.work_size, specs(g, g.inputs), outputs, written, constants)


def save_cuda(program: CudaProgram) -> TargetCode:
    """The artifact code of ``program``: its CUDA C, a cubin for sm_80 and sm_90 (and the device's
    architecture), the weights, the launches (``tensoregg.runtime.cuda.CODE_FIELDS``)."""
    for arch in ("sm_80", "sm_90"):
        program.compile_for(arch)
    code = cuda_code(program)
    parts = {SOURCE: code.source.encode(), WEIGHTS: npy(code.weights)}
    cubins = {}
    for arch, image in code.cubins.items():
        cubins[arch] = f"{arch}.cubin"
        parts[cubins[arch]] = image
    constants = {}
    for k, t in enumerate(code.outputs):
        if t.name in code.constants and t.name not in constants:
            constants[t.name] = f"outputs/{k}.npy"
            parts[constants[t.name]] = npy(code.constants[t.name])
    launches: list[dict[str, Any]] = [
        {"name": s.name, "blocks": s.blocks, "threads": s.threads, "shared_bytes": s.shared_bytes,
         "barriers": s.barriers, "params": [[p.kind, p.at, p.dtype, p.written] for p in s.params]}
        for s in code.launches]
    manifest = {"source": SOURCE, "cubins": cubins, "weights": WEIGHTS,
                "weights_nbytes": int(code.weights.nbytes), "workspace_nbytes": int(code.workspace_nbytes),
                "launches": launches, "written": code.written, "constants": constants}
    return TargetCode(manifest, parts)
