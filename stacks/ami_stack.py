"""TrnAmiStack: EC2 Image Builder pipelines for the kit's pinned Neuron machine images."""

from __future__ import annotations

from aws_cdk import CfnOutput
from constructs import Construct

from stacks.base import KitStack
from trn_constructs.config import ClusterConfig
from trn_constructs.image import ImageVersions, NeuronImageBuilder
from trn_constructs.network import Network
from trn_constructs.slurm import OFFICIAL_IMAGE_NAME_PATTERN, neuron_install


class TrnAmiStack(KitStack):
    """Builds images in the same kind of private network the cluster uses; deploy it on its own."""

    def __init__(self, scope: Construct, construct_id: str, *, config: ClusterConfig) -> None:
        versions = ImageVersions.load()
        super().__init__(
            scope,
            construct_id,
            config=config,
            description=f"Neuron machine images (Neuron SDK {versions.neuron_sdk_release})",
        )
        network = Network(self, "Network", config=config.network, log_retention=config.log_retention)
        self.images = NeuronImageBuilder(
            self,
            "Images",
            subnet=network.compute_subnet,
            security_group=network.node_security_group,
            kubernetes_version=config.eks.kubernetes_version,
            parallelcluster_image_name=OFFICIAL_IMAGE_NAME_PATTERN,
            slurm_node_script=neuron_install(versions),
            versions=versions,
            log_retention=config.log_retention,
        )
        for orchestrator, pipeline in self.images.pipelines.items():
            name = orchestrator.capitalize()
            CfnOutput(
                self,
                f"{name}ImagePipelineArn",
                value=pipeline.attr_arn,
                description=f"Image Builder pipeline of the {orchestrator} node image",
            )
            CfnOutput(
                self,
                f"{name}ImageBuildCommand",
                value=f"aws imagebuilder start-image-pipeline-execution --region {self.region} "
                f"--image-pipeline-arn {pipeline.attr_arn}",
                description=f"Builds the {orchestrator} node image (about an hour)",
            )
            CfnOutput(
                self,
                f"{name}ImageSsmParameter",
                value=self.images.ssm_parameters[orchestrator],
                description=f"SSM parameter holding the newest {orchestrator} image id; set "
                f"imageSsmParameter to it to use the image",
            )
