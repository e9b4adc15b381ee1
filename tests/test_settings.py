"""The declared settings table: cdk.json and the README's configuration table agree with it, its
defaults are the configuration the kit ships, and keys that are no setting are told apart."""

import pytest

from tests.conftest import CDK_CONTEXT, REPO
from trn_constructs.config import parse_config
from trn_constructs.settings import README_END, README_START, SETTINGS, is_cdk_key, markdown_table, meant, with_table

KIT_CONTEXT = {key: value for key, value in CDK_CONTEXT.items() if not is_cdk_key(key)}


def test_cdk_json_carries_every_setting_and_nothing_else():
    assert list(KIT_CONTEXT) == list(SETTINGS)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_cdk_json_ships_the_tables_default(key):
    assert KIT_CONTEXT[key] == SETTINGS[key].default


def test_the_tables_defaults_are_the_configuration_cdk_json_ships():
    assert parse_config({}) == parse_config(CDK_CONTEXT)


def test_the_readme_table_is_the_settings_table():
    readme = (REPO / "README.md").read_text()
    assert f"{README_START}\n\n{markdown_table()}\n\n{README_END}" in readme, (
        "README.md's settings table differs from constructs/settings.py; regenerate it with "
        "`.venv/bin/python -m trn_constructs.settings README.md`"
    )
    assert with_table(readme) == readme


def test_the_readme_table_marks_the_examples_to_replace():
    examples = [key for key, setting in SETTINGS.items() if setting.example]
    assert examples == ["account", "region", "capacityReservationId", "availabilityZone"]
    assert "| `account` | `123456789012` (example: use yours) | a 12-digit AWS account id |" in markdown_table()


def test_with_table_needs_the_markers():
    with pytest.raises(ValueError) as raised:
        with_table("# a README without the table\n")
    assert str(raised.value) == f"the README has no settings-table markers: {README_START} ... {README_END}"


def test_every_setting_says_in_one_line_what_it_does_and_allows():
    for setting in SETTINGS.values():
        assert setting.description and "\n" not in setting.description, setting.key
        assert setting.allowed_text and "\n" not in setting.allowed_text, setting.key


@pytest.mark.parametrize(
    "key",
    [
        "@aws-cdk/core:newStyleStackSynthesis",  # a feature flag
        "aws:cdk:enable-path-metadata",  # set by the CDK CLI for each synth
        "availability-zones:account=123456789012:region=us-east-2",  # a lookup's cached result
        "acknowledged-issue-numbers",  # written by `cdk acknowledge`
        "cli-telemetry",  # written by `cdk cli-telemetry`
    ],
)
def test_keys_of_the_cdk_are_not_settings(key):
    assert is_cdk_key(key)


@pytest.mark.parametrize(
    ("key", "setting"),
    [
        ("InstanceType", "instanceType"),
        ("instance_type", "instanceType"),
        ("instance-type", "instanceType"),
        ("INSTANCE_TYPE", "instanceType"),
        ("instanceTyep", "instanceType"),
        ("burnin_duration_seconds", "burnInDurationSeconds"),
        ("availabilityZones", "availabilityZone"),
        ("nodes", None),
    ],
)
def test_an_unknown_key_is_matched_to_the_setting_it_likely_means(key, setting):
    assert meant(key) == setting
