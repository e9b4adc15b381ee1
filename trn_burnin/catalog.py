"""Hardware catalog: the one place that knows what each Trainium instance type is.

Everything that depends on hardware (EFA layout, node counts, burn-in tile sizes and throughput
thresholds) derives from an entry here. The catalog lives in the node-side package because the
burn-in on each node needs it too; the CDK code imports it from here.

Facts come from the AWS Neuron documentation (trn2-arch, trn3-arch, trainium2, trainium3, the NKI
architecture guides and ISA reference) as summarised in shared/reference/trainium-platform-facts.md;
every peak figure names its document. Fields listed in an entry's ``uncertain`` tuple are not
settled by AWS's documents; configuration may override them (``OVERRIDES``, the same camelCase
names as cdk.json's catalogOverrides) without any code change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

MIB = 1024 * 1024

# Data types the burn-in can drive, by the name used in reports and configuration.
BF16 = "bf16"
FP8 = "fp8"
MXFP8 = "mxfp8"
FP32 = "fp32"


# Where the figures below come from: the aws-neuron-sdk documentation (paths in that repository) as
# summarised in shared/reference/trainium-platform-facts.md.
NKI_TRN2_GUIDE = "aws-neuron-sdk nki/guides/architecture/trainium2_arch.rst"
NKI_TRN3_GUIDE = "aws-neuron-sdk nki/guides/architecture/trainium3_arch.rst"
TRN2_CHIP_PAGE = "aws-neuron-sdk about-neuron/arch/neuron-hardware/trainium2.rst"
TRN3_CHIP_PAGE = "aws-neuron-sdk about-neuron/arch/neuron-hardware/trainium3.rst"
NKI_ISA_REFERENCE = "aws-neuron-sdk nki/api/nki/isa/__init__.py (nc_matmul, nc_matmul_mx)"
# Not in the NKI documentation, which names nl.tile_size.sbuf_fmax_bytes but gives no number.
NKI_TARGET_INFO = ("aws-neuron/nkipy nkigen/mlir/include/nkipy/Transforms/HardwareConstants.h, which mirrors "
                   "nki.backends.mlir_tracer.target_info of the nki wheel")
OVERRIDE_SOURCE = "catalogOverrides"


@dataclass(frozen=True)
class PeakFigure:
    """Dense per-NeuronCore peak of one data type and the document it comes from."""

    tflops: float
    source: str
    uncertain: bool = False  # not settled by the documents: overridable, to be measured


@dataclass(frozen=True)
class NeuronCoreGeneration:
    """One NeuronCore generation, the chip that carries it, and the documented limits an NKI kernel must respect."""

    name: str
    chip: str
    platform_target: str  # NEURON_PLATFORM_TARGET_OVERRIDE for the NKI compiler (nki/api/nki/__init__.py)
    # Tensor Engine: a systolic array of pmax rows by stationary_fmax columns.
    pmax: int
    stationary_fmax: int
    moving_fmax: int  # moving free size for FP32 PSUM output (one PSUM bank on v2/v3)
    clock_ghz: float
    sbuf_bytes: int  # raw SBUF of the core
    # What nl.tile_size.sbuf_fmax_bytes reports: SBUF per partition a kernel may use, the raw
    # partition less what the compiler reserves. The kernel's allocations are held to this.
    usable_sbuf_bytes_per_partition: int
    psum_bytes: int
    psum_banks: int
    fp8_double_row: bool  # nc_matmul accepts perf_mode=double_row on FP8 tiles
    has_matmul_mx: bool  # nisa.nc_matmul_mx for MXFP8/MXFP4
    has_ocp_fp8: bool  # nc_matmul accepts float8_e4m3fn (OCP FP8) besides the legacy float8_e4m3
    cores_per_chip: int
    hbm_tbps_per_chip: float  # HBM bandwidth of the chip, TB/s (10^12 bytes per second)
    # The dense peak per NeuronCore of each data type the burn-in drives on this generation,
    # in the order the CLI lists them; every figure names its source document.
    peaks: tuple[tuple[str, PeakFigure], ...]
    sources: str  # documents behind the limits above
    # Physical cores per logical NeuronCore by default (NEURON_LOGICAL_NC_CONFIG); collectives
    # such as nccom-test count ranks in logical cores.
    default_logical_core_size: int

    @property
    def psum_bank_bytes_per_partition(self) -> int:
        return self.psum_bytes // self.psum_banks // self.pmax

    @property
    def supported_dtypes(self) -> tuple[str, ...]:
        return tuple(dtype for dtype, _ in self.peaks)

    def peak(self, dtype: str) -> PeakFigure:
        """The peak every burn-in threshold of ``dtype`` refers to; ValueError if the core lacks it."""
        for name, figure in self.peaks:
            if name == dtype:
                return figure
        raise ValueError(
            f"dtype {dtype!r} is not supported on NeuronCore-{self.name}; "
            f"supported: {', '.join(sorted(self.supported_dtypes))}"
        )

    def peak_tflops_per_core(self, dtype: str) -> float:
        return self.peak(dtype).tflops

    @property
    def hbm_bytes_per_second_per_core(self) -> float:
        """The chip's HBM bandwidth shared evenly by its cores. The documents give only the chip's
        figure; the even split is our derivation (all cores stream at once during the burn-in)."""
        return self.hbm_tbps_per_chip * 1e12 / self.cores_per_chip

    def ridge_flop_per_byte(self, dtype: str) -> float:
        """Roofline ridge of ``dtype``: the FLOP per HBM byte above which a GEMM on one core is
        bound by the Tensor Engine rather than by its share of HBM bandwidth."""
        return self.peak_tflops_per_core(dtype) * 1e12 / self.hbm_bytes_per_second_per_core

    def with_peak(self, dtype: str, tflops: float, source: str) -> "NeuronCoreGeneration":
        self.peak(dtype)  # the dtype must exist already
        peaks = tuple((name, PeakFigure(tflops, source) if name == dtype else figure)
                      for name, figure in self.peaks)
        return dataclasses.replace(self, peaks=peaks)


def _tensor_engine_tflops(pmax: int, columns: int, clock_ghz: float) -> float:
    """rows x columns x 2 FLOP (multiply and add) per clock, in TFLOPS."""
    return pmax * columns * 2 * clock_ghz / 1000.0


# 128 x 128 PE array at 2.4 GHz on both generations: 78.6 TFLOPS BF16 (the guides round it to 79).
_BF16_TFLOPS = _tensor_engine_tflops(128, 128, 2.4)

NEURONCORE_V3 = NeuronCoreGeneration(
    name="v3",
    chip="Trainium2",
    platform_target="trn2",
    pmax=128,
    stationary_fmax=128,
    moving_fmax=512,
    clock_ghz=2.4,
    sbuf_bytes=28 * MIB,  # 128 partitions x 224 KiB
    usable_sbuf_bytes_per_partition=212984,  # 224 KiB - 16392 B (NKI_TARGET_INFO)
    psum_bytes=2 * MIB,
    psum_banks=8,
    fp8_double_row=True,
    has_matmul_mx=False,
    has_ocp_fp8=False,
    cores_per_chip=8,
    hbm_tbps_per_chip=2.9,  # TRN2_CHIP_PAGE (the NKI guide rounds it to 3 TB/s)
    peaks=(
        (BF16, PeakFigure(_BF16_TFLOPS, f"{NKI_TRN2_GUIDE}: 128x128 Tensor Engine at 2.4 GHz, 79 TFLOPS "
                                        "BF16/FP16/TF32 per NeuronCore")),
        (FP8, PeakFigure(2 * _BF16_TFLOPS, f"{NKI_TRN2_GUIDE}: 158 TFLOPS FP8 per NeuronCore with "
                                           "perf_mode=double_row")),
        (FP32, PeakFigure(20.0, f"{NKI_TRN2_GUIDE}: 20 TFLOPS FP32 per NeuronCore")),
    ),
    sources=f"{NKI_TRN2_GUIDE} (SBUF 28 MiB, PSUM 2 MiB in 8 banks, Tensor Engine); {TRN2_CHIP_PAGE} "
            f"(8 NeuronCores, 96 GiB HBM at 2.9 TB/s per chip); {NKI_ISA_REFERENCE}; usable SBUF: "
            f"{NKI_TARGET_INFO}",
    default_logical_core_size=2,
)

NEURONCORE_V4 = NeuronCoreGeneration(
    name="v4",
    chip="Trainium3",
    platform_target="trn3",
    pmax=128,
    stationary_fmax=128,
    moving_fmax=4096,
    clock_ghz=2.4,
    sbuf_bytes=32 * MIB,  # 128 partitions x 256 KiB
    usable_sbuf_bytes_per_partition=245752,  # 256 KiB - 16392 B (NKI_TARGET_INFO)
    psum_bytes=2 * MIB,
    psum_banks=8,
    fp8_double_row=True,  # the nc_matmul reference documents double_row on v3 and v4
    has_matmul_mx=True,
    has_ocp_fp8=True,
    cores_per_chip=8,
    hbm_tbps_per_chip=4.9,  # TRN3_CHIP_PAGE (the NKI guide says 4.7 TB/s)
    peaks=(
        (BF16, PeakFigure(_BF16_TFLOPS, f"{NKI_TRN3_GUIDE}: 79 TFLOPS BF16/FP16/TF32 per NeuronCore")),
        # The nc_matmul reference says double_row doubles FP8 on v3 and v4; the Trainium3 guide's
        # datapath table reads 2x128 for non-MXFP8 input (the BF16 rate) and the chip page lists
        # 2517 FP8 TFLOPS per chip (the MXFP8 figure). Override fp8PeakTflopsPerCore once measured.
        (FP8, PeakFigure(2 * _BF16_TFLOPS, f"{NKI_ISA_REFERENCE}: double_row doubles FP8 throughput on "
                                           f"NeuronCore-v3 and -v4; {NKI_TRN3_GUIDE} and {TRN3_CHIP_PAGE} "
                                           "disagree (UNCERTAIN)", uncertain=True)),
        (FP32, PeakFigure(20.0, f"{NKI_TRN3_GUIDE}: 20 TFLOPS FP32 per NeuronCore")),
        (MXFP8, PeakFigure(4 * _BF16_TFLOPS, f"{NKI_TRN3_GUIDE}: 315 TFLOPS MXFP8/MXFP4 per NeuronCore with "
                                             "nc_matmul_mx, 4x a BF16 matmul")),
    ),
    sources=f"{NKI_TRN3_GUIDE} (SBUF 32 MiB, PSUM 2 MiB in 8 banks, Tensor Engine); {TRN3_CHIP_PAGE} "
            f"(8 NeuronCores, 144 GiB HBM at 4.9 TB/s per chip); {NKI_ISA_REFERENCE}; usable SBUF: "
            f"{NKI_TARGET_INFO}",
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
    def neuron_cores_per_chip(self) -> int:
        return self.core.cores_per_chip

    @property
    def neuron_cores_per_instance(self) -> int:
        return self.chips_per_instance * self.neuron_cores_per_chip

    @property
    def logical_cores_per_instance(self) -> int:
        """Logical NeuronCores under the generation's default logical-core size."""
        return self.neuron_cores_per_instance // self.core.default_logical_core_size

    @property
    def fp8_peak_tflops_per_core(self) -> float:
        return self.core.peak_tflops_per_core(FP8)

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

    def overridable_values(self) -> dict[str, object]:
        """Every overridable field's current value, under its configuration (camelCase) name."""
        return {name: getattr(self, field) for name, field in OVERRIDES.items()}

    def with_overrides(self, **changes: object) -> "InstanceSpec":
        """A copy with the given fields (snake_case names of OVERRIDES) replaced."""
        for field, value in changes.items():
            check = _OVERRIDE_CHECKS.get(field)
            if check is None:
                raise ValueError(
                    f"catalog field(s) {field} cannot be overridden; overridable: {', '.join(OVERRIDES)}"
                )
            if not check.accepts(value):
                raise CatalogOverrideError(self.key, _CAMEL[field], value, check.allowed)
        spec_changes = {k: v for k, v in changes.items() if k != "fp8_peak_tflops_per_core"}
        if "fp8_peak_tflops_per_core" in changes:
            measured = float(changes["fp8_peak_tflops_per_core"])  # type: ignore[arg-type]
            spec_changes["core"] = self.core.with_peak(FP8, measured, OVERRIDE_SOURCE)
        return dataclasses.replace(self, **spec_changes)


class CatalogOverrideError(ValueError):
    """An override value of the wrong kind; names the entry, the field and what it accepts."""

    def __init__(self, key: str, field: str, value: object, allowed: str):
        super().__init__(f"{key}.{field}: got {value!r}; allowed: {allowed}")
        self.key, self.field, self.value, self.allowed = key, field, value, allowed


@dataclass(frozen=True)
class _Check:
    accepts: Callable[[object], bool]
    allowed: str


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What configuration may change, by its cdk.json (camelCase) name -> InstanceSpec field: strings AWS
# has not published for Trainium3, EFA card counts derived from per-UltraServer bandwidth, and the
# one peak the documents do not settle. The physical facts of a generation are not overridable.
OVERRIDES = {
    "instanceType": "instance_type",
    "ultraserverType": "ultraserver_type",
    "efaNetworkCards": "efa_network_cards",
    "fp8PeakTflopsPerCore": "fp8_peak_tflops_per_core",
}
_CAMEL = {field: name for name, field in OVERRIDES.items()}
_OVERRIDE_CHECKS = {
    "instance_type": _Check(lambda v: isinstance(v, str) and bool(v.strip()), "an instance type string"),
    "ultraserver_type": _Check(lambda v: v is None or (isinstance(v, str) and bool(v.strip())),
                               "an UltraServer type string, or null for instance-level blocks"),
    "efa_network_cards": _Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 32,
                                "a whole number 1-32"),
    "fp8_peak_tflops_per_core": _Check(lambda v: _is_number(v) and 0 < v <= 1000,
                                       "a number of TFLOPS greater than 0 and at most 1000"),
}

# A 48xlarge Trainium server: 16 chips, 16 EFA network cards at 200 Gbps, 192 vCPUs, 2 TiB.
_TRN2 = InstanceSpec(
    key="trn2",
    instance_type="trn2.48xlarge",
    ultraserver_type=None,
    instances_per_ultraserver=1,
    chips_per_instance=16,
    hbm_gib_per_chip=96,
    efa_network_cards=16,
    efa_gbps_per_instance=3200,
    vcpus=192,
    memory_gib=2048,
    core=NEURONCORE_V3,
)
_TRN3_UNCERTAIN = ("instance_type", "ultraserver_type", "efa_network_cards", "fp8_peak_tflops_per_core")

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
    """A catalog with per-entry overrides applied, e.g. {"trn3-gen1": {"instanceType": ...}}.

    Field names are those of cdk.json (OVERRIDES keys); the snake_case field names are accepted too.
    ValueError names an unknown entry or field; CatalogOverrideError a value of the wrong kind.
    """
    unknown = sorted(set(overrides) - set(catalog))
    if unknown:
        raise ValueError(
            f"no catalog entry {', '.join(unknown)}; entries: {', '.join(catalog)}"
        )
    return MappingProxyType({
        key: spec.with_overrides(**{OVERRIDES.get(name, name): value
                                    for name, value in overrides.get(key, {}).items()})
        for key, spec in catalog.items()
    })
