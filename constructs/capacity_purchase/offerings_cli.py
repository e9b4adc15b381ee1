"""Search Capacity Block offerings without deploying anything; prints a table, cheapest first.

    python -m trn_constructs.capacity_purchase.offerings_cli --instance-type trn2.48xlarge \\
        --instance-count 4 --duration-hours 168 --earliest-start 2026-12-01T00:00Z \\
        --latest-start 2026-12-15T00:00Z --region us-east-2

    python -m trn_constructs.capacity_purchase.offerings_cli --from-cdk-json   # `make offerings`

With --from-cdk-json every option comes from the kit's configuration (cdk.json context, validated
like `cdk synth` validates it, capacityPurchase=true required) exactly as the purchasing custom
resource would receive it; options given as well override it, e.g. --availability-zone= for all AZs.

Offerings are filtered with the same rule the purchasing custom resource uses, except the fee cap
(the table is what you would choose the cap from). It only describes; it never buys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from trn_constructs.capacity_purchase.construct import search_properties
from trn_constructs.capacity_purchase.handler.capacity_block import aws, request
from trn_constructs.capacity_purchase.handler.capacity_block.offerings import (
    Offering,
    cheapest_first,
    fetch_offerings,
    no_match_message,
    partition,
)
from trn_constructs.config import ConfigError, parse_config

COLUMNS = ("AZ", "start", "end", "hours", "instances", "upfront fee", "currency", "offering id")


def format_table(offerings: Sequence[Offering]) -> str:
    rows = [COLUMNS] + [
        (
            o.availability_zone,
            request.format_time(o.start),
            request.format_time(o.end),
            str(o.duration_hours),
            str(o.instance_count),
            request.format_fee(o.upfront_fee),
            o.currency,
            o.offering_id,
        )
        for o in offerings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
    return "\n".join(lines)


# The search options by the custom resource property each one stands for.
SEARCH_OPTIONS = {
    "InstanceType": "instance_type",
    "InstanceCount": "instance_count",
    "CapacityDurationHours": "duration_hours",
    "EarliestStart": "earliest_start",
    "LatestStart": "latest_start",
    "AvailabilityZone": "availability_zone",
    "UltraserverType": "ultraserver_type",
    "UltraserverCount": "ultraserver_count",
}


def options_from_cdk_json(path: Path) -> dict[str, str]:
    """Option defaults from the kit's configuration: the purchase's own search properties."""
    config = parse_config(json.loads(path.read_text())["context"])
    if config.capacity_purchase is None:
        raise ConfigError(
            f"capacityPurchase is false in {path}: set it to true with "
            "capacityPurchaseDurationHours, capacityPurchaseEarliestStart, "
            "capacityPurchaseLatestStart and capacityPurchaseMaxUpfrontFeeUsd (nothing is bought "
            "without capacityPurchaseConfirm), or pass the search options instead"
        )
    found = search_properties(
        config.capacity_purchase, config.capacity, config.network.availability_zone
    )
    options = {option: found.get(prop, "") for prop, option in SEARCH_OPTIONS.items()}
    return options | {"region": config.region}


def _add_from_cdk_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-cdk-json",
        metavar="PATH",
        nargs="?",
        const="cdk.json",
        help="take the options from the kit's configuration (default path: cdk.json)",
    )


def _parser(defaults: Mapping[str, str]) -> argparse.ArgumentParser:
    """Options the defaults fill are optional; without defaults the search ones are required."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    _add_from_cdk_json(parser)

    def option(name: str, required: bool = True, **kwargs) -> None:
        dest = name.replace("-", "_")
        if dest in defaults:
            kwargs["default"] = defaults[dest]
        else:
            kwargs["required"] = required
        parser.add_argument(f"--{name}", **kwargs)

    option("instance-type")
    option("instance-count", help="instances in the block")
    option("duration-hours")
    option("earliest-start", help="ISO-8601 UTC")
    option("latest-start", help="ISO-8601 UTC")
    option("region", required=False, help="defaults to the AWS configuration's region")
    for name in ("availability-zone", "ultraserver-type", "ultraserver-count"):
        option(name, required=False, default="")
    return parser


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    _add_from_cdk_json(first)
    known, _ = first.parse_known_args(argv)
    defaults = options_from_cdk_json(Path(known.from_cdk_json)) if known.from_cdk_json else {}
    return _parser(defaults).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _arguments(argv)
    except ConfigError as error:
        print(error.report(), file=sys.stderr)
        return 2
    try:
        # The same property names the custom resource receives, so both validate alike.
        query = request.OfferingQuery.from_properties(
            {prop: getattr(args, option) for prop, option in SEARCH_OPTIONS.items()}
        )
        query.check_window(aws.utcnow())
    except request.CapacityPurchaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        offerings = fetch_offerings(aws.ec2_client("describe", args.region), query)
    except NoCredentialsError as error:
        print(f"no AWS credentials found: {error}", file=sys.stderr)
        return 2
    except NoRegionError:
        print("no AWS region configured: pass --region", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        print(f"EC2 DescribeCapacityBlockOfferings failed: {error}", file=sys.stderr)
        return 1
    except request.CapacityPurchaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    fitting, rejected = partition(offerings, query)
    if not fitting:
        print(no_match_message(query, len(offerings), rejected))
        return 0
    print(format_table(cheapest_first(fitting)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
