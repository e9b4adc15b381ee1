"""The Capacity Block purchase custom resource (CDK Provider framework): it finds, and only on
confirmation buys, one EC2 Capacity Block for ML.

PurchaseCapacityBlock spends real money, cannot be cancelled or refunded and has no idempotency
token: a repeated call buys a second block. Everything here is arranged so that it is called at
most once per stack name and logical id.

Offering selection rule
-----------------------
An offering is a candidate only if ALL of these hold:
  * instance request: its instance type and count equal InstanceType and InstanceCount;
    UltraServer request: its UltraServer type and count equal UltraserverType and
    UltraserverCount, and its instance type and count, where the offering reports them, equal
    InstanceType and InstanceCount;
  * its duration equals CapacityDurationHours exactly (EC2 also offers slightly shorter or longer
    neighbours; those are never bought);
  * its start lies within [EarliestStart, LatestStart];
  * its Availability Zone equals AvailabilityZone, if one is set;
  * it is one segment (one reservation in one AZ, which is what the cluster launches into);
  * its currency is USD and its upfront fee is at most MaxUpfrontFeeUsd.
Among the candidates the earliest start wins, then the lowest fee, then the lowest offering id.
With no candidate the deployment fails with a message naming every constraint; when offerings fit
but even the cheapest is above the cap, the message names that fee and the cap. Nothing is bought.

Safety rules
------------
* Dry run unless ConfirmPurchase is "true": the chosen offering is reported, nothing is bought.
  A dry run's function may not buy either: the construct grants PurchaseCapacityBlock (and the
  tagging tied to it) only with capacityPurchaseConfirm=true.
* A durable purchase record, one DynamoDB item per stack id and logical id in the construct's
  table (kept when the stack is deleted), is read first by every attempt in any Lambda
  environment and written before PurchaseCapacityBlock is called: state "sending" with the
  offering, fee and time, by a conditional write only one attempt can make; then "bought" with
  the reservation id, or "not-bought" when EC2 throttled every attempt (executed none). Each
  change is conditional on the version and state read. A record that is "sending" or "bought"
  is never bought over: the attempt waits (up to three minutes) for EC2 to list its block,
  adopts it, and past that fails closed naming the offering and the tags to look for, without
  searching offerings. Only a released record, or one whose block has ended (its end passed, or
  its state is terminal, e.g. payment-failed), lets an attempt buy again. Delete leaves the
  record alone.
* Every purchase is tagged on create with the stack name, stack id, logical id, offering id and
  fee. Before buying, the handler also looks for a capacity reservation carrying this stack NAME
  and logical id in a non-terminal state and adopts it instead of buying. The name, unlike the
  stack id (and the record, whose table is the stack's), survives re-creating a stack whose
  first deployment failed; a predecessor's purchase that EC2 does not list yet is the one case
  left in which a second block can be bought.
* The purchase client never lets botocore retry. Only throttling, any code botocore's own retry
  logic counts as throttling (the request was rejected, not executed), is retried here, with
  backoff and a fresh adoption check before each new attempt. Any other failure (timeouts,
  resets, 5xx included) fails closed: the outcome is reported as unknown, with the tags to look
  for, and the record stays "sending".
* Update of a held block: purchase settings the block does not satisfy are refused (a block
  cannot be exchanged). Settings it still satisfies are accepted and change nothing; this is what
  lets CloudFormation roll a refused update back, since the rollback is an Update carrying the
  settings the block was bought with. Tags and ConfirmPurchase may change freely. A dry run holds
  nothing, so its settings may change; ConfirmPurchase false -> true on a dry run buys.
* Delete buys nothing and cancels nothing (a Capacity Block cannot be cancelled).
* is_complete waits while a block bought or adopted by on_event is not listed by EC2 yet (up to
  15 minutes after on_event, then it fails, buying nothing) and while it is payment-pending.

Modules, by role: request (parsing the properties, and the limits config.py shares), offerings
(offering choice), reservations (EC2's listing of blocks), records (the purchase records),
results (what on_event returns), adoption (holding a block instead of buying), purchase (the
PurchaseCapacityBlock call), lifecycle (create, update, delete, is_complete); aws holds the
clients, clock and sleep the tests replace.
"""

import logging

logging.getLogger(__name__).setLevel(logging.INFO)
