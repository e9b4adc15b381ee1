"""The offering selection rule and request validation, without any AWS client."""

from __future__ import annotations

from decimal import Decimal

import pytest
from capacity_fakes import NOW, offering, properties

from trn_constructs.capacity_purchase.handler.capacity_block import offerings, request

QUERY = request.OfferingQuery.from_properties(properties())
CAP = Decimal("50000")


def listed(*items: dict) -> list[offerings.Offering]:
    return [offerings.Offering.from_api(item) for item in items]


def test_earliest_start_wins_then_lowest_fee_then_offering_id():
    candidates = listed(
        offering("cb-late-cheap", start="2026-12-05T11:30", fee="10000.00"),
        offering("cb-early-b", start="2026-12-02T11:30", fee="30000.00"),
        offering("cb-early-dear", start="2026-12-02T11:30", fee="40000.00"),
        offering("cb-early-a", start="2026-12-02T11:30", fee="30000.00"),
    )
    assert offerings.select_offering(candidates, QUERY, CAP).offering_id == "cb-early-a"


def test_offerings_above_the_cap_are_skipped_for_a_later_affordable_one():
    candidates = listed(
        offering("cb-early-dear", start="2026-12-02T11:30", fee="60000.00"),
        offering("cb-later", start="2026-12-04T11:30", fee="45000.00"),
    )
    assert offerings.select_offering(candidates, QUERY, CAP).offering_id == "cb-later"


def test_cheapest_above_cap_names_that_fee_and_the_cap():
    candidates = listed(offering("cb-1", fee="70000.00"), offering("cb-2", fee="65000.50"))
    with pytest.raises(request.CapacityPurchaseError) as failure:
        offerings.select_offering(candidates, QUERY, CAP)
    assert "cb-2 costs 65000.50 USD, above maxUpfrontFeeUsd 50000.00 USD" in str(failure.value)
    assert "nothing was bought" in str(failure.value)


def test_offerings_not_in_usd_are_never_chosen():
    with pytest.raises(request.CapacityPurchaseError, match="priced in EUR, not USD"):
        offerings.select_offering(listed(offering(CurrencyCode="EUR", fee="1.00")), QUERY, CAP)


def test_no_match_names_every_constraint_and_the_rejections():
    near_misses = listed(
        offering("cb-short", hours=167),
        offering("cb-long", hours=169),
        offering("cb-early", start="2026-11-30T11:30"),
        offering("cb-small", InstanceCount=2),
        offering("cb-split", CapacityBlockOfferingSegments=[{}, {}]),
    )
    query = request.OfferingQuery.from_properties(properties(AvailabilityZone="us-east-2b"))
    with pytest.raises(request.CapacityPurchaseError) as failure:
        offerings.select_offering(near_misses, query, CAP)
    assert str(failure.value) == (
        "no offerings match: 4 x trn2.48xlarge, 168 h, start between 2026-12-01T00:00Z and "
        "2026-12-10T00:00Z, AZ us-east-2b, upfront fee <= 50000.00 USD; EC2 returned 5 offering(s) "
        "(rejected: 2 other duration, 1 other instance count, 1 split into several segments, "
        "1 start outside the window); nothing was bought"
    )


def test_only_the_configured_availability_zone_is_chosen():
    query = request.OfferingQuery.from_properties(properties(AvailabilityZone="us-east-2c"))
    candidates = listed(
        offering("cb-b", start="2026-12-02T11:30"),
        offering("cb-c", start="2026-12-03T11:30", AvailabilityZone="us-east-2c"),
    )
    assert offerings.select_offering(candidates, query, CAP).offering_id == "cb-c"


ULTRA = request.OfferingQuery.from_properties(
    properties(InstanceType="trn2u.48xlarge", UltraserverType="u-trn2x64", UltraserverCount="1")
)


def test_ultraserver_offerings_match_on_ultraserver_type_and_count():
    candidates = listed(
        offering(
            "cb-two",
            InstanceType="trn2u.48xlarge",
            InstanceCount=8,
            UltraserverType="u-trn2x64",
            UltraserverCount=2,
        ),
        offering("cb-plain", InstanceType="trn2u.48xlarge"),
        offering(
            "cb-one", InstanceType="trn2u.48xlarge", UltraserverType="u-trn2x64", UltraserverCount=1
        ),
    )
    fitting, rejected = offerings.partition(candidates, ULTRA)
    assert [o.offering_id for o in fitting] == ["cb-one"]
    assert rejected == {"other UltraServer type or count": 2}


def test_ultraserver_offering_without_instance_fields_takes_them_from_the_request():
    bare = offering(UltraserverType="u-trn2x64", UltraserverCount=1)
    del bare["InstanceType"], bare["InstanceCount"]
    (chosen,) = offerings.partition(listed(bare), ULTRA)[0]
    assert (chosen.instance_type, chosen.instance_count) == ("trn2u.48xlarge", 4)


def test_ultraserver_search_sends_ultraserver_type_and_count_not_instance_fields():
    params = ULTRA.api_params()
    assert params["UltraserverType"] == "u-trn2x64" and params["UltraserverCount"] == 1
    assert "InstanceType" not in params and "InstanceCount" not in params


@pytest.mark.parametrize("hours", ["24", "336", "504", "4368"])
def test_valid_durations(hours):
    assert request.OfferingQuery.from_properties(
        properties(CapacityDurationHours=hours)
    ).duration_hours == int(hours)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CapacityDurationHours": "36"}, "not a Capacity Block duration"),
        ({"CapacityDurationHours": "360"}, "not a Capacity Block duration"),
        ({"CapacityDurationHours": "4536"}, "not a Capacity Block duration"),
        ({"InstanceCount": "65"}, "outside 1-64"),
        ({"LatestStart": "2026-11-30T00:00:00Z"}, "is before EarliestStart"),
        ({"EarliestStart": "soon"}, "ISO-8601 UTC"),
        ({"UltraserverCount": "1"}, "UltraserverType is not"),
        ({"MaxUpfrontFeeUsd": "-5"}, "positive amount"),
        ({"MaxUpfrontFeeUsd": "lots"}, "an amount of US dollars"),
        ({"ConfirmPurchase": "yes"}, 'must be "true" or "false"'),
        ({"Tags": [{"Key": "trn-kit:stack-name", "Value": "x"}]}, "reserved"),
        ({"Tags": [{"Key": "aws:cloudformation:x", "Value": "x"}]}, "reserved"),
        ({"InstanceType": ""}, "InstanceType is required"),
    ],
)
def test_invalid_requests_are_rejected_before_any_call(overrides, message):
    with pytest.raises(request.CapacityPurchaseError, match=message):
        request.PurchaseRequest.from_properties(properties(**overrides))


def test_start_window_more_than_eight_weeks_ahead_is_rejected():
    query = request.OfferingQuery.from_properties(properties(LatestStart="2027-01-20T00:00:00Z"))
    with pytest.raises(
        request.CapacityPurchaseError,
        match="LatestStart 2027-01-20T00:00Z is more than 8 weeks ahead",
    ):
        query.check_window(NOW)


def test_start_window_in_the_past_is_rejected():
    query = request.OfferingQuery.from_properties(
        properties(EarliestStart="2026-11-01T00:00:00Z", LatestStart="2026-11-10T00:00:00Z")
    )
    with pytest.raises(request.CapacityPurchaseError, match="start window ended"):
        query.check_window(NOW)


def test_dry_run_physical_id_depends_only_on_purchase_settings():
    base = request.dry_run_physical_id(properties())
    assert base.startswith("dry-run-")
    assert (
        request.dry_run_physical_id(
            properties(Tags=[], ConfirmPurchase="true", ServiceToken="other")
        )
        == base
    )
    assert request.dry_run_physical_id(properties(InstanceCount="8")) != base
