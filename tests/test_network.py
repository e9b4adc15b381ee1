"""Network construct: VPC layout, endpoints, security groups, flow logs."""

import pytest
from aws_cdk.assertions import Match

from tests.conftest import synth_variant
from trn_constructs.network import INTERFACE_ENDPOINTS


@pytest.fixture(scope="module")
def imported():
    return synth_variant("imported-vpc").template


def test_two_private_subnets_and_the_compute_one_is_in_the_capacity_az(default_stack):
    template = default_stack.template
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.has_resource_properties(
        "AWS::EC2::Subnet",
        {
            "AvailabilityZone": "us-east-2b",
            "MapPublicIpOnLaunch": False,
            "CidrBlock": Match.string_like_regexp(r"/18$"),
        },
    )
    azs = {
        props["Properties"]["AvailabilityZone"]
        for props in template.find_resources("AWS::EC2::Subnet").values()
    }
    assert azs == {"us-east-2b", "us-east-2a"}


def test_one_nat_gateway_in_the_capacity_az(default_stack):
    template = default_stack.template
    template.resource_count_is("AWS::EC2::NatGateway", 1)
    (nat,) = template.find_resources("AWS::EC2::NatGateway").values()
    subnet_id = nat["Properties"]["SubnetId"]["Ref"]
    subnet = default_stack.template_json["Resources"][subnet_id]
    assert subnet["Properties"]["AvailabilityZone"] == "us-east-2b"


def test_s3_gateway_and_interface_endpoints_in_the_compute_subnet_only(default_stack):
    template = default_stack.template
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "ServiceName": Match.object_like(
                {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]}
            ),
        },
    )
    interface = template.find_resources(
        "AWS::EC2::VPCEndpoint", {"Properties": {"VpcEndpointType": "Interface"}}
    )
    assert len(interface) == len(INTERFACE_ENDPOINTS) == 8
    services = {
        endpoint["Properties"]["ServiceName"].split(".")[-1]
        if isinstance(endpoint["Properties"]["ServiceName"], str)
        else endpoint["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip(".")
        for endpoint in interface.values()
    }
    assert services == {"ssm", "ssmmessages", "ec2messages", "api", "dkr", "logs", "monitoring", "sts"}
    for endpoint in interface.values():
        assert len(endpoint["Properties"]["SubnetIds"]) == 1
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True


def test_efa_security_group_allows_all_traffic_only_within_itself(default_stack):
    template = default_stack.template
    efa_groups = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": Match.string_like_regexp("^EFA")}},
    )
    (efa_id,) = efa_groups
    # No inline rules: its only ingress and egress are the two self-references below.
    assert "SecurityGroupEgress" not in efa_groups[efa_id]["Properties"]
    assert "SecurityGroupIngress" not in efa_groups[efa_id]["Properties"]
    self_ref = {"Fn::GetAtt": [efa_id, "GroupId"]}
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"IpProtocol": "-1", "GroupId": self_ref, "SourceSecurityGroupId": self_ref},
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupEgress",
        {"IpProtocol": "-1", "GroupId": self_ref, "DestinationSecurityGroupId": self_ref},
    )
    rules = [
        r
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == self_ref
    ]
    assert len(rules) == 1


def test_flow_logs_capture_all_traffic_with_retention(default_stack):
    template = default_stack.template
    template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL"}
    )
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 90})


def test_no_placement_group_with_capacity_blocks(default_stack):
    # Capacity Blocks are already co-located; a placement group only causes launch failures.
    default_stack.template.resource_count_is("AWS::EC2::PlacementGroup", 0)


def test_imported_vpc_builds_no_network_only_groups_and_flow_logs(imported):
    for resource in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::VPCEndpoint"):
        imported.resource_count_is(resource, 0)
    imported.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceId": "vpc-0a1b2c3d4e5f60718", "ResourceType": "VPC"}
    )
    imported.has_resource_properties(
        "AWS::FSx::FileSystem", {"SubnetIds": ["subnet-0a1b2c3d4e5f60718"]}
    )
