"""ami/ and TrnAmiStack: component documents, pinned versions, Image Builder resources, snapshot."""

import json
import re
import shlex
import subprocess
from datetime import datetime, timezone

import boto3
import jsonschema
import pytest
import yaml
from aws_cdk.assertions import Match, Template
from botocore.stub import Stubber
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.app import AMI_STACK_NAME
from tests.conftest import REPO, masked_template, synth
from trn_constructs.image import (
    COMPONENTS_DIR,
    IMAGE_SSM_PARAMETERS,
    VERSIONS_FILE,
    ImageLookup,
    ImageVersions,
    recipes,
)
from trn_constructs.image_lookup import index as lookup
from trn_constructs.slurm import OFFICIAL_IMAGE_NAME_PATTERN, PCLUSTER_VERSION, neuron_install

COMPONENT_SCHEMA = json.loads((REPO / "tests/schemas/imagebuilder-component.schema.json").read_text())
DOCUMENTS = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(COMPONENTS_DIR.glob("*.yaml"))}


@pytest.fixture(scope="module")
def ami_json():
    return synth().stack_template_json(AMI_STACK_NAME)


@pytest.fixture(scope="module")
def ami(ami_json):
    return Template.from_json(ami_json)


def declared_parameters(document: dict) -> set[str]:
    return {name for parameter in document.get("parameters", []) for name in parameter}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_component_document_is_valid_image_builder_yaml(name):
    document = DOCUMENTS[name]
    jsonschema.validate(document, COMPONENT_SCHEMA)
    step_names = [step["name"] for phase in document["phases"] for step in phase["steps"]]
    assert len(step_names) == len(set(step_names)), "step names must be unique"
    # A component without a test phase would ship an image nobody checked.
    assert "test" in {phase["name"] for phase in document["phases"]}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_parameter_used_is_declared_and_every_declared_one_used(name):
    text = (COMPONENTS_DIR / f"{name}.yaml").read_text()
    used = set(re.findall(r"\{\{\s*([A-Za-z0-9]+)\s*\}\}", text))
    assert used == declared_parameters(DOCUMENTS[name])


def test_schema_rejects_a_malformed_step():
    broken = {
        "name": "x",
        "schemaVersion": 1.0,
        "phases": [{"name": "build", "steps": [{"name": "Run", "action": "ExecuteBash", "inputs": {}}]}],
    }
    with pytest.raises(jsonschema.ValidationError, match="'commands' is a required property"):
        jsonschema.validate(broken, COMPONENT_SCHEMA)


def test_stack_passes_exactly_the_declared_parameters(ami_json):
    components = {
        resource["Properties"]["Name"].rsplit("-", 1)[0].removeprefix("trn-kit-"): logical_id
        for logical_id, resource in ami_json["Resources"].items()
        if resource["Type"] == "AWS::ImageBuilder::Component"
    }
    assert set(components) == set(DOCUMENTS)
    for resource in ami_json["Resources"].values():
        if resource["Type"] != "AWS::ImageBuilder::ImageRecipe":
            continue
        for configuration in resource["Properties"]["Components"]:
            (logical_id,) = [
                name for name, lid in components.items()
                if configuration["ComponentArn"] == {"Fn::GetAtt": [lid, "Arn"]}
            ]
            passed = {parameter["Name"] for parameter in configuration.get("Parameters", [])}
            assert passed == declared_parameters(DOCUMENTS[logical_id]), logical_id


def test_pinned_versions_appear_in_one_place_only():
    versions = ImageVersions.load()
    pins = [
        *versions.neuron_packages.values(),
        *versions.neuron_python_packages.values(),
        *versions.neuron_runtime_python_packages.values(),
        versions.efa_installer_sha256,
        versions.efa_installer_version,
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    for pin in pins:
        holders = [
            path for path in tracked
            if "__snapshots__" not in path
            and (REPO / path).is_file()
            and pin in (REPO / path).read_text(errors="ignore")
        ]
        assert holders == [str(VERSIONS_FILE.relative_to(REPO))], pin


def recipe_properties(ami_json, orchestrator: str) -> dict:
    (properties,) = [
        resource["Properties"]
        for resource in ami_json["Resources"].values()
        if resource["Type"] == "AWS::ImageBuilder::ImageRecipe"
        and resource["Properties"]["Name"].startswith(f"trn-kit-{orchestrator}-")
    ]
    return properties


def component_names(ami_json, properties: dict) -> list[str]:
    """The recipe's components in order, as ami/components file stems."""
    names = []
    for configuration in properties["Components"]:
        logical_id, _ = configuration["ComponentArn"]["Fn::GetAtt"]
        name = ami_json["Resources"][logical_id]["Properties"]["Name"]
        names.append(name.removeprefix("trn-kit-").rsplit("-", 1)[0])
    return names


def test_slurm_recipe_starts_from_parallelclusters_official_ami_looked_up_at_deploy(ami_json):
    slurm, _ = recipes("1.34", OFFICIAL_IMAGE_NAME_PATTERN)
    assert slurm.parent == ImageLookup(OFFICIAL_IMAGE_NAME_PATTERN)
    properties = recipe_properties(ami_json, "slurm")
    (lookup_id,) = [
        logical_id
        for logical_id, resource in ami_json["Resources"].items()
        if resource["Type"] == "Custom::TrnImageLookup"
    ]
    assert properties["ParentImage"] == {"Fn::GetAtt": [lookup_id, "ImageId"]}
    assert ami_json["Resources"][lookup_id]["Properties"]["NamePattern"] == (
        f"aws-parallelcluster-{PCLUSTER_VERSION}-ubuntu-2404-lts-hvm-x86_64*"
    )
    # Neuron the way the Slurm nodes install it and the burn-in, nothing else: the EFA and Lustre
    # of ParallelCluster's AMI stay, and are checked.
    assert component_names(ami_json, properties) == [
        "neuron-node", "trn-burnin", "inherited-efa-lustre"
    ]


def test_the_slurm_image_checks_the_efa_and_lustre_it_inherits_and_installs_nothing():
    document = DOCUMENTS["inherited-efa-lustre"]
    assert [phase["name"] for phase in document["phases"]] == ["test"]
    script = "\n".join(
        command for step in document["phases"][0]["steps"] for command in step["inputs"]["commands"]
    )
    for check in (
        "modinfo -F description efa", "/opt/amazon/efa_installed_packages",
        "/opt/amazon/efa/bin/fi_info -p efa",
        'lustre-client-modules-$(uname -r)', "modprobe lustre", "lfs --version",
        'dpkg --compare-versions "$version" ge 2.12',
    ):
        assert check in script, check
    assert not re.search(r"apt-get|efa_installer|dnf|pip ", script)


def test_no_slurm_component_reinstalls_efa_or_lustre(ami_json):
    """Neither the EFA installer nor a Lustre package runs in the Slurm image (they would depart
    from the kernel, EFA and Lustre set ParallelCluster tested)."""
    for name in component_names(ami_json, recipe_properties(ami_json, "slurm")):
        text = (COMPONENTS_DIR / f"{name}.yaml").read_text()
        assert "efa_installer" not in text, name
        assert not re.search(r"(apt-get|dnf) [^\n]*install[^\n]*lustre", text), name


def test_eks_recipe_still_starts_from_the_eks_neuron_ami(ami_json):
    properties = recipe_properties(ami_json, "eks")
    assert properties["ParentImage"] == (
        "ssm:/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/neuron/recommended/"
        "image_id"
    )
    assert component_names(ami_json, properties) == ["neuron-runtime", "efa", "lustre-client"]


def test_slurm_image_installs_exactly_what_slurm_nodes_install_at_start(ami_json, default_stack):
    (configuration,) = [
        resource["Properties"]["ClusterConfiguration"]
        for resource in default_stack.template_json["Resources"].values()
        if resource["Type"] == "Custom::PclusterCluster"
    ]
    (queue,) = configuration["Scheduling"]["SlurmQueues"]
    on_node_start = queue["CustomActions"]["OnNodeStart"]
    (node_setup,) = [
        parameters
        for component in recipe_properties(ami_json, "slurm")["Components"]
        if "NodeScriptArgs"
        in (parameters := {p["Name"]: p["Value"] for p in component.get("Parameters", [])})
    ]
    assert node_setup["NodeScriptArgs"] == [shlex.join(on_node_start["Args"])]
    assert shlex.split(node_setup["NodeScriptArgs"][0]) == list(
        neuron_install(ImageVersions.load()).args
    )
    # The same script (the asset's content hash names its object), published by each stack.
    object_name = node_setup["NodeScriptS3Uri"][0].rsplit("/", 1)[1]
    assert object_name == on_node_start["Script"].rsplit("/", 1)[1]


def test_the_parent_lookup_may_only_describe_images(ami_json):
    resources = ami_json["Resources"]
    (function_id,) = [
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"].get("Handler") == "index.on_event"
        and "Finds the newest image" in resource["Properties"].get("Description", "")
    ]
    role = resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        statement
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy"
        and {"Ref": role} in resource["Properties"]["Roles"]
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements == [{"Action": "ec2:DescribeImages", "Effect": "Allow", "Resource": "*"}]
    # Besides that, only the basic execution policy (its own logs).
    assert [
        arn["Fn::Join"][1][-1] for arn in resources[role]["Properties"]["ManagedPolicyArns"]
    ] == [":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]


def test_neuron_pins_reach_the_recipe(ami):
    versions = ImageVersions.load()
    ami.has_resource_properties(
        "AWS::ImageBuilder::ImageRecipe",
        {
            "Components": Match.array_with([
                Match.object_like({
                    "Parameters": Match.array_with([
                        {"Name": "NeuronSdkRelease", "Value": [versions.neuron_sdk_release]},
                        {"Name": "DkmsVersion", "Value": [versions.neuron_packages["aws-neuronx-dkms"]]},
                    ])
                })
            ])
        },
    )


def test_builds_on_a_non_trainium_instance_in_the_private_subnet_with_imdsv2(ami, ami_json):
    ami.has_resource_properties(
        "AWS::ImageBuilder::InfrastructureConfiguration",
        {
            "InstanceTypes": ["m7i.2xlarge"],
            "InstanceMetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            "SubnetId": {"Ref": Match.string_like_regexp("^NetworkVpcComputeSubnet")},
            "TerminateInstanceOnFailure": True,
        },
    )


def test_each_pipeline_writes_its_ami_id_to_an_ssm_parameter(ami):
    for orchestrator, parameter in IMAGE_SSM_PARAMETERS.items():
        ami.has_resource_properties(
            "AWS::ImageBuilder::DistributionConfiguration",
            {
                "Distributions": [
                    Match.object_like({
                        "SsmParameterConfigurations": [
                            {"ParameterName": parameter, "DataType": "aws:ec2:image"}
                        ],
                        "AmiDistributionConfiguration": Match.object_like(
                            {"AmiTags": {"trn-kit:orchestrator": orchestrator}}
                        ),
                    })
                ]
            },
        )
    ami.resource_count_is("AWS::ImageBuilder::ImagePipeline", 2)
    ami.has_resource_properties(
        "AWS::ImageBuilder::ImagePipeline",
        {"ImageTestsConfiguration": {"ImageTestsEnabled": True, "TimeoutMinutes": 90}},
    )


def test_build_role_reads_only_the_burn_in_archive_and_the_node_script(ami_json):
    (policy,) = [
        resource["Properties"]["PolicyDocument"]["Statement"]
        for logical_id, resource in ami_json["Resources"].items()
        if resource["Type"] == "AWS::IAM::Policy" and logical_id.startswith("ImagesBuildInstanceRole")
    ]
    assert [statement["Action"] for statement in policy] == ["s3:GetObject"]
    assert sorted(resource.rsplit(".", 1)[1] for resource in policy[0]["Resource"]) == ["sh", "zip"]
    assert "*" not in json.dumps(policy)


# The parent lookup handler, with a stubbed EC2 client.

PATTERN = "aws-parallelcluster-3.16.1-ubuntu-2404-lts-hvm-x86_64*"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def image(image_id: str, created: str, deprecated: str | None = None) -> dict:
    found = {
        "ImageId": image_id,
        "Name": f"aws-parallelcluster-3.16.1-ubuntu-2404-lts-hvm-x86_64-{created[:10]}",
        "CreationDate": created,
    }
    if deprecated:
        found["DeprecationTime"] = deprecated
    return found


@pytest.fixture
def ec2(monkeypatch):
    client = boto3.client("ec2", region_name="us-east-2")
    monkeypatch.setattr(lookup, "client", {"ec2": client}.__getitem__)
    monkeypatch.setattr(lookup, "now", lambda: NOW)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def expect_images(ec2, *pages: list[dict]) -> None:
    request = {
        "Owners": ["amazon"],
        "Filters": [
            {"Name": "name", "Values": [PATTERN]},
            {"Name": "state", "Values": ["available"]},
        ],
        "IncludeDeprecated": True,
    }
    for number, images in enumerate(pages):
        more = {"NextToken": f"page-{number + 1}"} if number + 1 < len(pages) else {}
        token = {"NextToken": f"page-{number}"} if number else {}
        ec2.add_response("describe_images", {"Images": images, **more}, {**request, **token})


def create(pattern: str = PATTERN) -> dict:
    event = {"RequestType": "Create", "ResourceProperties": {"NamePattern": pattern}}
    return lookup.on_event(event)


def test_lookup_takes_the_newest_image_across_pages(ec2):
    expect_images(
        ec2,
        [image("ami-0aaaaaaaaaaaaaaa1", "2026-10-01T10:00:00.000Z")],
        [
            image("ami-0aaaaaaaaaaaaaaa3", "2026-11-02T10:00:00.000Z"),
            image("ami-0aaaaaaaaaaaaaaa2", "2026-10-20T10:00:00.000Z"),
        ],
    )
    result = create()
    assert result["PhysicalResourceId"] == "ami-0aaaaaaaaaaaaaaa3"
    assert result["Data"] == {
        "ImageId": "ami-0aaaaaaaaaaaaaaa3",
        "ImageName": "aws-parallelcluster-3.16.1-ubuntu-2404-lts-hvm-x86_64-2026-11-02",
    }


def test_lookup_prefers_a_current_image_to_a_newer_deprecated_one(ec2):
    expect_images(
        ec2,
        [
            image("ami-0aaaaaaaaaaaaaaa1", "2026-11-20T10:00:00.000Z", "2026-11-21T00:00:00.000Z"),
            image("ami-0aaaaaaaaaaaaaaa2", "2026-10-01T10:00:00.000Z", "2027-10-01T00:00:00.000Z"),
        ],
    )
    assert create()["Data"]["ImageId"] == "ami-0aaaaaaaaaaaaaaa2"


def test_lookup_still_finds_an_old_versions_deprecated_image(ec2):
    old = image("ami-0aaaaaaaaaaaaaaa1", "2024-01-01T10:00:00.000Z", "2026-01-01T00:00:00.000Z")
    expect_images(ec2, [old])
    assert create()["Data"]["ImageId"] == "ami-0aaaaaaaaaaaaaaa1"


def test_lookup_breaks_a_creation_date_tie_by_image_id(ec2):
    expect_images(
        ec2,
        [
            image("ami-0aaaaaaaaaaaaaaa1", "2026-11-02T10:00:00.000Z"),
            image("ami-0aaaaaaaaaaaaaaa2", "2026-11-02T10:00:00.000Z"),
        ],
    )
    assert create()["Data"]["ImageId"] == "ami-0aaaaaaaaaaaaaaa2"


def test_lookup_fails_when_nothing_matches(ec2):
    expect_images(ec2, [])
    with pytest.raises(RuntimeError, match=r"no available image owned by amazon is named like"):
        create()


def test_deleting_the_lookup_calls_nothing(ec2):
    event = {"RequestType": "Delete", "PhysicalResourceId": "ami-0aaaaaaaaaaaaaaa1"}
    assert lookup.on_event(event) == {"PhysicalResourceId": "ami-0aaaaaaaaaaaaaaa1"}


def test_snapshot(ami_json, snapshot):
    # A recipe's name hashes its parameters, asset URLs included: it follows any byte of trn_burnin.
    text = re.sub(r'"trn-kit-(slurm|eks)-[0-9a-f]{10}"', r'"trn-kit-\1-<hash>"', json.dumps(ami_json))
    assert masked_template(json.loads(text)) == snapshot.use_extension(JSONSnapshotExtension)


def test_a_changed_pin_renames_the_recipe_that_carries_it(monkeypatch, ami_json):
    # Image Builder recipes cannot be updated in place: a new pin must yield a new recipe name.
    from dataclasses import replace

    from trn_constructs import image

    def recipe_names(template_json):
        return {
            r["Properties"]["Name"]
            for r in template_json["Resources"].values()
            if r["Type"] == "AWS::ImageBuilder::ImageRecipe"
        }

    original = ImageVersions.load()
    # The release reaches both recipes (the Slurm one through its node script's arguments).
    bumped = replace(original, neuron_sdk_release="9.9.9")
    monkeypatch.setattr(image.ImageVersions, "load", classmethod(lambda cls, path=None: bumped))
    changed = synth(tags={"pin-probe": "1"}).stack_template_json(AMI_STACK_NAME)
    assert recipe_names(changed).isdisjoint(recipe_names(ami_json))
