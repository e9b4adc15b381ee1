"""The offering search command: a table cheapest first; one line when nothing matches, or when
credentials or region are missing."""

from __future__ import annotations

import boto3
from capacity_fakes import offering, offerings_params

from trn_constructs.capacity_purchase import offerings_cli


def args(duration: str = "168", region: str | None = "us-east-2") -> list[str]:
    query = (
        "--instance-type trn2.48xlarge --instance-count 4 --earliest-start 2026-12-01T00:00Z "
        f"--latest-start 2026-12-10T00:00Z --duration-hours {duration}"
    )
    return query.split() + (["--region", region] if region else [])


def test_table_lists_matching_offerings_cheapest_first(ec2, capsys):
    ec2.offerings(
        offering("cb-dear", fee="30000.00"),
        offering("cb-other-duration", fee="1.00", hours=192),
        offering(
            "cb-cheap", start="2026-12-05T11:30", fee="9000.50", AvailabilityZone="us-east-2c"
        ),
    )
    assert offerings_cli.main(args()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "AZ          start              end                hours  instances  upfront fee  currency"
        "  offering id"
    )
    assert lines[1].split() == (
        "us-east-2c 2026-12-05T11:30Z 2026-12-12T11:30Z 168 4 9000.50 USD cb-cheap".split()
    )
    assert lines[2].split()[-1] == "cb-dear"
    assert len(lines) == 3


def test_no_matching_offering_prints_one_line(ec2, capsys):
    ec2.offerings(params=offerings_params())
    assert offerings_cli.main(args()) == 0
    output = capsys.readouterr().out
    assert output.startswith("no offerings match: 4 x trn2.48xlarge, 168 h")
    assert output.count("\n") == 1


def test_no_credentials_prints_one_line_and_exits_2(monkeypatch, capsys):
    # A fresh default session sees only the fixture's environment, which holds no credentials.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert offerings_cli.main(args()) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no AWS credentials found: Unable to locate credentials\n"


def test_no_region_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert offerings_cli.main(args(region=None)) == 2
    assert capsys.readouterr().err == "no AWS region configured: pass --region\n"


def test_invalid_arguments_are_reported_without_calling_aws(capsys):
    assert offerings_cli.main(args(duration="100")) == 2
    assert "not a Capacity Block duration" in capsys.readouterr().err
