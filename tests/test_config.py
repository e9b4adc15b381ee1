"""Configuration parsing: defaults, -c string forms, overrides, and every validation message."""

import pytest
from aws_cdk.aws_logs import RetentionDays

from tests.conftest import context_with
from trn_constructs.config import ConfigError, parse_config
from trn_constructs.settings import SETTINGS


def parse(**overrides):
    return parse_config(context_with(overrides))


def errors_of(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(**overrides)
    return list(raised.value.lines)


def error_of(**overrides) -> str:
    """The one line of a configuration with one mistake."""
    (line,) = errors_of(**overrides)
    return line


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
            "us-east-2b, us-east-2c; us-west-2a is in us-west-2, not in region us-east-2: "
            "availabilityZone must change with region",
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
            'e.g. {"team": "ml-platform"} (not valid JSON: Expecting property name enclosed in '
            "double quotes: line 1 column 2 (char 1))",
        ),
    ],
)
def test_invalid_values_name_setting_value_and_allowed(overrides, message):
    assert error_of(**overrides) == message


def test_an_imported_vpc_needs_both_subnets():
    assert errors_of(vpcId="vpc-0a1b2c3d4e5f60718") == [
        "setting 'computeSubnetId': got ''; allowed: a subnet id subnet-... in us-east-2b "
        "(required with vpcId)",
        "setting 'secondarySubnetId': got ''; allowed: a subnet id subnet-... in us-east-2a "
        "(required with vpcId)",
    ]


def test_cdk_internal_context_keys_are_not_settings():
    config = parse(**{
        "@aws-cdk/core:newStyleStackSynthesis": True,
        "aws:cdk:enable-path-metadata": True,
        "availability-zones:account=123456789012:region=us-east-2": ["us-east-2a"],
        "acknowledged-issue-numbers": [32775],
        "cli-telemetry": False,
    })
    assert config.account == "123456789012"


@pytest.mark.parametrize("key", ["InstanceType", "instance_type", "instance-type", "instanceTyep"])
def test_an_unknown_key_in_any_spelling_is_an_error_that_names_the_setting(key):
    assert error_of(**{key: "trn2.48xlarge"}) == (
        f"setting '{key}' is not a setting of this kit; did you mean 'instanceType'?"
    )


def test_an_unknown_key_like_no_setting_lists_the_settings():
    assert error_of(nodes=3) == (
        "setting 'nodes' is not a setting of this kit; known settings: " + ", ".join(SETTINGS)
    )


def test_a_misspelled_setting_is_not_judged_by_the_default_it_meant_to_replace():
    # instanceCount 2 does not fill the default trn3.48xlarge's UltraServers of 4; the user meant trn2.
    assert errors_of(instance_type="trn2.48xlarge", instanceCount=2) == [
        "setting 'instance_type' is not a setting of this kit; did you mean 'instanceType'?"
    ]


def test_every_mistake_of_a_synth_is_a_line_of_its_own():
    assert errors_of(
        instance_count=4,
        orchestrator="nomad",
        instanceCount="six",
        fsxThroughputMBpsPerTiB=200,
        tags={"aws:team": "ml"},
        eksPublicAccessCidrs="300.1.1.1/99",
        burnInTimeoutMinutes=90,
    ) == [
        "setting 'instance_count' is not a setting of this kit; did you mean 'instanceCount'?",
        "setting 'orchestrator': got 'nomad'; allowed: eks or slurm",
        "setting 'instanceCount': got 'six'; allowed: a whole number",
        "setting 'fsxThroughputMBpsPerTiB': got 200; allowed: 125, 250, 500, 1000",
        "setting 'tags': got 'aws:team'; allowed: tag keys not starting with aws: in any case (AWS "
        "reserves the prefix)",
        "setting 'burnInTimeoutMinutes': got 90; allowed: a whole number 30-55",
        "setting 'eksPublicAccessCidrs': got '300.1.1.1/99'; allowed: IPv4 CIDR blocks such as "
        "203.0.113.0/24 (Octet 300 (> 255) not permitted in '300.1.1.1')",
    ]


def test_a_rule_involving_a_setting_that_failed_is_skipped():
    # Count, data type and healthy unit are judged against the instance type, which failed.
    assert errors_of(
        instanceType="p5.48xlarge", instanceCount=6, burnInDtype="mxfp8", burnInHealthyUnit="ultraserver"
    ) == [
        "setting 'instanceType': got 'p5.48xlarge'; allowed: trn2.48xlarge, trn2u.48xlarge, "
        "trn3.48xlarge, trn3p.16xlarge"
    ]


TAG_CHARACTERS = "letters, digits, spaces and _ . : / = + - @"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"tags": {"aws:team": "ml"}},
            "setting 'tags': got 'aws:team'; allowed: tag keys not starting with aws: in any case (AWS "
            "reserves the prefix)",
        ),
        (
            {"tags": '{"AWS:Team": "ml"}'},
            "setting 'tags': got 'AWS:Team'; allowed: tag keys not starting with aws: in any case (AWS "
            "reserves the prefix)",
        ),
        (
            {"tags": {"team": "Aws:ml"}},
            "setting 'tags.team': got 'Aws:ml'; allowed: a tag value not starting with aws: in any case "
            "(AWS reserves the prefix)",
        ),
        (
            {"tags": {"trn-kit:stack-id": "mine"}},
            "setting 'tags': got 'trn-kit:stack-id'; allowed: tag keys not starting with trn-kit: in any "
            "case (the kit's own tags)",
        ),
        (
            {"tags": {"parallelcluster:queue": "q"}},
            "setting 'tags': got 'parallelcluster:queue'; allowed: tag keys not starting with "
            "parallelcluster: on slurm (ParallelCluster reserves the prefix)",
        ),
        ({"tags": {"": "ml"}}, "setting 'tags': got ''; allowed: tag keys of 1-128 characters"),
        (
            {"tags": {"k" * 129: "ml"}},
            f"setting 'tags': got '{'k' * 129}'; allowed: tag keys of at most 128 characters",
        ),
        ({"tags": {"team#1": "ml"}}, f"setting 'tags': got 'team#1'; allowed: tag keys of {TAG_CHARACTERS}"),
        (
            {"tags": {"team": "v" * 257}},
            f"setting 'tags.team': got '{'v' * 257}'; allowed: a tag value of at most 256 characters",
        ),
        (
            {"tags": {"team": "ml;infra"}},
            f"setting 'tags.team': got 'ml;infra'; allowed: a tag value of {TAG_CHARACTERS}",
        ),
        (
            {"tags": {f"key{i}": "v" for i in range(41)}},
            "setting 'tags': got 41; allowed: at most 40 tags (ParallelCluster's limit on slurm)",
        ),
        (
            {"tags": {f"key{i}": "v" for i in range(51)}, "orchestrator": "eks"},
            "setting 'tags': got 51; allowed: at most 50 tags (AWS's limit per resource)",
        ),
    ],
)
def test_tags_follow_aws_tag_rules(overrides, message):
    assert error_of(**overrides) == message


def test_tags_within_aws_rules_are_accepted():
    tags = {"cost-center": "ML Platform/42", "team.name": "a+b=c@d:e_f", "Ünïcode": "värde", "empty": ""}
    assert parse(tags=tags).tags == tags
    # ParallelCluster's prefix is its own only on Slurm.
    assert parse(orchestrator="eks", tags={"parallelcluster:queue": "q"}).tags == {"parallelcluster:queue": "q"}


CIDRS = "IPv4 CIDR blocks such as 203.0.113.0/24"
VPC_CIDR = "a private /16 IPv4 block such as 10.0.0.0/16"


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        (
            {"eksPublicAccessCidrs": "300.1.1.1/99"},
            [f"setting 'eksPublicAccessCidrs': got '300.1.1.1/99'; allowed: {CIDRS} (Octet 300 (> 255) not "
             "permitted in '300.1.1.1')"],
        ),
        (
            {"eksPublicAccessCidrs": "10.0.0.1/16, 203.0.113.0/24, 198.51.100.7/33"},
            [
                f"setting 'eksPublicAccessCidrs': got '10.0.0.1/16'; allowed: {CIDRS} (10.0.0.1/16 has host "
                "bits set)",
                f"setting 'eksPublicAccessCidrs': got '198.51.100.7/33'; allowed: {CIDRS} ('33' is not a valid "
                "netmask)",
            ],
        ),
        (
            {"eksPublicAccessCidrs": ["203.0.113.0/255.255.255.0"]},
            [f"setting 'eksPublicAccessCidrs': got '203.0.113.0/255.255.255.0'; allowed: {CIDRS} (write it "
             "as 203.0.113.0/24)"],
        ),
        (
            {"vpcCidr": "10.0.0.1/16"},
            [f"setting 'vpcCidr': got '10.0.0.1/16'; allowed: {VPC_CIDR} (10.0.0.1/16 has host bits set)"],
        ),
        (
            {"vpcCidr": "10.300.0.0/16"},
            [f"setting 'vpcCidr': got '10.300.0.0/16'; allowed: {VPC_CIDR} (Octet 300 (> 255) not permitted "
             "in '10.300.0.0')"],
        ),
        ({"vpcCidr": "10.0.0.0/24"}, [f"setting 'vpcCidr': got '10.0.0.0/24'; allowed: {VPC_CIDR}"]),
        ({"vpcCidr": "100.64.0.0/16"}, [f"setting 'vpcCidr': got '100.64.0.0/16'; allowed: {VPC_CIDR}"]),
    ],
)
def test_malformed_cidrs_say_what_is_wrong(overrides, messages):
    assert errors_of(**overrides) == messages


def test_cidr_lists_take_json_from_the_command_line():
    config = parse(eksPublicAccessCidrs='["203.0.113.0/24", "198.51.100.7/32"]', vpcCidr="172.31.0.0/16")
    assert config.eks.public_access_cidrs == ("203.0.113.0/24", "198.51.100.7/32")
    assert config.network.vpc_cidr == "172.31.0.0/16"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"catalogOverrides": '{"trn3-gen1": {"instanceType": '},
            "setting 'catalogOverrides': got '{\"trn3-gen1\": {\"instanceType\":'; allowed: an object keyed by "
            "catalog entry (trn2, trn2u, trn3-gen1, trn3-gen2) whose values set instanceType, ultraserverType, "
            "efaNetworkCards, fp8PeakTflopsPerCore (not valid JSON: Expecting value: line 1 column 32 (char 31))",
        ),
        (
            {"eksPublicAccessCidrs": '["203.0.113.0/24"'},
            "setting 'eksPublicAccessCidrs': got '[\"203.0.113.0/24\"'; allowed: a list of IPv4 CIDR blocks "
            "allowed to reach the public API endpoint (empty: private endpoint only) (not valid JSON: Expecting "
            "',' delimiter: line 1 column 18 (char 17))",
        ),
        (
            {"tags": '["team"]'},
            "setting 'tags': got '[\"team\"]'; allowed: an object of string tag values, e.g. "
            '{"team": "ml-platform"}',
        ),
    ],
)
def test_unparseable_json_says_why(overrides, message):
    assert error_of(**overrides) == message


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        (
            {"catalogOverrides": {"trn3-gen2": {"instanceType": "trn3.48xlarge"}}},
            ["setting 'catalogOverrides.trn3-gen2.instanceType': got 'trn3.48xlarge'; allowed: an instance "
             "type no other catalog entry has (trn3-gen1 has trn3.48xlarge)"],
        ),
        (
            {"catalogOverrides": {"trn3-gen1": {"instanceType": "trn3x.48xlarge"},
                                  "trn3-gen2": {"instanceType": "trn3x.48xlarge"}}},
            [
                "setting 'catalogOverrides.trn3-gen1.instanceType': got 'trn3x.48xlarge'; allowed: an instance "
                "type no other catalog entry has (trn3-gen2 has trn3x.48xlarge)",
                "setting 'catalogOverrides.trn3-gen2.instanceType': got 'trn3x.48xlarge'; allowed: an instance "
                "type no other catalog entry has (trn3-gen1 has trn3x.48xlarge)",
            ],
        ),
    ],
)
def test_a_catalog_override_may_not_give_two_entries_one_instance_type(overrides, messages):
    assert errors_of(**overrides) == messages


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"region": "eu-west-1"},
            "setting 'availabilityZone': got 'us-east-2b'; allowed: an Availability Zone name of eu-west-1 "
            "(eu-west-1 followed by one letter); us-east-2b is in us-east-2, not in region eu-west-1: "
            "availabilityZone must change with region",
        ),
        (
            {"region": "us-west-2"},
            "setting 'availabilityZone': got 'us-east-2b'; allowed: one of us-west-2a, us-west-2b, us-west-2c, "
            "us-west-2d; us-east-2b is in us-east-2, not in region us-west-2: availabilityZone must change with "
            "region",
        ),
        (
            {"region": "us-west-2", "availabilityZone": "us-west-2d", "secondaryAvailabilityZone": "us-east-2a"},
            "setting 'secondaryAvailabilityZone': got 'us-east-2a'; allowed: one of us-west-2a, us-west-2b, "
            "us-west-2c, us-west-2d; us-east-2a is in us-east-2, not in region us-west-2: "
            "secondaryAvailabilityZone must change with region",
        ),
        (
            {"region": "eu-west-1", "availabilityZone": "eu-west-1a"},
            "setting 'secondaryAvailabilityZone': got ''; allowed: an Availability Zone of eu-west-1 other than "
            "eu-west-1a (the kit knows no zones of eu-west-1 to choose one from)",
        ),
    ],
)
def test_zones_change_with_region(overrides, message):
    assert error_of(**overrides) == message


def test_a_region_the_kit_knows_no_zones_of_takes_both_zones():
    config = parse(region="eu-west-1", availabilityZone="eu-west-1a", secondaryAvailabilityZone="eu-west-1c")
    assert config.network.availability_zones == ("eu-west-1a", "eu-west-1c")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"account": 123456789012},
            "setting 'account': got 123456789012; allowed: a 12-digit AWS account id (a string: in cdk.json, "
            "in quotes)",
        ),
        ({"burnInDtype": "bf61"}, "setting 'burnInDtype': got 'bf61'; allowed: bf16 or fp8 or fp32 or mxfp8"),
        (
            {"slurmAdditionalPolicyArns": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess, S3ReadOnly"},
            "setting 'slurmAdditionalPolicyArns': got 'S3ReadOnly'; allowed: a list of IAM policy ARNs",
        ),
    ],
)
def test_values_of_the_wrong_form(overrides, message):
    assert error_of(**overrides) == message


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
            "(slurm: ParallelCluster's image, Neuron installed at node start; eks: the EKS Neuron "
            "AMI) or an SSM parameter name such as /trn-kit/ami/slurm or /trn-kit/ami/eks",
        ),
        (
            {"orchestrator": "eks", "imageSsmParameter": "trn-kit/ami/eks"},
            "setting 'imageSsmParameter': got 'trn-kit/ami/eks'; allowed: empty "
            "(slurm: ParallelCluster's image, Neuron installed at node start; eks: the EKS Neuron "
            "AMI) or an SSM parameter name such as /trn-kit/ami/slurm or /trn-kit/ami/eks",
        ),
        (
            {"eksKubernetesVersion": "1.29"},
            "setting 'eksKubernetesVersion': got '1.29'; allowed: 1.34 or 1.35",
        ),
        (
            {"eksPublicAccessCidrs": "0.0.0.0"},
            "setting 'eksPublicAccessCidrs': got '0.0.0.0'; allowed: IPv4 CIDR blocks such as "
            "203.0.113.0/24 (write it as 0.0.0.0/32)",
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
