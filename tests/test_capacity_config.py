"""Capacity purchase, end notice and alert settings: parsing and every validation message.

The clock is injected: "8 weeks ahead" is measured from NOW, never from the machine's time.
"""

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from tests.conftest import VARIANTS, context_with
from trn_constructs.config import ConfigError, parse_config

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
PURCHASE = VARIANTS["purchase-dry-run"]


def parse(**overrides):
    return parse_config(context_with(overrides), now=NOW)


def buying(**overrides):
    """A configuration with capacityPurchase and its required settings, plus ``overrides``."""
    return parse(**PURCHASE | overrides)


def errors_of(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        buying(**overrides)
    return list(raised.value.lines)


def error_of(**overrides) -> str:
    """The one line of a purchase with one mistake."""
    (line,) = errors_of(**overrides)
    return line


def test_defaults_buy_nothing_and_send_no_mail():
    config = parse()
    assert config.capacity_purchase is None
    assert config.capacity.reservation_id == "cr-0123456789abcdef0"
    assert config.capacity_end_notice_hours == 12
    assert config.alert_email is None


def test_purchase_is_a_dry_run_unless_confirmed():
    purchase = buying().capacity_purchase
    assert purchase.confirm is False
    assert purchase.duration_hours == 168
    assert purchase.earliest_start == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert purchase.latest_start == datetime(2026, 12, 15, tzinfo=timezone.utc)
    assert purchase.max_upfront_fee_usd == Decimal("250000")
    assert buying(capacityPurchaseConfirm=True).capacity_purchase.confirm is True


def test_command_line_strings_are_coerced():
    config = buying(
        capacityPurchase="true",
        capacityPurchaseConfirm="true",
        capacityPurchaseDurationHours="504",
        capacityPurchaseEarliestStart="2026-12-01T11:30+00:00",
        capacityPurchaseMaxUpfrontFeeUsd="99999.50",
        capacityEndNoticeHours="48",
        alertEmail="ml-team@example.com",
    )
    purchase = config.capacity_purchase
    assert (purchase.confirm, purchase.duration_hours) == (True, 504)
    assert purchase.earliest_start == datetime(2026, 12, 1, 11, 30, tzinfo=timezone.utc)
    assert purchase.max_upfront_fee_usd == Decimal("99999.50")
    assert config.capacity_end_notice_hours == 48
    assert config.alert_email == "ml-team@example.com"


@pytest.mark.parametrize("hours", [24, 96, 336, 504, 4368])
def test_capacity_block_durations_are_accepted(hours):
    assert buying(capacityPurchaseDurationHours=hours).capacity_purchase


def test_a_window_in_the_past_still_synthesizes():
    # Once the block is bought its window lies in the past; the stack must keep deploying.
    purchase = buying(
        capacityPurchaseEarliestStart="2026-01-05T11:30:00Z",
        capacityPurchaseLatestStart="2026-01-06T11:30:00Z",
    ).capacity_purchase
    assert purchase.latest_start < NOW


def test_settings_are_ignored_without_capacity_purchase():
    # Switching back to capacityReservationId keeps the purchase settings harmlessly in place.
    config = buying(
        capacityPurchase=False,
        capacityReservationId="cr-0123456789abcdef0",
        capacityPurchaseDurationHours=100,
    )
    assert config.capacity_purchase is None


DURATIONS = (
    "1-14 days in whole days (24-336, multiples of 24), or 7-day steps up to 182 days "
    "(multiples of 168 up to 4368)"
)
UTC_TIME = "an ISO-8601 UTC time such as 2026-12-01T11:30:00Z"
FEE = (
    "a positive amount of US dollars such as 25000, the most the kit may pay for the block "
    "(required with capacityPurchase=true)"
)
BLOCK_LIMIT = (
    "with capacityPurchase=true: EC2 sells at most 64 instances per Capacity Block (and 256 "
    "across an account's blocks)"
)
AHEAD = (
    "a time at most 8 weeks ahead, i.e. before 2027-01-15T09:00Z (EC2 sells Capacity Blocks "
    "starting at most 8 weeks ahead)"
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"capacityReservationId": "cr-0123456789abcdef0"},
            "setting 'capacityReservationId': got 'cr-0123456789abcdef0'; allowed: empty with "
            "capacityPurchase=true (the kit buys the block; holding one and buying one exclude "
            "each other)",
        ),
        (
            {"capacityPurchase": False},
            "setting 'capacityReservationId': got ''; allowed: a Capacity Block reservation id: "
            "'cr-' followed by 17 lowercase hex digits (or capacityPurchase=true to have the kit "
            "buy a block)",
        ),
        (
            {"capacityPurchase": False, "capacityReservationId": "cr-0123456789abcdef0",
             "capacityPurchaseConfirm": True},
            "setting 'capacityPurchaseConfirm': got True; allowed: false unless capacityPurchase "
            "is true",
        ),
        (
            {"capacityPurchase": "yes"},
            "setting 'capacityPurchase': got 'yes'; allowed: true or false",
        ),
        (
            {"capacityPurchaseDurationHours": 0},
            f"setting 'capacityPurchaseDurationHours': got 0; allowed: {DURATIONS}",
        ),
        (
            {"capacityPurchaseDurationHours": 100},
            f"setting 'capacityPurchaseDurationHours': got 100; allowed: {DURATIONS}",
        ),
        (
            {"capacityPurchaseDurationHours": 360},  # 15 days: past 14, not whole weeks
            f"setting 'capacityPurchaseDurationHours': got 360; allowed: {DURATIONS}",
        ),
        (
            {"capacityPurchaseDurationHours": 4536},  # 27 weeks
            f"setting 'capacityPurchaseDurationHours': got 4536; allowed: {DURATIONS}",
        ),
        (
            {"capacityPurchaseEarliestStart": ""},
            f"setting 'capacityPurchaseEarliestStart': got ''; allowed: {UTC_TIME}",
        ),
        (
            {"capacityPurchaseEarliestStart": "2026-12-01T00:00:00"},  # no UTC designator
            f"setting 'capacityPurchaseEarliestStart': got '2026-12-01T00:00:00'; allowed: "
            f"{UTC_TIME}",
        ),
        (
            {"capacityPurchaseLatestStart": "2026-12-15T00:00:00+01:00"},
            f"setting 'capacityPurchaseLatestStart': got '2026-12-15T00:00:00+01:00'; allowed: "
            f"{UTC_TIME}",
        ),
        (
            {"capacityPurchaseLatestStart": "2026-11-31T00:00Z"},
            f"setting 'capacityPurchaseLatestStart': got '2026-11-31T00:00Z'; allowed: {UTC_TIME}",
        ),
        (
            {"capacityPurchaseLatestStart": "2026-11-30T00:00:00Z"},
            "setting 'capacityPurchaseLatestStart': got '2026-11-30T00:00:00Z'; allowed: a time "
            "not before capacityPurchaseEarliestStart (2026-12-01T00:00Z)",
        ),
        (
            {"capacityPurchaseLatestStart": "2027-01-16T00:00:00Z"},
            f"setting 'capacityPurchaseLatestStart': got '2027-01-16T00:00:00Z'; allowed: {AHEAD}",
        ),
        (
            {"capacityPurchaseMaxUpfrontFeeUsd": 0},
            f"setting 'capacityPurchaseMaxUpfrontFeeUsd': got 0; allowed: {FEE}",
        ),
        (
            {"capacityPurchaseMaxUpfrontFeeUsd": -5},
            f"setting 'capacityPurchaseMaxUpfrontFeeUsd': got -5; allowed: {FEE}",
        ),
        (
            {"capacityPurchaseMaxUpfrontFeeUsd": "lots"},
            f"setting 'capacityPurchaseMaxUpfrontFeeUsd': got 'lots'; allowed: {FEE}",
        ),
        (
            {"capacityPurchaseMaxUpfrontFeeUsd": True},
            f"setting 'capacityPurchaseMaxUpfrontFeeUsd': got True; allowed: {FEE}",
        ),
        (
            {"instanceType": "trn2.48xlarge", "instanceCount": 65},
            f"setting 'instanceCount': got 65; allowed: at most 64 instances {BLOCK_LIMIT}",
        ),
        (
            {"instanceType": "trn2u.48xlarge", "instanceCount": 68},
            "setting 'instanceCount': got 68; allowed: at most 64 instances (16 x u-trn2x64) "
            + BLOCK_LIMIT,
        ),
        (
            {"instanceType": "trn3p.16xlarge", "instanceCount": 72},
            "setting 'instanceCount': got 72; allowed: at most 36 instances (1 x u-trn3x144) "
            + BLOCK_LIMIT,
        ),
        (
            {"capacityEndNoticeHours": 0},
            "setting 'capacityEndNoticeHours': got 0; allowed: a whole number 1-168",
        ),
        (
            {"capacityEndNoticeHours": 169},
            "setting 'capacityEndNoticeHours': got 169; allowed: a whole number 1-168",
        ),
        (
            {"alertEmail": "ml-team"},
            "setting 'alertEmail': got 'ml-team'; allowed: empty (no e-mail) or one e-mail "
            "address such as ml-team@example.com",
        ),
    ],
)
def test_invalid_values_name_setting_and_allowed_values(overrides, message):
    assert error_of(**overrides) == message


def test_a_window_beyond_reach_names_both_starts():
    assert errors_of(
        capacityPurchaseEarliestStart="2027-01-15T09:01:00Z",
        capacityPurchaseLatestStart="2027-01-20T00:00:00Z",
    ) == [
        f"setting 'capacityPurchaseEarliestStart': got '2027-01-15T09:01:00Z'; allowed: {AHEAD}",
        f"setting 'capacityPurchaseLatestStart': got '2027-01-20T00:00:00Z'; allowed: {AHEAD}",
    ]


def test_a_bought_block_leaves_room_for_the_kits_own_tags():
    assert error_of(tags={f"key{i}": "v" for i in range(46)}, orchestrator="eks") == (
        "setting 'tags': got 46; allowed: at most 45 tags (a bought block carries 5 of the kit's own)"
    )


def test_a_purchase_setting_of_the_wrong_form_is_an_error_without_capacity_purchase_too():
    with pytest.raises(ConfigError) as raised:
        parse(capacityPurchaseEarliestStart="tomorrow", capacityPurchaseMaxUpfrontFeeUsd=-1)
    assert raised.value.lines == (
        f"setting 'capacityPurchaseEarliestStart': got 'tomorrow'; allowed: {UTC_TIME}",
        f"setting 'capacityPurchaseMaxUpfrontFeeUsd': got -1; allowed: {FEE}",
    )
