"""Lambda functions for the kit's custom resource handlers: one runtime, logs kept as configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from aws_cdk import CustomResource, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from trn_constructs.findings import (
    BASIC_EXECUTION,
    acknowledge,
    acknowledge_provider_framework,
    managed_policy_finding,
)

# Its boto3 knows every API the handlers call, UltraServer Capacity Block parameters included.
HANDLER_RUNTIME = lambda_.Runtime.PYTHON_3_14


def handler_code(directory: Path) -> lambda_.Code:
    """A handler directory as a Lambda asset, without interpreter caches."""
    return lambda_.Code.from_asset(str(directory), exclude=["__pycache__", "*.pyc"])


def handler_function(
    scope: Construct,
    construct_id: str,
    *,
    code: lambda_.Code,
    entry_point: str,
    timeout: Duration,
    description: str,
    log_retention: logs.RetentionDays,
    module: str = "index",
    **options: Any,
) -> lambda_.Function:
    """``<module>.<entry_point>`` of ``code`` with its own log group; ``options`` go to Function."""
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=HANDLER_RUNTIME,
        handler=f"{module}.{entry_point}",
        code=code,
        timeout=timeout,
        description=description,
        log_group=logs.LogGroup(
            scope,
            f"{construct_id}Logs",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        ),
        **options,
    )
    acknowledge(
        function,
        managed_policy_finding(BASIC_EXECUTION),
        "The basic execution policy only lets the function write its own log streams",
    )
    return function


def read_only_lookup(
    scope: Construct,
    name: str,
    *,
    handler_dir: Path,
    action: str,
    reason: str,
    description: str,
    resource_type: str,
    properties: Mapping[str, str],
    log_retention: logs.RetentionDays,
) -> CustomResource:
    """A custom resource whose handler makes one read-only ``action`` (an API with no
    resource-level permissions, hence ``reason``) and returns what it found as attributes.

    Constructs: ``<name>Lookup`` (the function), ``<name>Provider`` and ``<name>`` itself.
    """
    function = handler_function(
        scope,
        f"{name}Lookup",
        code=handler_code(handler_dir),
        entry_point="on_event",
        timeout=Duration.minutes(1),
        description=description,
        log_retention=log_retention,
    )
    function.add_to_role_policy(iam.PolicyStatement(actions=[action], resources=["*"]))
    acknowledge(function, "AwsSolutions-IAM5[Resource::*]", reason)
    provider = cr.Provider(scope, f"{name}Provider", on_event_handler=function)
    acknowledge_provider_framework(provider, (function,))
    return CustomResource(
        scope,
        name,
        service_token=provider.service_token,
        resource_type=resource_type,
        properties=dict(properties),
    )
