"""An in-memory EC2 for the Capacity Block calls, with the listing lag of the real one.

It answers real botocore clients at their ``before-call`` event, as botocore's Stubber does, but
from state instead of a script: botocore has checked every request against its EC2 model before
it arrives, and every answer is checked against the operation's output shape here. A block bought
is listed by DescribeCapacityReservations (by id or by tags) only once ``lag`` has passed on the
shared clock and ``lag_calls`` describe calls have been answered since the purchase. Offerings
stay listed after a purchase, the worst case for a retry that searches again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from capacity_fakes import Clock, check_answer

# Outcomes of one PurchaseCapacityBlock call besides an error code (rejected, not executed):
BOUGHT = "bought"
LOST = "lost"  # executed, but the answer is lost: the client sees a read timeout
EC2_URL = "https://ec2.us-east-2.amazonaws.com/"


@dataclass
class _Block:
    item: dict[str, Any]
    bought_at: datetime
    listed_from_call: int


@dataclass
class FakeEC2:
    clock: Clock
    make_client: Callable[[str, str | None], Any]
    offerings: list[dict[str, Any]]
    lag: timedelta = timedelta(0)
    lag_calls: int = 0
    state_after_purchase: str = "payment-pending"
    # One outcome per purchase call, in order; BOUGHT once they run out.
    outcomes: list[str] = field(default_factory=list)
    # Run once, inside the next DescribeCapacityBlockOfferings call (e.g. a concurrent attempt).
    during_offerings: Callable[[], Any] | None = None
    # The parameters of every PurchaseCapacityBlock call that reached EC2, executed or not.
    purchases: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    # Every call that reached EC2, by operation name.
    calls: list[str] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, purpose: str, region: str | None = None) -> Any:
        """The handler's real client for ``purpose``, answered here (one per purpose: clients
        are slow to make, and hold nothing an environment could keep)."""
        if purpose not in self._clients:
            client = self.make_client(purpose, region)
            client.meta.events.register("before-parameter-build.ec2.*", self._remember_params)
            client.meta.events.register("before-call.ec2.*", self._answer)
            self._clients[purpose] = client
        return self._clients[purpose]

    def count(self, operation: str) -> int:
        return self.calls.count(operation)

    def bought(self) -> list[str]:
        """The ids of every block bought, listed or not."""
        return [block.item["CapacityReservationId"] for block in self.blocks]

    def set_state(self, reservation_id: str, state: str) -> None:
        (block,) = [b for b in self.blocks if b.item["CapacityReservationId"] == reservation_id]
        block.item["State"] = state

    @staticmethod
    def _remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["fake_ec2_params"] = copy.deepcopy(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict]:
        params = context["fake_ec2_params"]
        self.calls.append(model.name)
        try:
            body = getattr(self, f"_{model.name}")(**params)
        except _Rejected as rejected:
            error = {"Code": rejected.code, "Message": rejected.code}
            return AWSResponse(EC2_URL, rejected.status, {}, None), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": rejected.status},
            }
        check_answer(model, body)
        return AWSResponse(EC2_URL, 200, {}, None), body

    # --- operations -------------------------------------------------------------------------

    def _DescribeCapacityBlockOfferings(self, **_: Any) -> dict[str, Any]:
        interleaved, self.during_offerings = self.during_offerings, None
        if interleaved:
            interleaved()
        return {"CapacityBlockOfferings": copy.deepcopy(self.offerings)}

    def _DescribeCapacityReservations(
        self, CapacityReservationIds: list[str] | None = None, Filters: list | None = None
    ) -> dict[str, Any]:
        listed = [block.item for block in self.blocks if self._listed(block)]
        if CapacityReservationIds:
            known = {item["CapacityReservationId"]: item for item in listed}
            if not set(CapacityReservationIds) <= set(known):
                raise _Rejected("InvalidCapacityReservationId.NotFound", 400)
            found = [known[rid] for rid in CapacityReservationIds]
        else:
            found = [item for item in listed if _matches(item, Filters or [])]
        return {"CapacityReservations": copy.deepcopy(found)}

    def _PurchaseCapacityBlock(
        self, CapacityBlockOfferingId: str, InstancePlatform: str, TagSpecifications: list
    ) -> dict[str, Any]:
        self.purchases.append(
            {
                "CapacityBlockOfferingId": CapacityBlockOfferingId,
                "InstancePlatform": InstancePlatform,
                "TagSpecifications": TagSpecifications,
            }
        )
        outcome = self.outcomes.pop(0) if self.outcomes else BOUGHT
        if outcome not in (BOUGHT, LOST):
            raise _Rejected(outcome, 503 if outcome == "RequestLimitExceeded" else 400)
        (offering,) = [
            o for o in self.offerings if o["CapacityBlockOfferingId"] == CapacityBlockOfferingId
        ]
        item = {
            "CapacityReservationId": f"cr-{len(self.blocks) + 1:017x}",
            "InstanceType": offering["InstanceType"],
            "InstancePlatform": InstancePlatform,
            "AvailabilityZone": offering["AvailabilityZone"],
            "TotalInstanceCount": offering["InstanceCount"],
            "State": self.state_after_purchase,
            "StartDate": offering["StartDate"],
            "EndDate": offering["EndDate"],
            "ReservationType": "capacity-block",
            "Tags": [tag for spec in TagSpecifications for tag in spec["Tags"]],
        }
        listed_from = self.count("DescribeCapacityReservations") + self.lag_calls
        self.blocks.append(_Block(item, self.clock.now(), listed_from))
        if outcome == LOST:
            raise ReadTimeoutError(endpoint_url=EC2_URL)
        return {"CapacityReservation": copy.deepcopy(item)}

    def _listed(self, block: _Block) -> bool:
        return (
            self.count("DescribeCapacityReservations") > block.listed_from_call
            and self.clock.now() >= block.bought_at + self.lag
        )


class _Rejected(Exception):
    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.code, self.status = code, status


def _matches(item: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    tags = {tag["Key"]: tag["Value"] for tag in item["Tags"]}
    for wanted in filters:
        if not wanted["Name"].startswith("tag:"):
            raise AssertionError(f"the fake does not model the filter {wanted['Name']}")
        if tags.get(wanted["Name"].removeprefix("tag:")) not in wanted["Values"]:
            return False
    return True
