import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from trn_burnin.cli import main
from trn_burnin.publish import DEFAULT_NAMESPACE, metric_data, parse_s3_uri, put_metrics, upload_s3, write_local

REPORT = {
    "generated_at": "2026-11-22T06:00:00Z",
    "node": {"instance_id": "i-0123", "instance_type": "trn2.48xlarge"},
    "workload": {"dtype": "bf16"},
    "chips": [{"device": 0, "tflops": 480.5, "passed": True}, {"device": 1, "tflops": 120.0, "passed": False}],
    "verdict": {"passed": False},
}


@pytest.fixture
def stubbed():
    """boto3 clients behind Stubbers, handed out by a client factory as the publishers expect."""
    clients = {name: boto3.client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
               for name in ("s3", "cloudwatch")}
    stubs = {name: Stubber(client) for name, client in clients.items()}
    for stub in stubs.values():
        stub.activate()
    yield clients.__getitem__, stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def test_s3_upload_puts_the_report_under_the_prefix(stubbed):
    factory, stubs = stubbed
    stubs["s3"].add_response("put_object", {}, {
        "Bucket": "burnin-reports", "Key": "cluster-a/i-0123-20261122T060000Z.json",
        "Body": ANY, "ContentType": "application/json"})
    assert upload_s3(REPORT, "s3://burnin-reports/cluster-a", factory) == \
        "s3://burnin-reports/cluster-a/i-0123-20261122T060000Z.json"


def test_cloudwatch_gets_per_chip_tflops_and_pass_fail(stubbed):
    factory, stubs = stubbed
    stubs["cloudwatch"].add_response("put_metric_data", {},
                                     {"Namespace": DEFAULT_NAMESPACE, "MetricData": metric_data(REPORT)})
    assert put_metrics(REPORT, DEFAULT_NAMESPACE, factory) == 5
    data = metric_data(REPORT)
    assert [(d["MetricName"], d["Value"]) for d in data] == [
        ("NodePassed", 0.0), ("ChipTFLOPS", 480.5), ("ChipPassed", 1.0), ("ChipTFLOPS", 120.0), ("ChipPassed", 0.0)]
    assert {"Name": "Device", "Value": "1"} in data[3]["Dimensions"]
    assert all(d["Name"] != "ClusterName" for d in data[0]["Dimensions"])


def test_a_cluster_name_becomes_the_first_dimension_of_every_series():
    data = metric_data(REPORT, "TrnClusterStack-slurm")
    assert {tuple(d["Dimensions"][0].values()) for d in data} == {("ClusterName", "TrnClusterStack-slurm")}
    assert [d["Name"] for d in data[1]["Dimensions"]] == [
        "ClusterName", "InstanceId", "InstanceType", "Device", "DType"]


def test_local_file_and_s3_uri_parsing(tmp_path):
    path = write_local(REPORT, tmp_path / "deep" / "report.json")
    assert json.loads(path.read_text()) == REPORT
    assert parse_s3_uri("s3://b") == ("b", "")
    assert parse_s3_uri("s3://b/p/q/") == ("b", "p/q/")
    with pytest.raises(ValueError, match="expected s3://bucket"):
        parse_s3_uri("https://b/p")


def test_cli_publishes_the_validated_report(tmp_path, fake_host, stubbed):
    factory, stubs = stubbed
    stubs["s3"].add_response("put_object", {}, {"Bucket": "r", "Key": ANY, "Body": ANY,
                                                "ContentType": "application/json"})
    stubs["cloudwatch"].add_response("put_metric_data", {}, {"Namespace": "Custom/NS", "MetricData": ANY})
    argv = ["run", "--instance-type", "trn2.48xlarge", "--instance-id", "i-0123", "--output",
            str(tmp_path / "r.json"), "--s3-uri", "s3://r/", "--cloudwatch", "--namespace", "Custom/NS",
            "--cluster-name", "c1"]
    assert main(argv, host=fake_host, clients=factory) == 0
    assert json.loads((tmp_path / "r.json").read_text())["verdict"]["passed"] is True
