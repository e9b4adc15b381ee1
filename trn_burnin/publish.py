"""Where reports go: a local file, S3 (under a prefix, or at an exact key), and CloudWatch metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

DEFAULT_NAMESPACE = "TrnCluster/BurnIn"
MAX_METRICS_PER_CALL = 1000  # CloudWatch PutMetricData limit per request

ClientFactory = Callable[[str], Any]  # service name -> boto3 client


def boto3_client_factory(region: str | None = None) -> ClientFactory:
    def create(service: str) -> Any:
        import boto3  # only publishers need it

        return boto3.client(service, region_name=region)

    return create


def report_bytes(report: Mapping[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()


def write_local(report: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(report_bytes(report))
    return path


def report_name(report: Mapping[str, Any]) -> str:
    stamp = report["generated_at"].replace(":", "").replace("-", "")
    return f"{report['node']['instance_id']}-{stamp}.json"


def _split_s3_uri(uri: str, expected: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected {expected}, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix/ -> (bucket, prefix); ValueError for anything else."""
    bucket, prefix = _split_s3_uri(uri, "s3://bucket[/prefix]")
    return bucket, (prefix if not prefix or prefix.endswith("/") else prefix + "/")


def parse_s3_object_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key.json -> (bucket, key); ValueError for a prefix or anything else."""
    expected = "s3://bucket/key"
    bucket, key = _split_s3_uri(uri, expected)
    if not key or key.endswith("/"):
        raise ValueError(f"expected {expected}, got {uri!r}")
    return bucket, key


def _put_json(document: Mapping[str, Any], bucket: str, key: str, clients: ClientFactory) -> str:
    clients("s3").put_object(Bucket=bucket, Key=key, Body=report_bytes(document),
                             ContentType="application/json")
    return f"s3://{bucket}/{key}"


def upload_s3(report: Mapping[str, Any], uri: str, clients: ClientFactory) -> str:
    bucket, prefix = parse_s3_uri(uri)
    return _put_json(report, bucket, prefix + report_name(report), clients)


def put_s3_object(document: Mapping[str, Any], uri: str, clients: ClientFactory) -> str:
    """``document`` as JSON at exactly ``uri`` (s3://bucket/key)."""
    return _put_json(document, *parse_s3_object_uri(uri), clients)


def metric_data(report: Mapping[str, Any], cluster_name: str | None = None) -> list[dict[str, Any]]:
    """Per chip: achieved TFLOPS and pass (1) / fail (0); per node: pass / fail. With
    ``cluster_name`` every series also carries ClusterName, so one cluster's dashboard shows only
    its own nodes."""
    node = report["node"]
    cluster = [{"Name": "ClusterName", "Value": cluster_name}] if cluster_name else []
    base = cluster + [{"Name": "InstanceId", "Value": node["instance_id"]},
                      {"Name": "InstanceType", "Value": node["instance_type"]}]
    data = [{"MetricName": "NodePassed", "Dimensions": base, "Unit": "Count",
             "Value": 1.0 if report["verdict"]["passed"] else 0.0}]
    dtype = report["workload"]["dtype"]
    for chip in report["chips"]:
        dims = base + [{"Name": "Device", "Value": str(chip["device"])}, {"Name": "DType", "Value": dtype}]
        data.append({"MetricName": "ChipTFLOPS", "Dimensions": dims, "Unit": "None", "Value": chip["tflops"]})
        data.append({"MetricName": "ChipPassed", "Dimensions": dims, "Unit": "Count",
                     "Value": 1.0 if chip["passed"] else 0.0})
    return data


def put_metrics(report: Mapping[str, Any], namespace: str, clients: ClientFactory,
                cluster_name: str | None = None) -> int:
    client = clients("cloudwatch")
    data = metric_data(report, cluster_name)
    for start in range(0, len(data), MAX_METRICS_PER_CALL):
        client.put_metric_data(Namespace=namespace, MetricData=data[start:start + MAX_METRICS_PER_CALL])
    return len(data)
