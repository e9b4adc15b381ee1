"""Builds the CDK app from context: one place shared by app.py and the tests."""

from __future__ import annotations

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.ami_stack import TrnAmiStack
from stacks.cluster_stack import TrnClusterStack
from stacks.infra_stack import TrnClusterInfraStack, infra_stack_name
from trn_constructs.config import ClusterConfig, parse_config

CLUSTER_STACK_NAME = "TrnClusterStack"
AMI_STACK_NAME = "TrnAmiStack"


def read_config(app: App) -> ClusterConfig:
    """The kit's settings from cdk.json context and -c overrides."""
    return parse_config(app.node.get_all_context())


def add_stacks(app: App) -> TrnClusterStack:
    """Add the kit's stacks to ``app`` with cdk-nag checking every one; raises ConfigError."""
    config = read_config(app)
    infra = TrnClusterInfraStack(
        app, infra_stack_name(CLUSTER_STACK_NAME), config=config, cluster_stack_name=CLUSTER_STACK_NAME
    )
    cluster = TrnClusterStack(app, CLUSTER_STACK_NAME, config=config, infra=infra)
    TrnAmiStack(app, AMI_STACK_NAME, config=config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return cluster
