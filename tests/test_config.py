"""Configuration parsing: defaults, -c string forms, overrides, and every validation message."""

import pytest
from aws_cdk.aws_logs import RetentionDays

from tests.conftest import context_with
from trn_constructs.config import ConfigError, parse_config


def parse(**overrides):
    return parse_config(context_with(overrides))


def error_of(**overrides) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(**overrides)
    return str(raised.value)


def test_defaults_from_cdk_json():
    config = parse()
    assert config.orchestrator == "slurm"
    assert config.capacity.instance.key == "trn3-gen1"
    assert config.capacity.instance_count == 4
    assert config.capacity.ultraserver_count == 1
    assert config.network.availability_zones == ("us-east-2b", "us-east-2a")
    assert config.network.vpc_id is None
    assert config.fsx.removal_policy == "retain"
    assert config.log_retention == RetentionDays.THREE_MONTHS


def test_command_line_strings_are_coerced():
    # `-c name=value` delivers strings.
    config = parse(
        instanceType="trn2.48xlarge",
        instanceCount="3",
        fsxEfaEnabled="true",
        fsxStorageCapacityGiB="4800",
        tags='{"team": "ml"}',
    )
    assert config.capacity.instance_count == 3
    assert config.fsx.efa_enabled is True
    assert config.fsx.storage_capacity_gib == 4800
    assert config.tags == {"team": "ml"}


def test_catalog_override_renames_uncertain_trn3_type():
    config = parse(
        catalogOverrides={"trn3-gen1": {"instanceType": "trn3u.48xlarge", "efaNetworkCards": 8}},
        instanceType="trn3u.48xlarge",
    )
    assert config.capacity.instance.key == "trn3-gen1"
    assert config.capacity.instance.instance_type == "trn3u.48xlarge"
    assert config.capacity.instance.efa_network_cards == 8


def test_catalog_override_sets_the_uncertain_trn3_fp8_peak():
    config = parse(catalogOverrides={"trn3-gen1": {"fp8PeakTflopsPerCore": 78.6}}, burnInDtype="fp8")
    peak = config.capacity.instance.core.peak("fp8")
    assert (peak.tflops, peak.source, peak.uncertain) == (78.6, "catalogOverrides", False)
    assert parse().capacity.instance.core.peak("fp8").uncertain


def test_imported_vpc():
    config = parse(
        vpcId="vpc-0a1b2c3d4e5f60718",
        computeSubnetId="subnet-0a1b2c3d4e5f60718",
        secondarySubnetId="subnet-0f1e2d3c4b5a69788",
    )
    assert config.network.vpc_id == "vpc-0a1b2c3d4e5f60718"
    assert config.network.compute_subnet_id == "subnet-0a1b2c3d4e5f60718"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"instanceType": "p5.48xlarge"},
            "setting 'instanceType': got 'p5.48xlarge'; allowed: trn2.48xlarge, "
            "trn2u.48xlarge, trn3.48xlarge, trn3p.16xlarge",
        ),
        (
            {"instanceType": "trn2u.48xlarge", "instanceCount": 6},
            "setting 'instanceCount': got 6; allowed: a multiple of 4: trn2u.48xlarge comes in "
            "u-trn2x64 UltraServers of 4 instances, so counts must fill whole UltraServers "
            "(4, 8, 12, ...)",
        ),
        (
            {"instanceType": "trn2.48xlarge", "instanceCount": 0},
            "setting 'instanceCount': got 0; allowed: a whole number >= 1",
        ),
        (
            {"instanceCount": "four"},
            "setting 'instanceCount': got 'four'; allowed: a whole number",
        ),
        (
            {"fsxStorageCapacityGiB": 3600},
            "setting 'fsxStorageCapacityGiB': got 3600; allowed: 1200, 2400, or a multiple of 2400",
        ),
        (
            {"fsxThroughputMBpsPerTiB": 200},
            "setting 'fsxThroughputMBpsPerTiB': got 200; allowed: 125, 250, 500, 1000",
        ),
        (
            {"availabilityZone": "us-west-2a"},
            "setting 'availabilityZone': got 'us-west-2a'; allowed: one of us-east-2a, "
            "us-east-2b, us-east-2c",
        ),
        (
            {"availabilityZone": "us-east-2d"},
            "setting 'availabilityZone': got 'us-east-2d'; allowed: one of us-east-2a, "
            "us-east-2b, us-east-2c",
        ),
        (
            {"capacityReservationId": "cr-12345"},
            "setting 'capacityReservationId': got 'cr-12345'; allowed: a Capacity Block "
            "reservation id: 'cr-' followed by 17 lowercase hex digits (or capacityPurchase=true "
            "to have the kit buy a block)",
        ),
        (
            {"orchestrator": "kubernetes"},
            "setting 'orchestrator': got 'kubernetes'; allowed: eks or slurm",
        ),
        (
            {"account": "12345"},
            "setting 'account': got '12345'; allowed: a 12-digit AWS account id",
        ),
        (
            {"secondaryAvailabilityZone": "us-east-2b"},
            "setting 'secondaryAvailabilityZone': got 'us-east-2b'; allowed: an AZ of us-east-2 "
            "other than us-east-2b",
        ),
        (
            {"vpcId": "vpc-0a1b2c3d4e5f60718"},
            "setting 'computeSubnetId': got ''; allowed: a subnet id subnet-... in us-east-2b "
            "(required with vpcId)",
        ),
        (
            {"computeSubnetId": "subnet-0a1b2c3d4e5f60718"},
            "setting 'computeSubnetId': got 'subnet-0a1b2c3d4e5f60718'; allowed: empty unless "
            "vpcId is set",
        ),
        (
            {"fsxMetadataMode": "USER_PROVISIONED", "fsxMetadataIops": 5000},
            "setting 'fsxMetadataIops': got 5000; allowed: 1500, 3000, 6000, 12000, or a multiple "
            "of 12000 up to 192000 (with fsxMetadataMode=USER_PROVISIONED)",
        ),
        (
            {"fsxMetadataIops": 3000},
            "setting 'fsxMetadataIops': got 3000; allowed: 0 unless fsxMetadataMode is "
            "USER_PROVISIONED",
        ),
        (
            {"fsxS3Path": "bucket/prefix"},
            "setting 'fsxS3Path': got 'bucket/prefix'; allowed: empty (no S3 link) or an S3 URI "
            "s3://bucket[/prefix]",
        ),
        (
            {"fsxRemovalPolicy": "snapshot"},
            "setting 'fsxRemovalPolicy': got 'snapshot'; allowed: retain or destroy",
        ),
        (
            {"fsxEfaEnabled": "yes"},
            "setting 'fsxEfaEnabled': got 'yes'; allowed: true or false",
        ),
        (
            {"logRetentionDays": 45},
            "setting 'logRetentionDays': got 45; allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, "
            "180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
        ),
        (
            {"catalogOverrides": {"trn4": {"instanceType": "trn4.48xlarge"}}},
            "setting 'catalogOverrides': got 'trn4'; allowed: catalog entries trn2, trn2u, "
            "trn3-gen1, trn3-gen2",
        ),
        (
            {"catalogOverrides": {"trn3-gen1": {"chips": 32}}},
            "setting 'catalogOverrides': got {'trn3-gen1': {'chips': 32}}; allowed: an object "
            "keyed by catalog entry (trn2, trn2u, trn3-gen1, trn3-gen2) whose values set "
            "instanceType, ultraserverType, efaNetworkCards, fp8PeakTflopsPerCore",
        ),
        (
            {"catalogOverrides": {"trn3-gen1": {"efaNetworkCards": 0}}},
            "setting 'catalogOverrides.trn3-gen1.efaNetworkCards': got 0; allowed: a whole number 1-32",
        ),
        (
            {"catalogOverrides": {"trn3-gen1": {"fp8PeakTflopsPerCore": "fast"}}},
            "setting 'catalogOverrides.trn3-gen1.fp8PeakTflopsPerCore': got 'fast'; allowed: a number "
            "of TFLOPS greater than 0 and at most 1000",
        ),
        (
            {"tags": "{not json"},
            "setting 'tags': got '{not json'; allowed: an object of string tag values, "
            'e.g. {"team": "ml-platform"}',
        ),
    ],
)
def test_invalid_values_name_setting_value_and_allowed(overrides, message):
    assert error_of(**overrides) == message


def test_unknown_setting_is_a_typo_not_ignored():
    message = error_of(instanceTyep="trn2.48xlarge")
    assert message.startswith(
        "setting 'instanceTyep' is not a setting of this kit; known settings: account, region,"
    )


def test_cdk_internal_context_keys_are_not_settings():
    config = parse(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})
    assert config.account == "123456789012"


def test_per_core_thresholds_default_to_the_burn_ins_own():
    config = parse()
    assert (config.burn_in.min_peak_fraction, config.burn_in.min_median_fraction) == (0.7, 0.9)
    assert parse(burnInMinPeakFraction="0.6").burn_in.min_peak_fraction == 0.6


def test_burn_in_settings_and_trn3_mxfp8():
    config = parse(burnInDtype="mxfp8", burnInMinHealthyFraction="0.75")
    assert config.burn_in.dtype == "mxfp8"  # the default trn3 entry has nc_matmul_mx
    assert config.burn_in.min_healthy_fraction == 0.75
    assert config.burn_in.timeout_minutes == 55
    assert (config.burn_in.replace_failed_nodes, config.burn_in.max_replacements) == (True, 1)
    assert config.burn_in.healthy_unit == "node"
    assert (config.burn_in.min_peak_fraction, config.burn_in.min_median_fraction) == (0.7, 0.9)
    assert config.burn_in.duration_seconds == 180
    assert config.burn_in.cluster_test is True
    assert config.burn_in.cluster_test_min_bus_bandwidth_fraction == 0.25


def test_orchestrator_settings_parse_lists_from_command_line_strings():
    config = parse(
        eksPublicAccessCidrs="203.0.113.0/24, 198.51.100.7/32",
        eksAdminRoleArn="arn:aws:iam::123456789012:role/PlatformAdmin",
        slurmAdditionalPolicyArns=["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"],
    )
    assert config.eks.public_access_cidrs == ("203.0.113.0/24", "198.51.100.7/32")
    assert config.eks.admin_role_arn == "arn:aws:iam::123456789012:role/PlatformAdmin"
    assert config.eks.kubernetes_version == "1.34"
    assert config.slurm.additional_policy_arns == ("arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",)
    assert config.slurm.provider_lambda_role_arn is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"burnInDtype": "mxfp8", "instanceType": "trn2.48xlarge", "instanceCount": 1},
            "setting 'burnInDtype': got 'mxfp8'; allowed: bf16 or fp8 or fp32",
        ),
        (
            {"burnInTimeoutMinutes": 90},
            "setting 'burnInTimeoutMinutes': got 90; allowed: a whole number 30-55",
        ),
        (
            {"burnInTimeoutMinutes": 20},
            "setting 'burnInTimeoutMinutes': got 20; allowed: a whole number 30-55",
        ),
        (
            {"clusterTestMinBusBandwidthFraction": 1.5},
            "setting 'clusterTestMinBusBandwidthFraction': got 1.5; allowed: a number greater "
            "than 0 and at most 1",
        ),
        (
            {"burnInMinPeakFraction": 1.5},
            "setting 'burnInMinPeakFraction': got 1.5; allowed: a number greater than 0 and at most 1",
        ),
        (
            {"burnInMinPeakFraction": "seventy"},
            "setting 'burnInMinPeakFraction': got 'seventy'; allowed: a number greater than 0 and at "
            "most 1",
        ),
        (
            {"burnInMinMedianFraction": 0},
            "setting 'burnInMinMedianFraction': got 0; allowed: a number greater than 0 and at most 1",
        ),
        (
            {"clusterTest": "maybe"},
            "setting 'clusterTest': got 'maybe'; allowed: true or false",
        ),
        (
            {"burnInMinHealthyFraction": "0"},
            "setting 'burnInMinHealthyFraction': got '0'; allowed: a number greater than 0 and "
            "at most 1",
        ),
        (
            {"imageSsmParameter": "trn-kit/ami/slurm"},
            "setting 'imageSsmParameter': got 'trn-kit/ami/slurm'; allowed: empty "
            "(ParallelCluster's image, Neuron installed at node start) or an SSM parameter name "
            "such as /trn-kit/ami/slurm",
        ),
        (
            {"orchestrator": "eks", "imageSsmParameter": "trn-kit/ami/eks"},
            "setting 'imageSsmParameter': got 'trn-kit/ami/eks'; allowed: empty (the EKS Neuron "
            "AMI) or an SSM parameter name such as /trn-kit/ami/eks",
        ),
        (
            {"eksKubernetesVersion": "1.29"},
            "setting 'eksKubernetesVersion': got '1.29'; allowed: 1.34 or 1.35",
        ),
        (
            {"eksPublicAccessCidrs": "0.0.0.0"},
            "setting 'eksPublicAccessCidrs': got ['0.0.0.0']; allowed: a list of IPv4 CIDR blocks "
            "allowed to reach the public API endpoint (empty: private endpoint only)",
        ),
        (
            {"eksAdminRoleArn": "PlatformAdmin"},
            "setting 'eksAdminRoleArn': got 'PlatformAdmin'; allowed: empty or an IAM role ARN "
            "arn:aws:iam::<account>:role/<name>",
        ),
        (
            {"slurmHeadNodeInstanceType": "big"},
            "setting 'slurmHeadNodeInstanceType': got 'big'; allowed: an EC2 instance type such "
            "as m7i.2xlarge",
        ),
    ],
)
def test_invalid_orchestrator_settings(overrides, message):
    assert error_of(**overrides) == message
