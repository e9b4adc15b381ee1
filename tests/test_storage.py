"""Storage construct: FSx for Lustre PERSISTENT_2 settings, encryption, ports, S3 link, removal."""

import pytest
from aws_cdk.assertions import Match

from tests.conftest import synth, synth_variant


@pytest.fixture(scope="module")
def full():
    return synth_variant("trn2u-fsx-full")


def test_persistent_2_with_lz4_metadata_and_customer_key(default_stack):
    template = default_stack.template
    template.resource_count_is("AWS::FSx::FileSystem", 1)
    template.has_resource_properties(
        "AWS::FSx::FileSystem",
        {
            "FileSystemType": "LUSTRE",
            "StorageCapacity": 1200,
            "KmsKeyId": {"Ref": Match.string_like_regexp("^StorageKey")},
            "LustreConfiguration": {
                "DeploymentType": "PERSISTENT_2",
                "PerUnitStorageThroughput": 250,
                "DataCompressionType": "LZ4",
                "MetadataConfiguration": {"Mode": "AUTOMATIC"},
                "EfaEnabled": Match.absent(),
            },
        },
    )
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template.resource_count_is("AWS::FSx::DataRepositoryAssociation", 0)


def test_retained_by_default(default_stack):
    default_stack.template.has_resource(
        "AWS::FSx::FileSystem", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )
    default_stack.template.has_output(
        "FileSystemRemovalPolicy", {"Value": "retain", "Description": Match.string_like_regexp("billed")}
    )


def retained(synthesized) -> list[str]:
    """Types of the network resources a stack delete leaves behind."""
    return sorted(
        resource["Type"] if "Efa" not in name else "EFA " + resource["Type"]
        for name, resource in synthesized.template_json["Resources"].items()
        if resource["Type"].startswith("AWS::EC2::") and resource.get("DeletionPolicy") == "Retain"
    )


def test_a_retained_file_system_keeps_the_network_its_interfaces_sit_in(default_stack):
    # Without them the stack delete would end DELETE_FAILED; NAT, endpoints and the other subnets go.
    assert retained(default_stack) == ["AWS::EC2::SecurityGroup", "AWS::EC2::Subnet", "AWS::EC2::VPC"]
    (subnet,) = default_stack.template.find_resources(
        "AWS::EC2::Subnet", {"DeletionPolicy": "Retain"}
    ).values()
    assert subnet["Properties"]["AvailabilityZone"] == "us-east-2b"  # the compute subnet
    default_stack.template.has_resource(
        "AWS::EC2::SecurityGroup",
        {"DeletionPolicy": "Retain", "Properties": {"GroupDescription": Match.string_like_regexp("^FSx")}},
    )


def test_an_efa_file_system_keeps_the_efa_group_too():
    efa = synth(fsxEfaEnabled=True, fsxMetadataMode="USER_PROVISIONED", fsxMetadataIops=1500)
    assert "EFA AWS::EC2::SecurityGroup" in retained(efa)


def test_in_an_imported_vpc_only_the_groups_the_stack_made_are_kept():
    assert retained(synth_variant("imported-vpc")) == ["AWS::EC2::SecurityGroup"]


def test_a_deleted_file_system_leaves_no_network_behind(full):
    assert retained(full) == []


def test_lustre_ports_only_from_itself_and_the_nodes(default_stack):
    template = default_stack.template
    (fsx_sg,) = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": Match.string_like_regexp("^FSx")}},
    )
    (node_sg,) = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": Match.string_like_regexp("^Trainium cluster nodes")}},
    )
    into_fsx = [
        rule["Properties"]
        for rule in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [fsx_sg, "GroupId"]}
    ]
    sources = {rule["SourceSecurityGroupId"]["Fn::GetAtt"][0] for rule in into_fsx}
    ports = {(rule["FromPort"], rule["ToPort"]) for rule in into_fsx}
    assert sources == {fsx_sg, node_sg}
    assert ports == {(988, 988), (1018, 1023)}
    assert all(rule["IpProtocol"] == "tcp" for rule in into_fsx)


def test_full_options_efa_s3_link_user_metadata_and_destroy(full):
    template = full.template
    template.has_resource_properties(
        "AWS::FSx::FileSystem",
        {
            "StorageCapacity": 4800,
            "SecurityGroupIds": [
                {"Fn::GetAtt": [Match.string_like_regexp("^StorageSecurityGroup"), "GroupId"]},
                {"Fn::GetAtt": [Match.string_like_regexp("^NetworkEfaSecurityGroup"), "GroupId"]},
            ],
            "LustreConfiguration": {
                "PerUnitStorageThroughput": 1000,
                "MetadataConfiguration": {"Mode": "USER_PROVISIONED", "Iops": 12000},
                "EfaEnabled": True,
            },
        },
    )
    template.has_resource("AWS::FSx::FileSystem", {"DeletionPolicy": "Delete"})
    template.has_resource_properties(
        "AWS::FSx::DataRepositoryAssociation",
        {
            "DataRepositoryPath": "s3://example-training-data/datasets",
            "FileSystemPath": "/s3",
            "BatchImportMetaDataOnCreate": True,
            "S3": {
                "AutoImportPolicy": {"Events": ["NEW", "CHANGED", "DELETED"]},
                "AutoExportPolicy": {"Events": ["NEW", "CHANGED", "DELETED"]},
            },
        },
    )
