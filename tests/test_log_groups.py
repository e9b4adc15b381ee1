"""Every log group the stacks create, the kit's own and those of aws-cdk-lib's custom resources:
encrypted with the stack's log key, kept for logRetentionDays, deleted with the stack unless kept on
purpose, and no function left to log where Lambda would make a group of its own."""

from __future__ import annotations

import json

import pytest

from tests.conftest import synth, synth_variant

# The one group kept after `cdk destroy` on purpose: container output, for post-mortems.
KEPT = {"/aws/containerinsights/TrnClusterStack/application"}
# Between them every kind of log group and function the kit makes: Slurm with a built VPC, EKS
# (kubectl provider, control plane, Container Insights), the purchase, and TrnAmiStack in each.
# checkov's log group checks (KMS, retention) cover every variant in test_compliance.
COVERING = ["default", "eks", "purchase-confirmed"]


def resources(template: dict, resource_type: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == resource_type}


def log_key(template: dict) -> str:
    (key,) = [k for k in resources(template, "AWS::KMS::Key") if k.startswith("LogKey")]
    return key


@pytest.mark.parametrize("variant", COVERING)
def test_every_log_group_is_encrypted_bounded_and_goes_with_the_stack(variant):
    for name, template in synth_variant(variant).templates().items():
        key = log_key(template)
        groups = resources(template, "AWS::Logs::LogGroup")
        assert groups, name
        for logical_id, group in groups.items():
            properties = group["Properties"]
            assert properties["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}, (name, logical_id)
            assert properties["RetentionInDays"] == 90, (name, logical_id)
            expected = "Retain" if str(properties.get("LogGroupName")) in KEPT else "Delete"
            assert group["DeletionPolicy"] == expected, (name, logical_id)


@pytest.mark.parametrize("variant", COVERING)
def test_every_function_logs_to_a_group_of_the_stack(variant):
    for name, template in synth_variant(variant).templates().items():
        groups = resources(template, "AWS::Logs::LogGroup")
        # A function logs to the group its LoggingConfig names, else to Lambda's default name.
        default_names = {
            json.dumps(group["Properties"].get("LogGroupName"), sort_keys=True) for group in groups.values()
        }
        for logical_id, function in resources(template, "AWS::Lambda::Function").items():
            if "LogGroup" in function["Properties"].get("LoggingConfig", {}):
                (group,) = function["Properties"]["LoggingConfig"]["LogGroup"].values()
                assert group in groups, (name, logical_id)
            else:
                default = {"Fn::Join": ["", ["/aws/lambda/", {"Ref": logical_id}]]}
                assert json.dumps(default, sort_keys=True) in default_names, (name, logical_id)


def test_provider_framework_functions_share_one_group_of_the_kit(default_stack):
    template = default_stack.handover_json
    framework = {
        k: f for k, f in resources(template, "AWS::Lambda::Function").items()
        if k.startswith("HandoverProviderframework")
    }  # fmt: skip
    assert len(framework) == 3  # onEvent, isComplete, onTimeout
    for function in framework.values():
        assert function["Properties"]["LoggingConfig"]["LogGroup"] == {
            "Ref": next(k for k in template["Resources"] if k.startswith("HandoverProviderLogs"))
        }


@pytest.mark.parametrize("stack", ["infra_json", "handover_json"])
def test_cloudwatch_logs_may_use_the_key_for_this_accounts_groups_in_this_region_only(default_stack, stack):
    template = getattr(default_stack, stack)
    statements = template["Resources"][log_key(template)]["Properties"]["KeyPolicy"]["Statement"]
    logs = [s for s in statements if s["Principal"] == {"Service": "logs.us-east-2.amazonaws.com"}]
    assert logs == [
        {
            "Action": [
                "kms:Decrypt*", "kms:Describe*", "kms:Encrypt*", "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
            ],
            "Condition": {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-2:123456789012:log-group:*"
                }
            },
            "Effect": "Allow",
            "Principal": {"Service": "logs.us-east-2.amazonaws.com"},
            "Resource": "*",
        }
    ]  # fmt: skip
    assert template["Resources"][log_key(template)]["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize("variant, kept", [("default", "Delete"), ("eks", "Retain")])
def test_the_key_stays_exactly_when_a_group_does(variant, kept):
    synthesized = synth_variant(variant)
    infra, handover = synthesized.infra_json, synthesized.handover_json
    assert infra["Resources"][log_key(infra)]["DeletionPolicy"] == kept
    # The kept group (Container Insights' application logs) is the infrastructure stack's.
    assert handover["Resources"][log_key(handover)]["DeletionPolicy"] == "Delete"


def test_groups_follow_log_retention_days():
    template = synth(orchestrator="eks", logRetentionDays=14).template_json
    retention = {g["Properties"]["RetentionInDays"] for g in resources(template, "AWS::Logs::LogGroup").values()}
    assert retention == {14}
