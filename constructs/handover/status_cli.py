"""Print the handover's current state for the configured stack in a few lines (`make handover`).

    python -m trn_constructs.handover.status_cli [--stack TrnClusterStack] [--region us-east-2]

It reads the SSM parameter /trn-kit/<stack>/handover that the handover keeps (with your AWS
credentials, in the region of cdk.json unless --region says otherwise). Exit status: 0 ready,
1 not ready, 3 not decided yet (not started, staged, burning in, cluster test), 2 when the state
could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from stacks.app import CLUSTER_STACK_NAME
from trn_constructs.config import ConfigError, parse_config
from trn_constructs.handover import state_parameter_name

HEADLINES = {
    "not-started": "NOT STARTED",
    "staged": "STAGED",
    "burning-in": "BURNING IN",
    "cluster-test": "CLUSTER TEST",
    "ready": "READY",
    "not-ready": "NOT READY",
    "dry-run": "DRY RUN",
}
EXIT = {"ready": 0, "not-ready": 1}
UNDECIDED = 3


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _span(seconds: float) -> str:
    minutes = int(abs(seconds) // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def describe(stack: str, state: dict[str, Any], now: datetime) -> list[str]:
    """The state document as a few lines for people."""
    kind = state.get("state", "unknown")
    updated = f" (as of {state['updated_at']})" if state.get("updated_at") else ""
    lines = [f"{stack}: {HEADLINES.get(kind, kind.upper())}{updated}"]
    if state.get("summary"):
        lines.append(state["summary"])
    start = _parse(state.get("block_start"))
    if kind == "staged" and start:
        ahead = (start - now).total_seconds()
        lines.append(
            f"The block starts in {_span(ahead)}." if ahead > 0 else
            f"The block started {_span(ahead)} ago and no handover has reported yet: see the state machine "
            f"{stack}-handover in the Step Functions console, or run `make handover` again in a minute."
        )  # fmt: skip
    failed = state.get("failed") or []
    if failed:
        lines.append("Failed nodes:")
        lines.extend(f"  {f['instance_id']}: {f.get('reason', '')}".rstrip(": ") for f in failed)
        more = state.get("failed_count", len(failed)) - len(failed)
        if more > 0:
            lines.append(f"  and {more} more: see the verdict")
    if state.get("verdict"):
        lines.append(f"Verdict: {state['verdict']}")
    return lines


def _region_from_cdk_json(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None  # run outside the kit's folder: the AWS configuration's region
    try:
        context = json.loads(text)["context"]
    except (ValueError, KeyError) as error:
        raise ConfigError(f"{path} is not the kit's cdk.json (JSON with a context object): {error}") from None
    return parse_config(context).region


def main(argv: Sequence[str] | None = None, now: datetime | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stack", default=CLUSTER_STACK_NAME, help="the cluster stack (default: %(default)s)")
    parser.add_argument("--region", help="default: cdk.json's region, else your AWS configuration's")
    parser.add_argument("--cdk-json", default="cdk.json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    name = state_parameter_name(args.stack)
    try:
        region = args.region or _region_from_cdk_json(args.cdk_json)
        value = boto3.client("ssm", region_name=region).get_parameter(Name=name)["Parameter"]["Value"]
    except ConfigError as error:
        print(error.report(), file=sys.stderr)
        return 2
    except NoCredentialsError as error:
        print(f"no AWS credentials found: {error}", file=sys.stderr)
        return 2
    except NoRegionError:
        print("no AWS region configured: set region in cdk.json or pass ARGS=--region=<region>", file=sys.stderr)
        return 2
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            print(f"no handover state in {name}: is {args.stack} deployed in this account and region "
                  f"(cdk deploy {args.stack})?", file=sys.stderr)
        else:
            print(f"reading {name} failed: {error}", file=sys.stderr)
        return 2
    except BotoCoreError as error:
        print(f"reading {name} failed: {error}", file=sys.stderr)
        return 2
    try:
        state = json.loads(value)
    except ValueError:
        print(f"{name} does not hold the handover's JSON: {value[:200]}", file=sys.stderr)
        return 2
    print("\n".join(describe(args.stack, state, now or datetime.now(timezone.utc))))
    return EXIT.get(state.get("state"), UNDECIDED)


if __name__ == "__main__":
    sys.exit(main())
