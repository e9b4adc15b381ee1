"""The hardware catalog's burn-in figures: documented peaks with their sources, ridges, overrides."""

import pytest

from trn_burnin.catalog import (
    BF16, CATALOG, FP8, FP32, MXFP8, NEURONCORE_V3, NEURONCORE_V4, OVERRIDES, CatalogOverrideError, apply_overrides,
)

GENERATIONS = (NEURONCORE_V3, NEURONCORE_V4)


@pytest.mark.parametrize("core", GENERATIONS, ids=lambda c: c.name)
def test_every_peak_names_its_source_document(core):
    for dtype in core.supported_dtypes:
        assert "aws-neuron-sdk " in core.peak(dtype).source and ".rst" in core.peak(dtype).source


@pytest.mark.parametrize("core", GENERATIONS, ids=lambda c: c.name)
def test_peaks_are_the_per_core_figures_of_the_nki_guides(core):
    # BF16 is the Tensor Engine itself (the guides round 78.6 to 79); FP32 is the guides' own
    # per-core 20 TFLOPS, not a per-chip figure divided by 8 (181 / 8 = 22.6).
    assert core.peak_tflops_per_core(BF16) == pytest.approx(core.pmax * core.stationary_fmax * 2 * core.clock_ghz / 1e3)
    assert core.peak_tflops_per_core(FP32) == 20.0
    assert core.peak_tflops_per_core(FP8) == pytest.approx(2 * core.peak_tflops_per_core(BF16))
    assert "20 TFLOPS FP32 per NeuronCore" in core.peak(FP32).source


def test_only_the_v4_fp8_rate_is_uncertain_and_it_is_overridable():
    uncertain = [(core.name, dtype) for core in GENERATIONS for dtype in core.supported_dtypes
                 if core.peak(dtype).uncertain]
    assert uncertain == [("v4", FP8)]
    for spec in CATALOG.values():
        assert ("fp8_peak_tflops_per_core" in spec.uncertain) == (spec.core is NEURONCORE_V4)
    assert set(spec.uncertain) <= set(OVERRIDES.values())
    assert NEURONCORE_V4.peak_tflops_per_core(MXFP8) == pytest.approx(4 * NEURONCORE_V4.peak_tflops_per_core(BF16))


def test_each_dtype_has_its_own_ridge_from_the_documented_hbm_bandwidth():
    # 78.6 TFLOPS against 2.9 TB/s shared by 8 cores; MXFP8 on v4: 314.6 against 4.9 TB/s / 8.
    assert NEURONCORE_V3.ridge_flop_per_byte(BF16) == pytest.approx(78.64e12 / (2.9e12 / 8), rel=1e-3)
    assert NEURONCORE_V4.ridge_flop_per_byte(MXFP8) == pytest.approx(513.6, abs=0.1)
    assert NEURONCORE_V3.ridge_flop_per_byte(FP8) == pytest.approx(2 * NEURONCORE_V3.ridge_flop_per_byte(BF16))


def test_overrides_take_cdk_json_names_and_the_old_snake_case():
    camel = apply_overrides({"trn3-gen1": {"instanceType": "trn3u.48xlarge", "fp8PeakTflopsPerCore": 78.6}})
    snake = apply_overrides({"trn3-gen1": {"instance_type": "trn3u.48xlarge", "fp8_peak_tflops_per_core": 78.6}})
    assert camel == snake
    spec = camel["trn3-gen1"]
    assert spec.instance_type == "trn3u.48xlarge" and spec.core.peak(FP8).source == "catalogOverrides"
    assert spec.overridable_values() == {"instanceType": "trn3u.48xlarge", "ultraserverType": "u-trn3x64",
                                         "efaNetworkCards": 16, "fp8PeakTflopsPerCore": 78.6}
    assert CATALOG["trn3-gen2"].core.peak(FP8).uncertain  # other entries keep the catalog's figure


@pytest.mark.parametrize("fields, message", [
    ({"efaNetworkCards": 0}, "trn2.efaNetworkCards: got 0; allowed: a whole number 1-32"),
    ({"fp8PeakTflopsPerCore": True}, "trn2.fp8PeakTflopsPerCore: got True; allowed: a number of TFLOPS"),
    ({"instanceType": ""}, "trn2.instanceType: got ''; allowed: an instance type string"),
])
def test_override_values_of_the_wrong_kind_are_named(fields, message):
    with pytest.raises(CatalogOverrideError, match=message.replace(".", r"\.")):
        apply_overrides({"trn2": fields})


def test_unknown_override_fields_and_entries_are_refused():
    with pytest.raises(ValueError, match="chips cannot be overridden; overridable: instanceType"):
        apply_overrides({"trn2": {"chips": 32}})
    with pytest.raises(ValueError, match="no catalog entry trn4"):
        apply_overrides({"trn4": {}})
