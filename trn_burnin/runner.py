"""One node's burn-in from start to report: discover, read counters, compile the kernel once for the
node, burn every core, judge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from trn_burnin import __version__
from trn_burnin.artifacts import CompiledVariant
from trn_burnin.catalog import InstanceSpec
from trn_burnin.counters import counter_changes, parse_hw_errors
from trn_burnin.device import DeviceError, DeviceLayer
from trn_burnin.discovery import DiscoveryError, Topology, parse_neuron_ls
from trn_burnin.measure import CoreResult
from trn_burnin.plan import plan_gemm
from trn_burnin.processes import Progress
from trn_burnin.report import NodeIdentity, build_report
from trn_burnin.thresholds import Thresholds
from trn_burnin.verdict import Evidence, Failure, evaluate
from trn_burnin.worker import NRTPY, WorkerJob


@dataclass(frozen=True)
class RunOptions:
    spec: InstanceSpec
    instance_id: str
    ultraserver_id: str | None
    dtype: str
    shape: tuple[int, int, int]  # M, K, N
    repeat: int
    warmup_s: float
    duration_s: float
    sample_tiles: int
    seed: int
    thresholds: Thresholds


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compile(host: DeviceLayer, job: WorkerJob, spec: InstanceSpec,
             progress: Progress) -> tuple[tuple[CompiledVariant, ...], tuple[Failure, ...]]:
    compiled = host.compile_kernels(job, spec.core.platform_target, progress)
    failures = tuple(Failure("compile_error", f"the repeat={c.repeat} kernel did not compile: {c.error}")
                     for c in compiled if c.neff is None)
    return compiled, failures


def run_burnin(options: RunOptions, host: DeviceLayer, now: Callable[[], str] = utc_now,
               progress: Progress = lambda _: None) -> dict[str, Any]:
    """The node's report; its verdict passes only if every rule does. ``progress`` hears what the
    run is doing, a line at a time."""
    spec = options.spec
    plan = plan_gemm(spec.core, options.dtype, *options.shape)
    loader = host.kernel_loader()
    job = WorkerJob(plan, options.repeat, options.warmup_s, options.duration_s, options.sample_tiles, options.seed,
                    spec.core.peak_tflops_per_core(options.dtype), loader.kind)
    discovery_failures: tuple[Failure, ...] = ()
    try:
        topology = parse_neuron_ls(host.neuron_ls())
    except (DeviceError, DiscoveryError) as error:
        topology = Topology(())
        discovery_failures = (Failure("discovery", f"could not list Neuron devices: {error}"),)
    progress(f"{len(topology.devices)} Neuron devices, {len(topology.cores)} NeuronCores; {options.dtype} GEMM "
             f"{plan.m}x{plan.k}x{plan.n}, {options.repeat} per launch; workers run the kernel with {loader.kind}"
             + (f" ({loader.note})" if loader.note else ""))
    before = host.hw_counters()
    compiled: tuple[CompiledVariant, ...] = ()
    results: tuple[CoreResult, ...] = ()
    if topology.cores:
        compiled, compile_failures = _compile(host, job, spec, progress)
        discovery_failures += compile_failures
        if not compile_failures:
            neffs = {c.repeat: c.neff for c in compiled if c.neff}
            job = job.with_neffs(neffs) if loader.kind == NRTPY else job
            results = tuple(host.run_cores(topology.cores, job, progress))
    after = host.hw_counters()
    try:
        hw_errors = parse_hw_errors(host.kernel_log())
    except DeviceError as error:
        hw_errors = ()
        discovery_failures += (Failure("discovery", f"could not read the kernel log: {error}"),)
    evidence = Evidence(spec, options.dtype, topology, results, counter_changes(before, after), hw_errors)
    failures = discovery_failures + evaluate(evidence, options.thresholds)
    kernel = {"loader": loader.to_dict(), "compiled": [c.to_dict() for c in compiled]}
    workload = {"dtype": options.dtype, "m": plan.m, "k": plan.k, "n": plan.n, "repeat": options.repeat,
                "warmup_seconds": options.warmup_s, "duration_seconds": options.duration_s,
                "sample_tiles": options.sample_tiles, "seed": options.seed, "plan": plan.to_dict()}
    node = NodeIdentity(options.instance_id, spec.instance_type, spec.key, options.ultraserver_id, host.hostname())
    return build_report(node=node, software={"trn_burnin": __version__, **host.software_versions()},
                        workload=workload, kernel=kernel, thresholds=options.thresholds, evidence=evidence,
                        failures=failures, generated_at=now())
