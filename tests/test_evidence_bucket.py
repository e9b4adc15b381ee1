"""The burn-in reports bucket, the evidence a handover rests on: SSE-KMS with its own key, server
access logs to a bucket of their own, versioning, all kept; its key granted to exactly its readers
and writers; and what a node may write (IAM cannot narrow that to its own instance: README)."""

from __future__ import annotations

import pytest

from tests.conftest import synth_variant
from trn_constructs.evidence_bucket import ACCESS_LOG_PREFIX

REPORTS = "BurnInReportsF8B0FE96"
KEY = "BurnInReportsKey53086CAB"
ACCESS_LOGS = "BurnInReportsAccessLogs"
VIA_S3 = {"StringEquals": {"kms:ViaService": "s3.us-east-2.amazonaws.com"}}


@pytest.fixture(scope="module")
def slurm():
    return synth_variant("default")


@pytest.fixture(scope="module")
def eks():
    return synth_variant("eks")


def resource(synthesized, prefix: str) -> tuple[str, dict]:
    ((name, found),) = [
        (k, r) for k, r in synthesized.template_json["Resources"].items() if k.startswith(prefix)
        and r["Type"] in ("AWS::S3::Bucket", "AWS::KMS::Key")
    ]  # fmt: skip
    return name, found


def policy_statements(synthesized, policy_prefix: str) -> list[dict]:
    """The statements of the policies whose name (managed: description) starts with the prefix."""
    return [
        statement
        for r in synthesized.template_json["Resources"].values()
        if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and str(r["Properties"].get("PolicyName", r["Properties"].get("Description", ""))).startswith(policy_prefix)
        for statement in r["Properties"]["PolicyDocument"]["Statement"]
    ]  # fmt: skip


def key_statements(synthesized, policy_prefix: str) -> list[dict]:
    return [
        statement
        for statement in policy_statements(synthesized, policy_prefix)
        if statement.get("Resource") == {"Fn::GetAtt": [KEY, "Arn"]}
    ]


def test_reports_are_sse_kms_with_their_own_rotated_key_versioned_and_logged(slurm):
    _, bucket = resource(slurm, REPORTS)
    logs, _ = resource(slurm, ACCESS_LOGS)
    properties = bucket["Properties"]
    assert properties["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {
                "BucketKeyEnabled": True,
                "ServerSideEncryptionByDefault": {
                    "KMSMasterKeyID": {"Fn::GetAtt": [KEY, "Arn"]},
                    "SSEAlgorithm": "aws:kms",
                },
            }
        ]
    }
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs},
        "LogFilePrefix": ACCESS_LOG_PREFIX,
    }
    assert bucket["DeletionPolicy"] == "Retain"
    _, key = resource(slurm, KEY)
    assert key["Properties"]["EnableKeyRotation"] is True
    # The retained reports stay readable only with their key.
    assert key["DeletionPolicy"] == "Retain"


def test_access_logs_are_sse_s3_versioned_private_and_kept_like_the_reports(slurm):
    logs, bucket = resource(slurm, ACCESS_LOGS)
    properties = bucket["Properties"]
    # S3 delivers server access logs only to a bucket with SSE-S3 default encryption.
    assert properties["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    }
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert bucket["DeletionPolicy"] == "Retain"
    (policy,) = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in slurm.template_json["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": logs}
    ]
    (delivery,) = [s for s in policy if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}]
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::GetAtt": [REPORTS, "Arn"]}}
    assert delivery["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}


def test_writers_may_only_encrypt_and_readers_only_decrypt_through_s3(slurm, eks):
    def grants(synthesized, prefix):
        return [(s["Action"], s["Condition"]) for s in key_statements(synthesized, prefix)]

    # Slurm nodes and EKS burn-in pods write reports; neither may read any back.
    assert grants(slurm, "Trainium nodes") == [("kms:GenerateDataKey", VIA_S3)]
    assert grants(eks, "EksBurnInPodRole") == [("kms:GenerateDataKey", VIA_S3)]
    # The all-reduce pods exchange keys and addresses under their run's folder: both ways.
    assert grants(eks, "EksBurnInClusterTestPodRole") == [(["kms:Decrypt", "kms:GenerateDataKey"], VIA_S3)]
    # The Slurm head node writes the cluster test's result.
    assert grants(slurm, "Slurm head node") == [("kms:GenerateDataKey", VIA_S3)]
    # The handover reads reports and keeps its ledger, verdicts and the cluster test's folders.
    for synthesized in (slurm, eks):
        assert grants(synthesized, "The handover") == [(["kms:Decrypt", "kms:GenerateDataKey"], VIA_S3)]


@pytest.mark.parametrize("orchestrator, policy_prefix", [
    ("slurm", "Trainium nodes"), ("eks", "EksBurnInPodRole"),
])  # fmt: skip
def test_a_node_may_write_reports_only_under_the_prefix_and_read_none(orchestrator, policy_prefix, slurm, eks):
    synthesized = {"slurm": slurm, "eks": eks}[orchestrator]
    statements = policy_statements(synthesized, policy_prefix)
    on_reports = [s for s in statements if REPORTS in str(s["Resource"]) or KEY in str(s["Resource"])]
    # Put under burn-in/ and encrypt: no Get, List,
    # Delete or Decrypt, so a node can neither read nor remove another node's report; versioning
    # keeps every version of one it overwrites, and the access log names who wrote each.
    assert sorted(str(s["Action"]) for s in on_reports) == ["kms:GenerateDataKey", "s3:PutObject"]
    (put,) = [s for s in on_reports if s["Action"] == "s3:PutObject"]
    resources = put["Resource"] if isinstance(put["Resource"], list) else [put["Resource"]]
    suffixes = [r["Fn::Join"][1][-1] for r in resources]
    assert suffixes == ["/burn-in/*"]
