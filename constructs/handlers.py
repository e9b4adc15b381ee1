"""Lambda functions for the kit's custom resource handlers and the Provider framework around them:
one runtime, logs encrypted and kept as configured."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import jsii
from aws_cdk import (
    AssetHashType,
    BundlingOptions,
    CustomResource,
    DockerImage,
    Duration,
    ILocalBundling,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from trn_constructs.findings import (
    BASIC_EXECUTION,
    SYNCHRONOUS_HANDLER,
    acknowledge,
    acknowledge_deploy_time_function,
    acknowledge_provider_framework,
    managed_policy_finding,
)
from trn_constructs.log_groups import log_group

# Its boto3 knows every API the handlers call, UltraServer Capacity Block parameters included.
HANDLER_RUNTIME = lambda_.Runtime.PYTHON_3_14


# Bundling below is local only; the API wants an image all the same, and it is never pulled.
_UNUSED_BUNDLING_IMAGE = "public.ecr.aws/sam/build-python3.14"


@jsii.implements(ILocalBundling)
class _WithPackageFiles:
    """Local bundling: the handler directory (as the package ``package`` when given), plus files of
    the repository's own packages placed under their package's name (``trn_burnin/report_check.py``),
    as the handler imports them, plus ``generated`` files (relative path -> text)."""

    def __init__(self, directory: Path, files: Sequence[Path], package: str | None, generated: Mapping[str, str]):
        self.directory, self.files, self.package, self.generated = directory, tuple(files), package, dict(generated)

    def try_bundle(self, output_dir: str, *_: Any) -> bool:
        out = Path(output_dir)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(self.directory, out / (self.package or ""), dirs_exist_ok=True, ignore=ignore)
        for file in self.files:
            target = out / file.parent.name / file.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(file, target)
        for relative, text in self.generated.items():
            (out / relative).write_text(text)
        return True


def handler_code(
    directory: Path,
    package_files: Sequence[Path] = (),
    *,
    package: str | None = None,
    generated: Mapping[str, str] | None = None,
) -> lambda_.Code:
    """A handler directory as a Lambda asset, without interpreter caches. ``package_files`` (files
    of a package of this repository, e.g. trn_burnin/report_check.py) are added under the package's
    directory; ``package`` puts the handler itself in a package of that name (its modules import
    each other relatively); ``generated`` adds files written at synth. The asset's hash is then that
    of its contents, so a change to any of them redeploys it."""
    if not (package_files or package or generated):
        return lambda_.Code.from_asset(str(directory), exclude=["__pycache__", "*.pyc"])
    return lambda_.Code.from_asset(
        str(directory),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=DockerImage.from_registry(_UNUSED_BUNDLING_IMAGE),
            local=_WithPackageFiles(directory, package_files, package, generated or {}),
        ),
    )


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
    dead_letter_reason: str = SYNCHRONOUS_HANDLER,
    log_group_name: str | None = None,
    **options: Any,
) -> lambda_.Function:
    """``<module>.<entry_point>`` of ``code`` with its own log group (named ``log_group_name`` when
    people must find it before the stack's outputs exist); ``dead_letter_reason`` says why it has no
    dead-letter queue (by default: a Provider's framework calls it synchronously); ``options`` go to
    Function."""
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=HANDLER_RUNTIME,
        handler=f"{module}.{entry_point}",
        code=code,
        timeout=timeout,
        description=description,
        log_group=log_group(scope, f"{construct_id}Logs", retention=log_retention, name=log_group_name),
        **options,
    )
    acknowledge_deploy_time_function(
        function,
        dead_letter_reason,
        in_vpc="vpc" in options,
        environment=bool(options.get("environment")),
    )
    acknowledge(
        function,
        managed_policy_finding(BASIC_EXECUTION),
        "The basic execution policy only lets the function write its own log streams",
    )
    return function


def provider(
    scope: Construct,
    construct_id: str,
    *,
    on_event_handler: lambda_.IFunction,
    log_retention: logs.RetentionDays,
    is_complete_handler: lambda_.IFunction | None = None,
    **options: Any,
) -> cr.Provider:
    """aws-cdk-lib's Provider framework around the handlers, its functions logging to one kit log
    group (without it they each get a group kept for two years and retained after delete); its
    findings acknowledged. ``options`` go to Provider."""
    framework = cr.Provider(
        scope,
        construct_id,
        on_event_handler=on_event_handler,
        is_complete_handler=is_complete_handler,
        log_group=log_group(scope, f"{construct_id}Logs", retention=log_retention),
        **options,
    )
    handlers = (on_event_handler, *([is_complete_handler] if is_complete_handler else []))
    acknowledge_provider_framework(framework, handlers)
    return framework


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
    framework = provider(
        scope, f"{name}Provider", on_event_handler=function, log_retention=log_retention
    )
    return CustomResource(
        scope,
        name,
        service_token=framework.service_token,
        resource_type=resource_type,
        properties=dict(properties),
    )
