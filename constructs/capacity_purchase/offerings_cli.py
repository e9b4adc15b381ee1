"""Search Capacity Block offerings without deploying anything; prints a table, cheapest first.

    python -m trn_constructs.capacity_purchase.offerings_cli --instance-type trn2.48xlarge \\
        --instance-count 4 --duration-hours 168 --earliest-start 2026-12-01T00:00Z \\
        --latest-start 2026-12-15T00:00Z --region us-east-2

Offerings are filtered with the same rule the purchasing custom resource uses, except the fee cap
(the table is what you would choose the cap from). It only describes; it never buys.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from trn_constructs.capacity_purchase.handler import index

COLUMNS = ("AZ", "start", "end", "hours", "instances", "upfront fee", "currency", "offering id")


def format_table(offerings: Sequence[index.Offering]) -> str:
    rows = [COLUMNS] + [
        (
            o.availability_zone,
            index.format_time(o.start),
            index.format_time(o.end),
            str(o.duration_hours),
            str(o.instance_count),
            index.format_fee(o.upfront_fee),
            o.currency,
            o.offering_id,
        )
        for o in offerings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instance-type", required=True)
    parser.add_argument("--instance-count", required=True, help="instances in the block")
    parser.add_argument("--duration-hours", required=True)
    parser.add_argument("--earliest-start", required=True, help="ISO-8601 UTC")
    parser.add_argument("--latest-start", required=True, help="ISO-8601 UTC")
    parser.add_argument("--region", help="defaults to the AWS configuration's region")
    parser.add_argument("--availability-zone", default="")
    parser.add_argument("--ultraserver-type", default="")
    parser.add_argument("--ultraserver-count", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # The same property names the custom resource receives, so both validate alike.
        query = index.OfferingQuery.from_properties(
            {
                "InstanceType": args.instance_type,
                "InstanceCount": args.instance_count,
                "CapacityDurationHours": args.duration_hours,
                "EarliestStart": args.earliest_start,
                "LatestStart": args.latest_start,
                "AvailabilityZone": args.availability_zone,
                "UltraserverType": args.ultraserver_type,
                "UltraserverCount": args.ultraserver_count,
            }
        )
        query.check_window(index.utcnow())
    except index.CapacityPurchaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        offerings = index.fetch_offerings(index.ec2_client("describe", args.region), query)
    except NoCredentialsError as error:
        print(f"no AWS credentials found: {error}", file=sys.stderr)
        return 2
    except NoRegionError:
        print("no AWS region configured: pass --region", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        print(f"EC2 DescribeCapacityBlockOfferings failed: {error}", file=sys.stderr)
        return 1
    fitting, rejected = index.partition(offerings, query)
    if not fitting:
        print(index.no_match_message(query, len(offerings), rejected))
        return 0
    print(format_table(index.cheapest_first(fitting)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
