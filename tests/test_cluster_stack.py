"""TrnClusterStack wiring: environment, capacity outputs, tags."""

from tests.conftest import synth


def test_outputs_carry_the_capacity_seam_with_descriptions(default_stack):
    template = default_stack.template
    expected = {
        "CapacityReservationId": "cr-0123456789abcdef0",
        "CapacityAvailabilityZone": "us-east-2b",
        "InstanceType": "trn3.48xlarge",
        "InstanceCount": "4",
    }
    for name, value in expected.items():
        template.has_output(name, {"Value": value})
    # CDK's own outputs carry the references between the two stacks; every one of the kit's says what it is.
    outputs = {k: v for k, v in default_stack.template_json["Outputs"].items() if not k.startswith("PublishOutput")}
    assert all(output.get("Description") for output in outputs.values())
    assert {"VpcId", "ComputeSubnetId", "FileSystemId", "FileSystemMountName"} <= set(outputs)


def test_user_tags_reach_resources():
    template = synth(tags={"team": "ml-platform"}).template
    template.has_resource_properties(
        "AWS::FSx::FileSystem",
        {"Tags": [{"Key": "team", "Value": "ml-platform"}]},
    )


def test_environment_is_explicit_and_no_lookup_was_needed(default_stack):
    manifest = (default_stack.outdir / "manifest.json").read_text()
    assert "aws://123456789012/us-east-2" in manifest
    assert '"missing"' not in manifest  # no context lookup pending
