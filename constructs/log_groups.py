"""The stack's CloudWatch log groups: encrypted with one customer managed key of the stack, kept
for logRetentionDays, deleted with the stack unless a group says why not."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from trn_constructs.config import RETENTION_DAYS

# One key per stack, found by this id at the stack's root, so every construct's log groups share
# it without each of them being handed it.
LOG_KEY_ID = "LogKey"


def log_key(scope: IConstruct) -> kms.Key:
    """The key that encrypts every log group of ``scope``'s stack (created on first use)."""
    stack = Stack.of(scope)
    existing = stack.node.try_find_child(LOG_KEY_ID)
    if existing is not None:
        return existing
    key = kms.Key(
        stack,
        LOG_KEY_ID,
        description="Encrypts the stack's CloudWatch log groups",
        enable_key_rotation=True,
        # Deleted with the log groups; a group that outlives the stack keeps it (log_group).
        removal_policy=RemovalPolicy.DESTROY,
        pending_window=Duration.days(7),
    )
    # CloudWatch Logs encrypts and decrypts as its regional service principal, and only for log
    # groups of this account and region (the encryption context names the group).
    key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=[
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            resources=["*"],
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                }
            },
        )
    )
    return key


def log_group(
    scope: Construct,
    construct_id: str,
    *,
    retention: logs.RetentionDays,
    name: str | None = None,
    removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
) -> logs.LogGroup:
    """A log group of the kit: the stack's log key, ``retention``, ``removal_policy``."""
    key = log_key(scope)
    if removal_policy == RemovalPolicy.RETAIN:
        # A kept group is unreadable without its key: the key stays with it.
        key.apply_removal_policy(RemovalPolicy.RETAIN)
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=retention,
        encryption_key=key,
        removal_policy=removal_policy,
    )


def adopt_log_groups(scope: IConstruct, retention: logs.RetentionDays) -> None:
    """Give the log groups aws-cdk-lib creates under ``scope``, where it offers no setting for them,
    the kit's key, retention and removal, through their CloudFormation resources."""
    key = log_key(scope)
    for child in scope.node.find_all():
        if isinstance(child, logs.CfnLogGroup):
            child.kms_key_id = key.key_arn
            child.retention_in_days = RETENTION_DAYS[retention]
            child.apply_removal_policy(RemovalPolicy.DESTROY)


def route_function_logs(
    function: CfnResource, scope: Construct, construct_id: str, retention: logs.RetentionDays
) -> logs.LogGroup:
    """Send an L1 ``AWS::Lambda::Function`` that aws-cdk-lib made (with no log group of its own,
    so Lambda would create one that never expires, unencrypted) to a kit log group."""
    group = log_group(scope, construct_id, retention=retention)
    function.add_property_override("LoggingConfig.LogGroup", group.log_group_name)
    return group
