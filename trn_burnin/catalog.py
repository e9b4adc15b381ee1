"""Hardware catalog: the one place that knows what each Trainium instance type is.

Everything that depends on hardware (EFA layout, node counts, burn-in tile sizes and throughput
thresholds) derives from an entry here. The catalog lives in the node-side package because the
burn-in on each node needs it too; the CDK code imports it from here.

Facts come from the AWS Neuron documentation (trn2-arch, trn3-arch, trainium2, trainium3, the NKI
ISA reference) as summarised in shared/reference/trainium-platform-facts.md. Fields listed in an
entry's ``uncertain`` tuple are not published by AWS yet; configuration may override them
(see ``InstanceSpec.with_overrides``) without any code change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

MIB = 1024 * 1024

# Data types the burn-in can drive, by the name used in reports and configuration.
BF16 = "bf16"
FP8 = "fp8"
MXFP8 = "mxfp8"
FP32 = "fp32"


@dataclass(frozen=True)
class NeuronCoreGeneration:
    """One NeuronCore generation and the documented limits an NKI kernel must respect."""

    name: str
    # Tensor Engine: a systolic array of pmax rows by stationary_fmax columns.
    pmax: int
    stationary_fmax: int
    moving_fmax: int  # moving free size for FP32 PSUM output (one PSUM bank on v2/v3)
    clock_ghz: float
    sbuf_bytes: int
    psum_bytes: int
    psum_banks: int
    fp8_double_row: bool  # nc_matmul perf_mode="double_row" doubles FP8 throughput
    has_matmul_mx: bool  # nisa.nc_matmul_mx for MXFP8/MXFP4
    # HBM FLOP/byte at which a BF16 GEMM turns compute-bound (NKI matmul tutorial).
    ridge_flop_per_byte: float
    fp32_tflops_per_core: float  # published per-chip FP32 figure divided by cores per chip
    # Physical cores per logical NeuronCore by default (NEURON_LOGICAL_NC_CONFIG); collectives
    # such as nccom-test count ranks in logical cores.
    default_logical_core_size: int

    @property
    def psum_bank_bytes_per_partition(self) -> int:
        return self.psum_bytes // self.psum_banks // self.pmax

    @property
    def bf16_tflops_per_core(self) -> float:
        """Dense BF16 peak of one Tensor Engine: rows x columns x 2 FLOP x clock."""
        return self.pmax * self.stationary_fmax * 2 * self.clock_ghz / 1000.0

    def peak_tflops_per_core(self, dtype: str) -> float:
        """Dense peak per NeuronCore for ``dtype``; the reference every burn-in threshold uses.

        We use the per-core Tensor Engine figure rather than the per-chip marketing number
        (667 TFLOPS BF16 for Trainium2, which exceeds 8 cores x 78.6) because the burn-in
        measures one core at a time.
        """
        bf16 = self.bf16_tflops_per_core
        peaks = {BF16: bf16, FP32: self.fp32_tflops_per_core}
        peaks[FP8] = bf16 * (2 if self.fp8_double_row else 1)
        if self.has_matmul_mx:
            peaks[MXFP8] = bf16 * 4
        if dtype not in peaks:
            raise ValueError(
                f"dtype {dtype!r} is not supported on NeuronCore-{self.name}; "
                f"supported: {', '.join(sorted(peaks))}"
            )
        return peaks[dtype]

    @property
    def supported_dtypes(self) -> tuple[str, ...]:
        return (BF16, FP8, FP32) + ((MXFP8,) if self.has_matmul_mx else ())


NEURONCORE_V3 = NeuronCoreGeneration(
    name="v3",
    pmax=128,
    stationary_fmax=128,
    moving_fmax=512,
    clock_ghz=2.4,
    sbuf_bytes=28 * MIB,  # 128 partitions x 224 KiB (NKI Trainium2 architecture guide)
    psum_bytes=2 * MIB,
    psum_banks=8,
    fp8_double_row=True,
    has_matmul_mx=False,
    ridge_flop_per_byte=220.0,
    fp32_tflops_per_core=181.0 / 8,
    default_logical_core_size=2,
)

NEURONCORE_V4 = NeuronCoreGeneration(
    name="v4",
    pmax=128,
    stationary_fmax=128,
    moving_fmax=4096,
    clock_ghz=2.4,
    sbuf_bytes=32 * MIB,
    psum_bytes=2 * MIB,
    psum_banks=8,
    fp8_double_row=True,
    has_matmul_mx=True,
    # No published v4 figure; 4.7-4.9 TB/s HBM per chip against ~8x the per-core peak keeps it
    # close to v3's, so the tutorial's figure is the conservative target.
    ridge_flop_per_byte=220.0,
    fp32_tflops_per_core=183.0 / 8,
    default_logical_core_size=2,
)


@dataclass(frozen=True)
class EfaInterface:
    """One network interface of a launch template: where it sits and what kind it is."""

    network_card_index: int
    device_index: int
    interface_type: str  # "interface" (ENA with an IP) or "efa-only"


@dataclass(frozen=True)
class InstanceSpec:
    """One Trainium instance type as the kit uses it."""

    key: str  # stable catalog key; configuration overrides refer to it
    instance_type: str
    ultraserver_type: str | None  # None: instance-level Capacity Blocks
    instances_per_ultraserver: int  # 1 where the type is not an UltraServer member
    chips_per_instance: int
    neuron_cores_per_chip: int
    hbm_gib_per_chip: int
    efa_network_cards: int
    efa_gbps_per_instance: int
    vcpus: int
    memory_gib: int
    core: NeuronCoreGeneration
    # Root volume of a node, on every orchestrator: the Neuron setup guides ask for a primary EBS
    # volume of at least 512 GB on Trainium instances (compiler cache, framework environments,
    # containers of tens of GiB each).
    root_volume_gib: int = 512
    uncertain: tuple[str, ...] = ()

    @property
    def is_ultraserver(self) -> bool:
        return self.ultraserver_type is not None

    @property
    def neuron_cores_per_instance(self) -> int:
        return self.chips_per_instance * self.neuron_cores_per_chip

    @property
    def logical_cores_per_instance(self) -> int:
        """Logical NeuronCores under the generation's default logical-core size."""
        return self.neuron_cores_per_instance // self.core.default_logical_core_size

    def peak_tflops_per_chip(self, dtype: str) -> float:
        return self.core.peak_tflops_per_core(dtype) * self.neuron_cores_per_chip

    def efa_interfaces(self) -> tuple[EfaInterface, ...]:
        """AWS's layout for multi-card accelerated instances.

        Card 0 carries the primary ENA interface (device 0) and an EFA-only interface (device 1);
        every other card carries one EFA-only interface at device 0. EFA-only interfaces have no IP
        address, so the instance keeps exactly one routable interface.
        """
        layout = [EfaInterface(0, 0, "interface"), EfaInterface(0, 1, "efa-only")]
        layout += [EfaInterface(card, 0, "efa-only") for card in range(1, self.efa_network_cards)]
        return tuple(layout)

    def with_overrides(self, **changes: object) -> "InstanceSpec":
        """A copy with the given fields replaced; only OVERRIDABLE_FIELDS may change."""
        unknown = sorted(set(changes) - set(OVERRIDABLE_FIELDS))
        if unknown:
            raise ValueError(
                f"catalog field(s) {', '.join(unknown)} cannot be overridden; "
                f"overridable: {', '.join(OVERRIDABLE_FIELDS)}"
            )
        return dataclasses.replace(self, **changes)


# Strings AWS has not published for Trainium3 (and EFA card counts derived from per-UltraServer
# bandwidth) are overridable; the physical facts of a generation are not.
OVERRIDABLE_FIELDS = ("instance_type", "ultraserver_type", "efa_network_cards")

# A 48xlarge Trainium server: 16 chips, 16 EFA network cards at 200 Gbps, 192 vCPUs, 2 TiB.
_TRN2 = InstanceSpec(
    key="trn2",
    instance_type="trn2.48xlarge",
    ultraserver_type=None,
    instances_per_ultraserver=1,
    chips_per_instance=16,
    neuron_cores_per_chip=8,
    hbm_gib_per_chip=96,
    efa_network_cards=16,
    efa_gbps_per_instance=3200,
    vcpus=192,
    memory_gib=2048,
    core=NEURONCORE_V3,
)
_TRN3_UNCERTAIN = ("instance_type", "ultraserver_type", "efa_network_cards")

_ENTRIES = (
    _TRN2,
    # The same server as a member of a 4-instance UltraServer.
    dataclasses.replace(
        _TRN2,
        key="trn2u",
        instance_type="trn2u.48xlarge",
        ultraserver_type="u-trn2x64",
        instances_per_ultraserver=4,
    ),
    # Trn3 UltraServer Gen1: 4 servers x 16 chips, 12,800 Gbps EFA per UltraServer.
    dataclasses.replace(
        _TRN2,
        key="trn3-gen1",
        instance_type="trn3.48xlarge",
        ultraserver_type="u-trn3x64",
        instances_per_ultraserver=4,
        hbm_gib_per_chip=144,
        core=NEURONCORE_V4,
        uncertain=_TRN3_UNCERTAIN,
    ),
    # Trn3 UltraServer Gen2: 36 servers x 4 chips, 28,800 Gbps EFA per UltraServer.
    InstanceSpec(
        key="trn3-gen2",
        instance_type="trn3p.16xlarge",
        ultraserver_type="u-trn3x144",
        instances_per_ultraserver=36,
        chips_per_instance=4,
        neuron_cores_per_chip=8,
        hbm_gib_per_chip=144,
        efa_network_cards=4,
        efa_gbps_per_instance=800,
        vcpus=64,
        memory_gib=768,
        core=NEURONCORE_V4,
        uncertain=_TRN3_UNCERTAIN,
    ),
)

CATALOG: Mapping[str, InstanceSpec] = MappingProxyType({entry.key: entry for entry in _ENTRIES})


def find_by_instance_type(
    instance_type: str, catalog: Mapping[str, InstanceSpec] = CATALOG
) -> InstanceSpec | None:
    """The entry whose (possibly overridden) instance type is ``instance_type``."""
    return next((e for e in catalog.values() if e.instance_type == instance_type), None)


def apply_overrides(
    overrides: Mapping[str, Mapping[str, object]], catalog: Mapping[str, InstanceSpec] = CATALOG
) -> Mapping[str, InstanceSpec]:
    """A catalog with per-key field overrides applied, e.g. {"trn3-gen1": {"instance_type": ...}}."""
    unknown = sorted(set(overrides) - set(catalog))
    if unknown:
        raise ValueError(
            f"no catalog entry {', '.join(unknown)}; entries: {', '.join(catalog)}"
        )
    return MappingProxyType(
        {key: spec.with_overrides(**overrides.get(key, {})) for key, spec in catalog.items()}
    )
