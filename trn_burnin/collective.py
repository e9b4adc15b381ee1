"""Cluster all-reduce: plan, run and judge one ``nccom-test`` across every passed node over EFA.

The handover gate's second stage runs ``python -m trn_burnin cluster-test`` after every node passed
its own burn-in. Where nccom-test finds its nodes is a placement: a Slurm allocation, with
nccom-test invoked from the head node as the Neuron docs have it for slurm mode
(``--slurm-mode --slurm-job-id``: it runs neuron-bench on the allocation's nodes through srun), or
named hosts it reaches over passwordless root SSH (``--hosts``; on Kubernetes the pods meet first,
see trn_burnin.rendezvous). Every rank runs with libfabric's EFA provider and device RDMA
(``EFA_ENVIRONMENT``). Either way there is
one rank per logical NeuronCore of every node, so ranks are nodes x the catalog's logical cores per
instance; the logical-core size is pinned to the catalog's default so that count holds whatever the
node's environment says.

Threshold. The measured figure is the bus bandwidth (busbw = algbw x 2(r-1)/r for all-reduce) at
the LARGEST message size, because the small sizes are latency-bound. It must reach

    min bus bandwidth (GiB/s) = fraction x efa_gbps_per_instance x 1e9 / 8 / 2^30

(nccom-test reports GiB/s although its column says GB/s), with ``fraction`` 0.25 by default. This
is a floor, not an expectation: it catches EFA not in use, a TCP fallback or a dead set of
interfaces, and stays deliberately below what a healthy cluster reaches (the Neuron docs' own
2-node Trn1 example reaches about half its line rate at 1 GiB). It is not calibrated on Trn2 or
Trn3 yet, hence the override. Within one UltraServer much of the traffic goes over NeuronLink
instead of EFA; the floor is still a valid lower bound there.

The result is one versioned JSON document described by cluster_test_schema.json beside this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from trn_burnin.catalog import FP32, MIB, InstanceSpec

GIB = 1024 * MIB
OPERATION = "all_reduce"
NCCOM_TEST = Path("/opt/aws/neuron/bin/nccom-test")  # installed by aws-neuronx-tools
LOGICAL_CORE_ENV = "NEURON_LOGICAL_NC_CONFIG"
# What Neuron's multi-node setup guide (aws-neuron-sdk frameworks/torch/torch-neuronx/
# setup-trn1-multi-node-execution.rst) has every process of a collective set, as the peers'
# nccom-test jobs do. Not FI_EFA_FORK_SAFE: the guide and the runtime troubleshooting page need it
# only on kernels before 5.15 (Amazon Linux 2); the kit's nodes run Ubuntu 24.04 and AL2023.
EFA_ENVIRONMENT = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"}
DEFAULT_MIN_BUS_BANDWIDTH_FRACTION = 0.25
# The gate gives the whole Slurm allocation 8 minutes; stop nccom-test in time to still write a
# verdict.
NCCOM_TIMEOUT_S = 360
OUTPUT_TAIL_LINES = 3  # of nccom-test's output, quoted in a failure
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("cluster_test_schema.json")
# --hosts mode. The first host collects the latencies on nccom-test's documented default port.
DATA_COLLECTOR_PORT = 60006
# Any free port on the first host serves the runtime's root communicator (Neuron docs); this is
# the one AWS's own EKS nccom-test manifest (aws/aws-k8s-tester) uses.
ROOT_COMM_PORT = 63182
# A pod's own interface for the runtime's bootstrap sockets, as in that manifest.
SOCKET_IFNAME = "eth0"


def _size_text(size: int) -> str:
    """nccom-test's size units are binary (its docs show 32MB as 33554432 bytes)."""
    return f"{size // GIB}GB" if size % GIB == 0 else f"{size // MIB}MB"


@dataclass(frozen=True)
class AllReducePlan:
    """What nccom-test is asked to do."""

    nodes: int
    ranks: int
    logical_core_size: int
    min_bytes: int = 64 * MIB
    max_bytes: int = GIB
    step_factor: int = 4
    datatype: str = FP32
    iterations: int = 20
    warmup_iterations: int = 5

    @classmethod
    def for_cluster(cls, spec: InstanceSpec, nodes: int) -> "AllReducePlan":
        return cls(nodes=nodes, ranks=nodes * spec.logical_cores_per_instance,
                   logical_core_size=spec.core.default_logical_core_size)

    @property
    def sizes(self) -> tuple[int, ...]:
        sizes = [self.min_bytes]
        while sizes[-1] * self.step_factor <= self.max_bytes:
            sizes.append(sizes[-1] * self.step_factor)
        return tuple(sizes)

    @property
    def environment(self) -> dict[str, str]:
        return {LOGICAL_CORE_ENV: str(self.logical_core_size), **EFA_ENVIRONMENT}

    def argv(self, placement: "Placement", json_path: Path, binary: str) -> list[str]:
        # --check all_ones: each output must equal the rank count. The default "random" check
        # builds a CPU golden result per rank and size, too slow at 64+ ranks x 1 GiB per node.
        return [
            binary, OPERATION, "-r", str(self.ranks), "-N", str(self.nodes),
            "-b", _size_text(self.min_bytes), "-e", _size_text(self.max_bytes), "-f", str(self.step_factor),
            "-n", str(self.iterations), "-w", str(self.warmup_iterations), "-d", self.datatype, "--check", "all_ones",
            *placement.args,
            "--non-interactive", "--report-to-json-file", str(json_path),
        ]  # fmt: skip


class Placement(Protocol):
    """Where nccom-test finds its nodes: its arguments and the environment it needs for that."""

    @property
    def args(self) -> list[str]: ...

    @property
    def environment(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class SlurmPlacement:
    """A Slurm allocation, nccom-test on the head node: it starts neuron-bench on the allocation's
    nodes with srun, which passes its environment on."""

    job_id: str

    @property
    def args(self) -> list[str]:
        return ["--slurm-mode", "--slurm-job-id", self.job_id]

    @property
    def environment(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class HostsPlacement:
    """Named hosts that nccom-test reaches over passwordless root SSH (its MPI mode). The first is
    the host running nccom-test: it holds rank 0, the root communicator and the data collector."""

    hosts: tuple[str, ...]

    @property
    def args(self) -> list[str]:
        return ["--hosts", *self.hosts, "--data-collector-host", self.hosts[0],
                "--data-collector-port", str(DATA_COLLECTOR_PORT)]

    @property
    def environment(self) -> dict[str, str]:
        return {
            "NEURON_RT_ROOT_COMM_ID": f"{self.hosts[0]}:{ROOT_COMM_PORT}",
            "CCOM_SOCKET_IFNAME": SOCKET_IFNAME,
            # Open MPI refuses to start as root without both, and pods run as root.
            "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        }


@dataclass(frozen=True)
class BusBandwidthFloor:
    """The least all-reduce bus bandwidth a healthy cluster must reach (see the module docstring)."""

    fraction: float
    efa_gbps_per_instance: int

    @classmethod
    def for_spec(cls, spec: InstanceSpec, fraction: float = DEFAULT_MIN_BUS_BANDWIDTH_FRACTION) -> "BusBandwidthFloor":
        return cls(fraction, spec.efa_gbps_per_instance)

    @property
    def min_bus_bandwidth_gibps(self) -> float:
        return self.fraction * self.efa_gbps_per_instance * 1e9 / 8 / 2**30

    def to_dict(self) -> dict[str, float]:
        return {"min_bus_bandwidth_gibps": self.min_bus_bandwidth_gibps, "fraction": self.fraction,
                "efa_gbps_per_instance": self.efa_gbps_per_instance}


@dataclass(frozen=True)
class NccomRun:
    """What one nccom-test run left behind."""

    exit_code: int | None  # None: it did not complete (could not start, timed out)
    output: str  # standard output and error, interleaved
    report: Any  # the parsed --report-to-json-file document; None when absent or not JSON


class NccomRunner(Protocol):
    def run(self, argv: Sequence[str], env: Mapping[str, str], json_path: Path) -> NccomRun: ...


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def nccom_test_binary() -> str:
    return str(NCCOM_TEST) if NCCOM_TEST.exists() else shutil.which("nccom-test") or str(NCCOM_TEST)


class NccomTest:
    """The real nccom-test, as a subprocess of this job step."""

    def __init__(self, timeout_s: float = NCCOM_TIMEOUT_S):
        self.timeout_s = timeout_s

    def run(self, argv: Sequence[str], env: Mapping[str, str], json_path: Path) -> NccomRun:
        try:
            done = subprocess.run(list(argv), env={**os.environ, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return NccomRun(None, f"nccom-test did not finish within {self.timeout_s:.0f} s",
                            read_json_file(json_path))
        except OSError as error:
            return NccomRun(None, f"could not start {argv[0]}: {error}", None)
        return NccomRun(done.returncode, done.stdout, read_json_file(json_path))


def parse_results(report: Any) -> list[dict[str, float]]:
    """nccom-test's JSON rows under the result document's names; ValueError if not as documented."""
    rows = report.get("results") if isinstance(report, dict) else None
    try:
        return [{"size_bytes": int(row["size(B)"]), "busbw_gibps": float(row["busbw(GB/s)"]),
                 "algbw_gibps": float(row["algbw(GB/s)"]), "time_us": float(row["time:avg(us)"])}
                for row in rows or ()]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error


def _output_tail(output: str) -> str:
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    return " | ".join(lines[-OUTPUT_TAIL_LINES:]) or "no output"


def judge(plan: AllReducePlan, floor: BusBandwidthFloor,
          run: NccomRun) -> tuple[list[dict[str, float]], float | None, list[str]]:
    """(results, bus bandwidth at the largest size or None, failure messages)."""
    failures = []
    if run.exit_code != 0:
        what = "did not complete" if run.exit_code is None else f"exited {run.exit_code}"
        failures.append(f"nccom-test {what}: {_output_tail(run.output)}")
    try:
        results = parse_results(run.report)
    except ValueError as error:
        failures.append(f"nccom-test results are not in the documented format ({error})")
        return [], None, failures
    measured = next((r["busbw_gibps"] for r in results if r["size_bytes"] == plan.max_bytes), None)
    if not results:
        failures.append("nccom-test reported no results (--report-to-json-file)")
    elif measured is None:
        largest = max(r["size_bytes"] for r in results)
        failures.append(f"nccom-test reported no result for the largest size, {plan.max_bytes} bytes "
                        f"(largest reported: {largest} bytes)")
    elif measured < floor.min_bus_bandwidth_gibps:
        failures.append(
            f"all-reduce bus bandwidth {measured:.1f} GiB/s across {plan.nodes} nodes is below the "
            f"{floor.min_bus_bandwidth_gibps:.1f} GiB/s floor ({floor.fraction * 100:g}% of "
            f"{floor.efa_gbps_per_instance} Gbps EFA per instance)")
    return results, measured, failures


def run_cluster_test(spec: InstanceSpec, plan: AllReducePlan, floor: BusBandwidthFloor, placement: Placement,
                     json_path: Path, runner: NccomRunner, now: Callable[[], str],
                     binary: str | None = None) -> dict[str, Any]:
    """Run nccom-test once and return the result document."""
    command = plan.argv(placement, json_path, binary or nccom_test_binary())
    environment = {**plan.environment, **placement.environment}
    json_path.unlink(missing_ok=True)  # a stale file must not pass for this run's results
    run = runner.run(command, environment, json_path)
    results, measured, failures = judge(plan, floor, run)
    return result_document(spec, plan, floor, now(), failures, command=command, environment=environment,
                           results=results, measured=measured)


def result_document(spec: InstanceSpec, plan: AllReducePlan, floor: BusBandwidthFloor, generated_at: str,
                    failures: Sequence[str], *, command: Sequence[str] = (),
                    environment: Mapping[str, str] | None = None, results: Sequence[Mapping[str, float]] = (),
                    measured: float | None = None) -> dict[str, Any]:
    """The result document; without a command, nccom-test never ran and ``failures`` say why."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at,
        "operation": OPERATION,
        "nodes": plan.nodes,
        "ranks": plan.ranks,
        "instance_type": spec.instance_type,
        "datatype": plan.datatype,
        "sizes": list(plan.sizes),
        "results": [dict(result) for result in results],
        "bus_bandwidth_gibps": measured,
        "threshold": floor.to_dict(),
        "command": list(command),
        "environment": dict(environment or {}),
        "verdict": {"passed": not failures, "failures": [{"message": m} for m in failures]},
    }
