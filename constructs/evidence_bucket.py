"""A bucket for evidence (the burn-in reports a handover rests on): versioned, encrypted with a KMS
key of its own, every request recorded in server access logs, all of it kept after the stack."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from trn_constructs.findings import acknowledge, acknowledge_checkov

ACCESS_LOG_PREFIX = "access-logs/"


@dataclass(frozen=True)
class EvidenceBucket:
    """``bucket`` (SSE-KMS with ``key``, S3 Bucket Keys on), and ``access_logs``, the bucket its
    server access logs go to. Principals need the key as well as the bucket: ``key_statements``."""

    bucket: s3.Bucket
    key: kms.Key
    access_logs: s3.Bucket

    def key_statements(self, *, read: bool = False, write: bool = False) -> list[iam.PolicyStatement]:
        """The key, for reading (Decrypt) and writing (GenerateDataKey) objects, through S3 only."""
        actions = [*(["kms:Decrypt"] if read else []), *(["kms:GenerateDataKey"] if write else [])]
        region = Stack.of(self.bucket).region
        return [
            iam.PolicyStatement(
                actions=actions,
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            )
        ]


def evidence_bucket(scope: Construct, construct_id: str, *, description: str) -> EvidenceBucket:
    """Constructs ``<construct_id>`` (the bucket), ``<construct_id>Key`` and
    ``<construct_id>AccessLogs`` in ``scope``, all retained when the stack is deleted."""
    key = kms.Key(
        scope,
        f"{construct_id}Key",
        description=f"Encrypts {description}",
        enable_key_rotation=True,
        # The objects it encrypts outlive the stack; so must the key, or they are unreadable.
        removal_policy=RemovalPolicy.RETAIN,
    )
    # S3 writes server access logs only to a bucket with SSE-S3 default encryption. Versioned and
    # retained like the evidence itself: the log is the record of which principal (for an EC2
    # role, which instance) wrote each object, and it holds a few records per node and poll.
    access_logs = s3.Bucket(
        scope,
        f"{construct_id}AccessLogs",
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        removal_policy=RemovalPolicy.RETAIN,
    )
    no_logs_of_logs = "It is the access-log bucket itself: logging it would log its own log deliveries"
    acknowledge(access_logs, "AwsSolutions-S1", no_logs_of_logs)
    acknowledge_checkov(access_logs, "CKV_AWS_18", no_logs_of_logs)
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=ACCESS_LOG_PREFIX,
        removal_policy=RemovalPolicy.RETAIN,
    )
    return EvidenceBucket(bucket=bucket, key=key, access_logs=access_logs)
