"""Acknowledging a cdk-nag or CloudFormation-validation finding, next to the resource it is about."""

from typing import Any, Sequence

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import custom_resources as cr
from constructs import IConstruct

BASIC_EXECUTION = "service-role/AWSLambdaBasicExecutionRole"


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge ``rule_id`` on ``scope`` and its children, with the specific reason why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


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
