"""Alerts: the one SNS topic through which the kit tells people something needs them."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class Alerts(Construct):
    """An SNS topic encrypted with its own KMS key, reachable over TLS only.

    Publishers that act through an IAM role (EventBridge rules and schedules in this kit) get
    ``topic.grant_publish(role)``, which also grants the key. CloudWatch alarm actions publish as
    the CloudWatch service, so the key lets that service encrypt messages for the topic.

    Attributes:
        topic: the alert topic.
        key: the KMS key encrypting its messages.
    """

    def __init__(self, scope: Construct, construct_id: str, *, email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the Trainium cluster's alert messages",
            enable_key_rotation=True,
            # The key protects messages in flight only; nothing stays encrypted under it.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="Trainium cluster alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        if email:
            # AWS e-mails the address a confirmation link; nothing arrives before it is followed.
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
