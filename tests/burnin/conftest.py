"""Fixtures for the burn-in tests: a fake node (device layer) and emulated kernels."""

from __future__ import annotations

import pytest

from tests.burnin.fakes import FakeHost, healthy_result, neuron_ls_json
from trn_burnin.catalog import CATALOG
from trn_burnin.emulation import Emulator


@pytest.fixture
def fake_host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def trn2():
    return CATALOG["trn2"]


@pytest.fixture
def kernel_for():
    """kernel_for(core, compute=True) -> (emulator, the real kernel module run on that emulator)."""

    def load(core, compute: bool = True):
        emulator = Emulator(core, compute=compute)
        return emulator, emulator.load_kernel()

    return load


@pytest.fixture
def make_listing():
    return neuron_ls_json


@pytest.fixture
def make_result():
    return healthy_result
