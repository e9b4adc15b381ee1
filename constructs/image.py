"""Image: EC2 Image Builder pipelines for the kit's pinned Neuron machine images.

The component documents and the pinned versions live under ``ami/`` at the repository root; this
module only loads them, so the recipe is reviewable as plain YAML and the versions sit in one file.
The Slurm image starts from ParallelCluster's official AMI (ParallelCluster boots nothing else),
found at deploy time by a small read-only lookup, and bakes in the Slurm nodes' own Neuron install
script, so its nodes start with nothing left to install.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_imagebuilder as imagebuilder
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from trn_constructs.findings import acknowledge, managed_policy_finding
from trn_constructs.handlers import read_only_lookup

AMI_DIR = Path(__file__).resolve().parent.parent / "ami"
COMPONENTS_DIR = AMI_DIR / "components"
VERSIONS_FILE = AMI_DIR / "versions.json"
BURN_IN_DIR = Path(__file__).resolve().parent.parent / "trn_burnin"
IMAGE_LOOKUP_HANDLER_DIR = Path(__file__).resolve().parent / "image_lookup"

# Where each image's AMI id lands; `imageSsmParameter` in cdk.json points the cluster at one.
IMAGE_SSM_PARAMETERS: Mapping[str, str] = {"slurm": "/trn-kit/ami/slurm", "eks": "/trn-kit/ami/eks"}

MANAGED_POLICIES = ("AmazonSSMManagedInstanceCore", "EC2InstanceProfileForImageBuilder")

# Build hosts need no Trainium: the DKMS module builds against kernel headers, not a device.
BUILD_INSTANCE_TYPES = ("m7i.2xlarge",)


@dataclass(frozen=True)
class ImageVersions:
    """The pins in ami/versions.json."""

    neuron_sdk_release: str
    neuron_packages: Mapping[str, str]
    neuron_python_packages: Mapping[str, str]
    neuron_runtime_python_packages: Mapping[str, str]  # nrtpy, apart from nki
    efa_installer_version: str
    efa_installer_sha256: str
    burn_in_python_packages: Mapping[str, str]

    @classmethod
    def load(cls, path: Path = VERSIONS_FILE) -> "ImageVersions":
        raw = json.loads(path.read_text())
        return cls(
            neuron_sdk_release=raw["neuronSdkRelease"],
            neuron_packages=raw["neuronPackages"],
            neuron_python_packages=raw["neuronPythonPackages"],
            neuron_runtime_python_packages=raw["neuronRuntimePythonPackages"],
            efa_installer_version=raw["efaInstaller"]["version"],
            efa_installer_sha256=raw["efaInstaller"]["sha256"],
            burn_in_python_packages=raw["burnInPythonPackages"],
        )


@dataclass(frozen=True)
class NodeScript:
    """A script that sets a node up, with its arguments; the same arguments plus ``--check`` only
    verify. The neuron-node component runs it at build time and checks in the test phase."""

    path: Path
    args: tuple[str, ...]


@dataclass(frozen=True)
class ImageLookup:
    """The newest available image Amazon owns named like ``name_pattern``, found at deploy time."""

    name_pattern: str


@dataclass(frozen=True)
class Recipe:
    """One image: what it starts from and which components, in order, it adds.

    ``parent`` is what Image Builder takes as a parent image (an ``ssm:`` parameter, an AMI id) or
    an image to look up.
    """

    orchestrator: str
    parent: str | ImageLookup
    components: tuple[str, ...]


def recipes(kubernetes_version: str, parallelcluster_image_name: str) -> tuple[Recipe, ...]:
    return (
        # ParallelCluster boots only its own images and images made from them: the Slurm image is
        # its official AMI plus what the Slurm nodes install at start, and the burn-in. The AMI
        # already has the EFA driver, libfabric and Lustre client ParallelCluster tested with its
        # kernel; the image keeps them (no EFA installer run, no Lustre packages) and its test
        # phase checks they are still there for the kernel it boots.
        Recipe(
            "slurm",
            ImageLookup(parallelcluster_image_name),
            ("neuron-node", "trn-burnin", "inherited-efa-lustre"),
        ),
        # EKS nodes run the burn-in in a container, so their image carries no copy of it. The EKS
        # Neuron AMI has the Neuron driver and tools and a minimal EFA install, no Lustre client.
        Recipe(
            "eks",
            f"ssm:/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/x86_64/"
            "neuron/recommended/image_id",
            ("neuron-runtime", "efa", "lustre-client"),
        ),
    )


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


class NeuronImageBuilder(Construct):
    """Image Builder components, recipes and pipelines, one pipeline per orchestrator.

    Image Builder components and recipes are immutable per name and version, so their names carry
    a hash of their content: changing a document or a pin creates new ones instead of failing.
    Infrastructure and distribution configurations and pipelines are updatable and keep their names.

    Attributes:
        pipelines: the CfnImagePipeline per orchestrator.
        ssm_parameters: the SSM parameter name each pipeline writes its AMI id to.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        subnet: ec2.ISubnet,
        security_group: ec2.ISecurityGroup,
        kubernetes_version: str,
        parallelcluster_image_name: str,
        slurm_node_script: NodeScript,
        versions: ImageVersions,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        burn_in = s3_assets.Asset(
            self, "BurnInPackage", path=str(BURN_IN_DIR), exclude=["__pycache__", "*.pyc"]
        )
        node_script = s3_assets.Asset(self, "SlurmNodeScript", path=str(slurm_node_script.path))
        parameters = self._component_parameters(
            versions, burn_in, node_script, slurm_node_script.args
        )
        components = {
            path.stem: self._component(path) for path in sorted(COMPONENTS_DIR.glob("*.yaml"))
        }

        role = iam.Role(
            self,
            "BuildInstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="Image Builder build and test instances for the kit's Neuron images",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(policy) for policy in MANAGED_POLICIES
            ],
        )
        # The objects the build needs, rather than grant_read's wildcards on the asset bucket.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    asset.bucket.arn_for_objects(asset.s3_object_key)
                    for asset in (burn_in, node_script)
                ],
            )
        )
        for policy in MANAGED_POLICIES:
            acknowledge(
                role,
                managed_policy_finding(policy),
                "The AWS-managed SSM and Image Builder instance policies are what Image Builder "
                "documents for build instances; they track the service's own needs",
            )
        profile = iam.InstanceProfile(self, "BuildInstanceProfile", role=role)
        infrastructure = imagebuilder.CfnInfrastructureConfiguration(
            self,
            "Infrastructure",
            name=f"{Stack.of(self).stack_name}-build",
            instance_profile_name=profile.instance_profile_name,
            instance_types=list(BUILD_INSTANCE_TYPES),
            subnet_id=subnet.subnet_id,
            security_group_ids=[security_group.security_group_id],
            instance_metadata_options=imagebuilder.CfnInfrastructureConfiguration.InstanceMetadataOptionsProperty(
                http_tokens="required", http_put_response_hop_limit=1
            ),
            terminate_instance_on_failure=True,
        )

        self.pipelines: dict[str, imagebuilder.CfnImagePipeline] = {}
        self.ssm_parameters: dict[str, str] = {}
        for recipe in recipes(kubernetes_version, parallelcluster_image_name):
            if isinstance(recipe.parent, ImageLookup):
                parent = self._look_up(recipe.orchestrator, recipe.parent, log_retention)
            else:
                parent = recipe.parent
            self.pipelines[recipe.orchestrator] = self._pipeline(
                recipe, parent, components, parameters, infrastructure
            )
            self.ssm_parameters[recipe.orchestrator] = IMAGE_SSM_PARAMETERS[recipe.orchestrator]

    def _look_up(
        self, orchestrator: str, lookup: ImageLookup, log_retention: logs.RetentionDays
    ) -> str:
        """The image's id, found when the stack is deployed (the lookup runs again only when the
        name pattern changes, so the parent stays fixed until then)."""
        name = f"{orchestrator.capitalize()}ParentImage"
        # A Lambda rather than an AwsCustomResource: the API call returns every match unordered,
        # and picking the newest needs code.
        image = read_only_lookup(
            self,
            name,
            handler_dir=IMAGE_LOOKUP_HANDLER_DIR,
            action="ec2:DescribeImages",
            reason="ec2:DescribeImages has no resource-level permissions; the lookup only reads",
            description=f"Finds the newest image named {lookup.name_pattern}",
            resource_type="Custom::TrnImageLookup",
            properties={"NamePattern": lookup.name_pattern},
            log_retention=log_retention,
        )
        return image.get_att_string("ImageId")

    @staticmethod
    def _component_parameters(
        versions: ImageVersions,
        burn_in: s3_assets.Asset,
        node_script: s3_assets.Asset,
        node_script_args: tuple[str, ...],
    ) -> Mapping[str, Mapping[str, str]]:
        """Values for each component's declared parameters, all from ami/versions.json."""
        packages = versions.neuron_packages
        return {
            "neuron-node": {
                "NodeScriptS3Uri": node_script.s3_object_url,
                "NodeScriptArgs": shlex.join(node_script_args),
            },
            "neuron-runtime": {
                "NeuronSdkRelease": versions.neuron_sdk_release,
                "DkmsVersion": packages["aws-neuronx-dkms"],
                "RuntimeLibVersion": packages["aws-neuronx-runtime-lib"],
                "CollectivesVersion": packages["aws-neuronx-collectives"],
                "ToolsVersion": packages["aws-neuronx-tools"],
            },
            "efa": {
                "EfaInstallerVersion": versions.efa_installer_version,
                "EfaInstallerSha256": versions.efa_installer_sha256,
            },
            "lustre-client": {},
            "inherited-efa-lustre": {},
            "trn-burnin": {
                "BurnInArchiveS3Uri": burn_in.s3_object_url,
                "Boto3Version": versions.burn_in_python_packages["boto3"],
            },
        }

    def _component(self, path: Path) -> imagebuilder.CfnComponent:
        document = path.read_text()
        return imagebuilder.CfnComponent(
            self,
            f"Component-{path.stem}",
            name=f"trn-kit-{path.stem}-{_short_hash(document)}",
            platform="Linux",
            version="1.0.0",
            data=document,
            description=f"trn-cluster-kit ami/components/{path.name}",
        )

    def _pipeline(
        self,
        recipe: Recipe,
        parent: str,
        components: Mapping[str, imagebuilder.CfnComponent],
        parameters: Mapping[str, Mapping[str, str]],
        infrastructure: imagebuilder.CfnInfrastructureConfiguration,
    ) -> imagebuilder.CfnImagePipeline:
        name = recipe.orchestrator.capitalize()
        # A looked-up parent is named by its pattern: the lookup changes the parent only when the
        # pattern changes.
        parent_key = (
            recipe.parent.name_pattern if isinstance(recipe.parent, ImageLookup) else recipe.parent
        )
        image_recipe = imagebuilder.CfnImageRecipe(
            self,
            f"{name}Recipe",
            # Recipes are immutable per name and version: the name covers everything a recipe
            # carries, parameter values (pins, asset URLs) included.
            name=f"trn-kit-{recipe.orchestrator}-"
            + _short_hash(
                parent_key,
                *(components[c].name for c in recipe.components),
                json.dumps(
                    Stack.of(self).resolve({c: parameters[c] for c in recipe.components}),
                    sort_keys=True,
                ),
            ),
            version="1.0.0",
            parent_image=parent,
            components=[
                imagebuilder.CfnImageRecipe.ComponentConfigurationProperty(
                    component_arn=components[component].attr_arn,
                    parameters=[
                        imagebuilder.CfnImageRecipe.ComponentParameterProperty(
                            name=key, value=[value]
                        )
                        for key, value in parameters[component].items()
                    ]
                    or None,
                )
                for component in recipe.components
            ],
        )
        distribution = imagebuilder.CfnDistributionConfiguration(
            self,
            f"{name}Distribution",
            name=f"{Stack.of(self).stack_name}-{recipe.orchestrator}",
            distributions=[
                imagebuilder.CfnDistributionConfiguration.DistributionProperty(
                    region=Stack.of(self).region,
                    ami_distribution_configuration={
                        "Name": f"trn-kit-{recipe.orchestrator}-{{{{ imagebuilder:buildDate }}}}",
                        "AmiTags": {"trn-kit:orchestrator": recipe.orchestrator},
                    },
                    ssm_parameter_configurations=[
                        imagebuilder.CfnDistributionConfiguration.SsmParameterConfigurationProperty(
                            parameter_name=IMAGE_SSM_PARAMETERS[recipe.orchestrator],
                            data_type="aws:ec2:image",
                        )
                    ],
                )
            ],
        )
        return imagebuilder.CfnImagePipeline(
            self,
            f"{name}Pipeline",
            name=f"{Stack.of(self).stack_name}-{recipe.orchestrator}",
            description=f"Pinned Neuron image for {recipe.orchestrator} Trainium nodes",
            image_recipe_arn=image_recipe.attr_arn,
            infrastructure_configuration_arn=infrastructure.attr_arn,
            distribution_configuration_arn=distribution.attr_arn,
            image_tests_configuration=imagebuilder.CfnImagePipeline.ImageTestsConfigurationProperty(
                image_tests_enabled=True, timeout_minutes=90
            ),
            enhanced_image_metadata_enabled=True,
        )
