"""Acknowledging a cdk-nag or CloudFormation-validation finding, next to the resource it is about."""

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge ``rule_id`` on ``scope`` and its children, with the specific reason why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
