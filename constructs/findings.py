"""Acknowledging a cdk-nag, CloudFormation-validation or checkov finding, next to the resource it is
about."""

from typing import Any, Sequence

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import custom_resources as cr
from constructs import IConstruct

BASIC_EXECUTION = "service-role/AWSLambdaBasicExecutionRole"


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge ``rule_id`` on ``scope`` and its children, with the specific reason why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_checkov(resource: IConstruct, check_id: str, reason: str) -> None:
    """Skip checkov's ``check_id`` on ``resource`` (an L1, or a construct whose default child is
    one) with the specific reason why: checkov reads skips from the resource's own Metadata."""
    cfn = resource if isinstance(resource, CfnResource) else resource.node.default_child
    skips = [s for s in (cfn.get_metadata("checkov") or {}).get("skip", []) if s["id"] != check_id]
    cfn.add_metadata("checkov", {"skip": [*skips, {"id": check_id, "comment": reason}]})


# checkov's Lambda checks, and why they do not fit a function that only runs while the kit deploys
# or hands a cluster over: a custom resource handler (ours, or one aws-cdk-lib makes), a step of
# the handover workflow.
DEPLOY_TIME_FUNCTION_CHECKS = {
    "CKV_AWS_115": "Runs only while the kit deploys or hands the cluster over, a few invocations a "
    "minute at most; reserved concurrency would take from the account's pool (10 in new accounts)",
    "CKV_AWS_117": "Calls only public AWS APIs, nothing in the VPC; inside it would need network "
    "interfaces and endpoints for no gain",
    "CKV_AWS_173": "Its environment holds function names and settings, no secrets; Lambda encrypts "
    "it at rest with its AWS managed key",
}
# A dead-letter queue only receives failed asynchronous invocations.
SYNCHRONOUS_HANDLER = (
    "The custom resource framework invokes it synchronously and reports its errors to "
    "CloudFormation; a dead-letter queue only receives failed asynchronous invocations"
)
CLOUDFORMATION_INVOKED = (
    "CloudFormation invokes it and fails the resource, named in the stack events, when no "
    "response comes; a dead-letter queue would keep an event nobody can answer any more"
)


def acknowledge_deploy_time_function(
    function: IConstruct,
    dead_letter_reason: str,
    *,
    in_vpc: bool = False,
    environment: bool = False,
) -> None:
    """checkov's Lambda findings on a custom resource function, each with its reason (none for
    what it already does: run in the VPC, reserve concurrency; or has not: an environment)."""
    cfn = function if isinstance(function, CfnResource) else function.node.default_child
    done = {
        "CKV_AWS_117": in_vpc,
        "CKV_AWS_115": getattr(cfn, "reserved_concurrent_executions", None) is not None,
        "CKV_AWS_173": not environment,
    }
    for check_id, reason in DEPLOY_TIME_FUNCTION_CHECKS.items():
        if not done.get(check_id):
            acknowledge_checkov(function, check_id, reason)
    acknowledge_checkov(function, "CKV_AWS_116", dead_letter_reason)


def managed_policy_finding(name: str) -> str:
    """The cdk-nag finding id for one AWS managed policy attached to a role."""
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]"


def _as_nag_renders(value: Any) -> str:
    """A resolved CloudFormation value written the way cdk-nag writes it in finding ids."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    separator, parts = value["Fn::Join"]
    return separator.join(_as_nag_renders(part) for part in parts)


def wildcard_finding(scope: IConstruct, resource: str) -> str:
    """cdk-nag's id for a wildcard on ``resource`` (an ARN string, tokens allowed)."""
    return f"AwsSolutions-IAM5[Resource::{_as_nag_renders(Stack.of(scope).resolve(resource))}]"


def arn_finding(resource: IConstruct, suffix: str = ":*") -> str:
    """cdk-nag's id for a wildcard on ``resource``'s ARN, e.g. a function's versions (":*") or the
    objects under a prefix ("/reports/*")."""
    logical_id = Stack.of(resource).get_logical_id(resource.node.default_child)
    return f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>{suffix}]"


def acknowledge_provider_framework(
    provider: cr.Provider, handlers: Sequence[lambda_.IFunction]
) -> None:
    """The findings on what aws-cdk-lib's custom resource Provider framework creates itself."""
    framework = [
        provider.node.find_child(name)
        for name in ("framework-onEvent", "framework-isComplete", "framework-onTimeout")
        if provider.node.try_find_child(name)
    ]
    for function in framework:
        # onEvent is the function CloudFormation calls; the waiter calls isComplete and onTimeout.
        acknowledge_deploy_time_function(
            function,
            CLOUDFORMATION_INVOKED if function.node.id == "framework-onEvent" else SYNCHRONOUS_HANDLER,
            environment=True,  # the handlers' and the waiter's ARNs
        )
    for function in [*handlers, *framework]:
        acknowledge(
            provider,
            arn_finding(function),
            "The Provider framework invokes these functions, any version; it owns the grant",
        )
    acknowledge(
        provider,
        managed_policy_finding(BASIC_EXECUTION),
        "The framework's functions only write their own logs with the basic execution policy",
    )
    acknowledge(provider, "AwsSolutions-L1", "aws-cdk-lib chooses the framework's own runtime")
    acknowledge(
        provider,
        "AwsSolutions-SF1",
        "The framework's waiter only polls the is_complete handler, which logs every poll itself",
    )
    acknowledge(
        provider,
        "AwsSolutions-SF2",
        "The waiter's two-step loop needs no tracing; its handlers' logs tell each poll's outcome",
    )
