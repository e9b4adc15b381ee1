"""ami/ and TrnAmiStack: component documents, pinned versions, Image Builder resources, snapshot."""

import json
import re
import subprocess

import jsonschema
import pytest
import yaml
from aws_cdk.assertions import Match, Template
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.app import AMI_STACK_NAME
from tests.conftest import REPO, mask_asset_hashes, synth
from trn_constructs.image import (
    COMPONENTS_DIR,
    IMAGE_SSM_PARAMETERS,
    VERSIONS_FILE,
    ImageVersions,
    recipes,
)

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
    pins = [*versions.neuron_packages.values(), versions.efa_installer_sha256, versions.efa_installer_version]
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


def test_recipes_start_from_the_neuron_images_and_add_components_in_order(ami_json):
    by_parent = {
        resource["Properties"]["ParentImage"]: resource["Properties"]
        for resource in ami_json["Resources"].values()
        if resource["Type"] == "AWS::ImageBuilder::ImageRecipe"
    }
    expected = {recipe.parent_image: recipe for recipe in recipes("1.34")}
    assert set(by_parent) == set(expected) == {
        "ssm:/aws/service/neuron/dlami/base/ubuntu-24.04/latest/image_id",
        "ssm:/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/neuron/recommended/image_id",
    }
    slurm = expected["ssm:/aws/service/neuron/dlami/base/ubuntu-24.04/latest/image_id"]
    assert slurm.components == ("neuron-runtime", "efa", "lustre-client", "trn-burnin")
    for parent, properties in by_parent.items():
        assert len(properties["Components"]) == len(expected[parent].components)


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


def test_build_role_reads_only_the_burn_in_archive(ami_json):
    (policy,) = [
        resource["Properties"]["PolicyDocument"]["Statement"]
        for logical_id, resource in ami_json["Resources"].items()
        if resource["Type"] == "AWS::IAM::Policy" and logical_id.startswith("ImagesBuildInstanceRole")
    ]
    assert [statement["Action"] for statement in policy] == ["s3:GetObject"]
    assert "*" not in json.dumps(policy)


def test_snapshot(ami_json, snapshot):
    masked = json.loads(mask_asset_hashes(json.dumps(ami_json, sort_keys=True)))
    assert masked == snapshot.use_extension(JSONSnapshotExtension)
