"""The few Kubernetes API calls the handover makes, authenticated the way EKS documents for IAM
principals: a bearer token that is a presigned STS GetCallerIdentity URL naming the cluster."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.signers import RequestSigner

from . import aws

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
# EKS accepts a token for 15 minutes from its signing time, whatever X-Amz-Expires says.
TOKEN_EXPIRES_SECONDS = 60
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def eks_token(cluster_name: str, region: str) -> str:
    session = boto3.session.Session()
    sts = session.client("sts", region_name=region)
    signer = RequestSigner(
        sts.meta.service_model.service_id, region, "sts", "v4", session.get_credentials(), session.events
    )
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            "body": {},
            "headers": {CLUSTER_ID_HEADER: cluster_name},
            "context": {},
        },
        region_name=region,
        expires_in=TOKEN_EXPIRES_SECONDS,
        operation_name="",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status


@dataclass
class Kubernetes:
    endpoint: str
    token: str
    tls: ssl.SSLContext

    @classmethod
    def for_cluster(cls, cluster_name: str) -> "Kubernetes":
        eks = aws.client("eks")
        cluster = eks.describe_cluster(name=cluster_name)["cluster"]
        with tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False) as ca:
            ca.write(base64.b64decode(cluster["certificateAuthority"]["data"]))
        return cls(
            endpoint=cluster["endpoint"],
            token=eks_token(cluster_name, eks.meta.region_name),
            tls=ssl.create_default_context(cafile=ca.name),
        )

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type,
                     "Accept": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise KubeError(error.code, detail) from None
