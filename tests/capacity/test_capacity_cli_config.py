"""`make offerings`: the offering search with every option taken from the kit's configuration,
searching exactly what the purchasing custom resource would; and old botocore refused early."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from capacity_fakes import offering, offerings_params

from tests.conftest import context_with
from trn_constructs.capacity_purchase import offerings_cli
from trn_constructs.capacity_purchase.handler.capacity_block import offerings, request

PURCHASE = {
    "instanceType": "trn2.48xlarge",
    "instanceCount": 4,
    "capacityPurchase": True,
    "capacityReservationId": "",
    "capacityPurchaseDurationHours": 168,
    "capacityPurchaseEarliestStart": "2026-12-01T00:00:00Z",
    "capacityPurchaseLatestStart": "2026-12-10T00:00:00Z",
    "capacityPurchaseMaxUpfrontFeeUsd": 50000,
}


@pytest.fixture
def cdk_json(tmp_path):
    def write(**overrides) -> str:
        path = tmp_path / "cdk.json"
        path.write_text(json.dumps({"context": context_with(PURCHASE | overrides)}))
        return str(path)

    return write


def test_searches_the_configured_block_in_the_configured_az(ec2, cdk_json, capsys):
    ec2.offerings(
        offering("cb-here", fee="30000.00"),
        offering("cb-elsewhere", fee="1.00", AvailabilityZone="us-east-2c"),
    )
    assert offerings_cli.main(["--from-cdk-json", cdk_json()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["cb-here"]


def test_command_line_options_override_the_configuration(ec2, cdk_json, capsys):
    ec2.offerings(
        offering("cb-here", fee="30000.00"),
        offering("cb-elsewhere", fee="1.00", AvailabilityZone="us-east-2c"),
    )
    assert offerings_cli.main(["--from-cdk-json", cdk_json(), "--availability-zone="]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["cb-elsewhere", "cb-here"]


def test_ultraserver_entries_search_whole_ultraservers(ec2, cdk_json, capsys):
    ec2.offerings(
        params=offerings_params(
            InstanceType=None, InstanceCount=None, UltraserverType="u-trn2x64", UltraserverCount=2
        )
    )
    path = cdk_json(instanceType="trn2u.48xlarge", instanceCount=8)
    assert offerings_cli.main(["--from-cdk-json", path]) == 0
    assert capsys.readouterr().out.startswith(
        "no offerings match: 2 x u-trn2x64 UltraServer (8 x trn2u.48xlarge), 168 h"
    )


def test_without_capacity_purchase_it_says_what_to_set(cdk_json, capsys):
    path = cdk_json(capacityPurchase=False, capacityReservationId="cr-0123456789abcdef0")
    assert offerings_cli.main(["--from-cdk-json", path]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"configuration error: capacityPurchase is false in {path}: set it")
    assert error.count("\n") == 1


def test_an_invalid_configuration_is_one_line(cdk_json, capsys):
    assert offerings_cli.main(["--from-cdk-json", cdk_json(capacityPurchaseDurationHours=30)]) == 2
    assert capsys.readouterr().err.startswith(
        "configuration error: setting 'capacityPurchaseDurationHours': got 30; allowed:"
    )


def old_botocore_client() -> SimpleNamespace:
    """A client whose model predates UltraServer Capacity Blocks."""
    operation = SimpleNamespace(input_shape=SimpleNamespace(members={"InstanceType": None}))
    model = SimpleNamespace(operation_model=lambda name: operation)
    return SimpleNamespace(meta=SimpleNamespace(service_model=model))


def test_old_botocore_is_refused_before_any_call_for_ultraservers():
    query = request.OfferingQuery.from_properties(
        {
            "InstanceType": "trn2u.48xlarge",
            "InstanceCount": "8",
            "UltraserverType": "u-trn2x64",
            "UltraserverCount": "2",
            "CapacityDurationHours": "168",
            "EarliestStart": "2026-12-01T00:00Z",
            "LatestStart": "2026-12-10T00:00Z",
        }
    )
    with pytest.raises(request.CapacityPurchaseError) as raised:
        offerings.fetch_offerings(old_botocore_client(), query)
    assert "does not know UltraServer Capacity Blocks" in str(raised.value)
    assert str(raised.value).endswith("Nothing was bought")


def test_current_botocore_knows_ultraservers(fake_session):
    offerings.require_ultraserver_support(fake_session.client("ec2"))
