"""Operations on both orchestrators: the dashboard's widgets, each alarm, Container Insights' log
groups with their teardown, the uncorrectable-ECC metric filter and the Slurm metrics shipper."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Match

from stacks.app import add_stacks
from tests.conftest import VARIANTS, context_with, synth, synth_variant
from trn_burnin.catalog import CATALOG
from trn_constructs.operations.node import ship_neuron_metrics as shipper

CLUSTER = {"eks": "TrnClusterStack", "slurm": "TrnClusterStack-slurm"}
PEAK_BF16 = CATALOG["trn3-gen1"].peak_tflops_per_chip("bf16")  # cdk.json's trn3.48xlarge
GIB = 1024**3


@pytest.fixture(scope="module")
def eks():
    return synth(**VARIANTS["eks"])


@pytest.fixture(scope="module")
def slurm():
    return synth_variant("default")


@pytest.fixture(scope="module", params=["eks", "slurm"])
def each(request, eks, slurm):
    return request.param, {"eks": eks, "slurm": slurm}[request.param]


def _flatten(value) -> str:
    """A DashboardBody (Fn::Join of text and references) as one string, references as <Id>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_flatten(part) for part in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    return "<{}>".format(".".join(value["Fn::GetAtt"]))


def resource(synthesized, resource_type: str) -> tuple[str, dict]:
    (found,) = synthesized.template.find_resources(resource_type).items()
    return found


def widgets(synthesized) -> dict[str, dict]:
    _, dashboard = resource(synthesized, "AWS::CloudWatch::Dashboard")
    body = json.loads(_flatten(dashboard["Properties"]["DashboardBody"]))
    return {w["properties"].get("title", w["type"]): w for w in body["widgets"]}


def expressions(widget) -> list[str]:
    return [m[-1]["expression"] for m in widget["properties"]["metrics"] if "expression" in m[-1]]


def plain_metrics(widget) -> list[list]:
    """[namespace, name, dimension, value, ...] of each metric that is not an expression."""
    return [m[:-1] for m in widget["properties"]["metrics"] if "expression" not in m[-1]]


def alarms(synthesized) -> dict[str, dict]:
    """The operations alarms (the capacity warnings' dead-letter alarm is test_capacity_expiry's)."""
    found = synthesized.template.find_resources("AWS::CloudWatch::Alarm")
    return {
        alarm["Properties"]["AlarmName"]: alarm
        for name, alarm in found.items()
        if name.startswith("Operations")
    }


def topic_id(synthesized) -> str:
    """The one alert topic: alarms and Capacity Block notices share it."""
    (name,) = synthesized.template.find_resources(
        "AWS::SNS::Topic", {"Properties": {"DisplayName": "Trainium cluster alerts"}}
    )
    return name


# --- dashboard -----------------------------------------------------------------------------------


def test_one_dashboard_named_after_the_stack_with_outputs(each):
    _, synthesized = each
    _, dashboard = resource(synthesized, "AWS::CloudWatch::Dashboard")
    assert dashboard["Properties"]["DashboardName"] == "TrnClusterStack-operations"
    outputs = synthesized.template_json["Outputs"]
    assert outputs["OperationsDashboardName"]["Value"] == "TrnClusterStack-operations"
    assert outputs["OperationsDashboardUrl"]["Value"] == (
        "https://us-east-2.console.aws.amazon.com/cloudwatch/home?region=us-east-2"
        "#dashboards/dashboard/TrnClusterStack-operations"
    )
    assert all(outputs[name]["Description"] for name in ("OperationsDashboardName", "AlertTopicArn"))


def test_widgets_per_orchestrator(eks, slurm):
    common = {
        "text",
        "Burn-in: chip bf16 throughput, % of peak (629 TFLOPS per chip)",
        "Burn-in: node verdict (1 passed, 0 failed)",
        "NeuronCore utilisation (%): cluster average and each node",
        "Neuron hardware and execution errors (count per 5 minutes)",
        "Nodes in service",
        "EFA traffic, cluster total (bytes/s)",
        "FSx for Lustre throughput (bytes/s)",
        "FSx for Lustre free capacity",
        "Alarms",
    }
    assert set(widgets(eks)) == common | {"Neuron node problem detector (NeuronHealthCheck)"}
    assert set(widgets(slurm)) == common


def test_burn_in_panels_show_each_chip_of_this_cluster_against_the_catalog_peak(each):
    orchestrator, synthesized = each
    cluster = CLUSTER[orchestrator]
    throughput = widgets(synthesized)[f"Burn-in: chip bf16 throughput, % of peak ({PEAK_BF16:.0f} TFLOPS per chip)"]
    percent, search = sorted(expressions(throughput))
    assert percent == f"100 * chips / {PEAK_BF16:g}"
    assert search == (
        "SEARCH('{TrnCluster/BurnIn,ClusterName,DType,Device,InstanceId,InstanceType} "
        f"MetricName=\"ChipTFLOPS\" ClusterName=\"{cluster}\" DType=\"bf16\"', 'Maximum', 86400)"
    )
    # Burn-in runs when a node starts: one bar per series over a long look-back.
    for title in (throughput["properties"]["title"], "Burn-in: node verdict (1 passed, 0 failed)"):
        properties = widgets(synthesized)[title]["properties"]
        assert (properties["view"], properties["setPeriodToTimeRange"], properties["start"]) == (
            "bar", True, "-P30D",
        )
    (verdicts,) = expressions(widgets(synthesized)["Burn-in: node verdict (1 passed, 0 failed)"])
    assert f'MetricName="NodePassed" ClusterName="{cluster}"' in verdicts


def test_peak_follows_the_configured_dtype():
    fp8 = synth(burnInDtype="fp8")
    peak = CATALOG["trn3-gen1"].peak_tflops_per_chip("fp8")
    title = f"Burn-in: chip fp8 throughput, % of peak ({peak:.0f} TFLOPS per chip)"
    assert f"100 * chips / {peak:g}" in expressions(widgets(fp8)[title])


def test_neuron_panels_read_container_insights_names_for_the_cluster(each):
    orchestrator, synthesized = each
    cluster = CLUSTER[orchestrator]
    panels = widgets(synthesized)
    utilization = panels["NeuronCore utilisation (%): cluster average and each node"]
    assert plain_metrics(utilization) == [
        ["ContainerInsights", "node_neuroncore_utilization", "ClusterName", cluster]
    ]
    assert expressions(utilization) == [
        "SEARCH('{ContainerInsights,ClusterName,InstanceId,NodeName} "
        f"MetricName=\"node_neuroncore_utilization\" ClusterName=\"{cluster}\"', 'Average', 60)"
    ]
    errors = panels["Neuron hardware and execution errors (count per 5 minutes)"]
    assert plain_metrics(errors) == [
        ["TrnCluster/Health", "NeuronUncorrectableEccEvents", "ClusterName", cluster],
        ["ContainerInsights", "node_neurondevice_hw_ecc_events_total", "ClusterName", cluster],
        ["ContainerInsights", "node_neuron_execution_errors_total", "ClusterName", cluster],
    ]
    efa = panels["EFA traffic, cluster total (bytes/s)"]
    assert [m[1] for m in plain_metrics(efa)] == [
        "node_efa_rx_bytes", "node_efa_tx_bytes", "node_efa_rdma_read_bytes", "node_efa_rdma_write_bytes",
    ]
    assert {m[-1]["stat"] for m in efa["properties"]["metrics"]} == {"Sum"}


def test_cluster_name_is_the_orchestrators(eks, slurm):
    eks.template.has_resource_properties("AWS::EKS::Cluster", {"Name": CLUSTER["eks"]})
    (pcluster,) = slurm.template.find_resources("Custom::PclusterCluster").values()
    assert pcluster["Properties"]["ClusterName"] == CLUSTER["slurm"]


def test_problem_detector_panel_shows_the_whole_namespace(eks):
    panel = widgets(eks)["Neuron node problem detector (NeuronHealthCheck)"]
    assert expressions(panel) == ["SEARCH('Namespace=\"NeuronHealthCheck\"', 'Maximum', 300)"]


def test_node_panels(eks, slurm):
    eks_nodes = widgets(eks)["Nodes in service"]["properties"]
    assert eks_nodes["metrics"][0][:4] == ["ContainerInsights", "cluster_node_count", "ClusterName", CLUSTER["eks"]]
    # 4 Trainium nodes and 2 system nodes (cdk.json).
    assert eks_nodes["annotations"]["horizontal"] == [{"label": "expected", "value": 6, "yAxis": "left"}]
    slurm_nodes = widgets(slurm)["Nodes in service"]["properties"]
    assert "FILL(reports, 0) / 5" in expressions(widgets(slurm)["Nodes in service"])
    assert slurm_nodes["annotations"]["horizontal"] == [{"label": "expected", "value": 4, "yAxis": "left"}]


def test_fsx_panels_read_the_stacks_file_system(each):
    _, synthesized = each
    file_system, _ = resource(synthesized, "AWS::FSx::FileSystem")
    panels = widgets(synthesized)
    throughput = panels["FSx for Lustre throughput (bytes/s)"]
    assert sorted(expressions(throughput)) == ["reads / PERIOD(reads)", "writes / PERIOD(writes)"]
    assert sorted(m[1] for m in plain_metrics(throughput)) == ["DataReadBytes", "DataWriteBytes"]
    free = panels["FSx for Lustre free capacity"]["properties"]
    assert free["metrics"][0][:4] == ["AWS/FSx", "FreeDataStorageCapacity", "FileSystemId", f"<{file_system}>"]
    assert free["annotations"]["horizontal"][0]["value"] == int(1200 * GIB * 0.1)


def test_capacity_block_text_names_the_reservation_and_how_to_see_its_end(each):
    orchestrator, synthesized = each
    text = widgets(synthesized)["text"]["properties"]["markdown"]
    assert f"4 x trn3.48xlarge ({orchestrator})" in text
    assert (
        "aws ec2 describe-capacity-reservations --region us-east-2 "
        "--capacity-reservation-ids cr-0123456789abcdef0 --query 'CapacityReservations[0].EndDate'"
    ) in text


def test_alarm_panel_lists_every_alarm(each):
    _, synthesized = each
    panel = widgets(synthesized)["Alarms"]["properties"]
    assert len(panel["alarms"]) == len(alarms(synthesized)) == 3


# --- alarms --------------------------------------------------------------------------------------


def _notifies_topic(synthesized, alarm):
    topic = {"Ref": topic_id(synthesized)}
    assert alarm["Properties"]["AlarmActions"] == [topic]
    assert alarm["Properties"]["OKActions"] == [topic]


def test_uncorrectable_hardware_error_alarm(each):
    orchestrator, synthesized = each
    alarm = alarms(synthesized)["TrnClusterStack-uncorrectable-hardware-errors"]
    properties = alarm["Properties"]
    assert properties["Namespace"] == "TrnCluster/Health"
    assert properties["MetricName"] == "NeuronUncorrectableEccEvents"
    assert properties["Dimensions"] == [{"Name": "ClusterName", "Value": CLUSTER[orchestrator]}]
    assert (properties["Statistic"], properties["Period"]) == ("Sum", 300)
    assert (properties["Threshold"], properties["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert (properties["EvaluationPeriods"], properties["TreatMissingData"]) == (1, "notBreaching")
    _notifies_topic(synthesized, alarm)


def test_eks_node_alarm_counts_container_insights_nodes(eks):
    alarm = alarms(eks)["TrnClusterStack-node-left-service"]
    properties = alarm["Properties"]
    (count,) = properties["Metrics"]
    assert count["MetricStat"] == {
        "Metric": {
            "Namespace": "ContainerInsights",
            "MetricName": "cluster_node_count",
            "Dimensions": [{"Name": "ClusterName", "Value": CLUSTER["eks"]}],
        },
        "Period": 300,
        "Stat": "Minimum",
    }
    assert "kubectl get nodes" in properties["AlarmDescription"]
    # Below 4 Trainium + 2 system nodes.
    assert (properties["Threshold"], properties["ComparisonOperator"]) == (5.5, "LessThanThreshold")
    assert (properties["EvaluationPeriods"], properties["TreatMissingData"]) == (2, "breaching")
    _notifies_topic(eks, alarm)


def test_eks_node_alarm_follows_the_system_node_count():
    properties = alarms(synth(orchestrator="eks", eksSystemNodeCount=3))[
        "TrnClusterStack-node-left-service"
    ]["Properties"]
    assert properties["Threshold"] == 6.5


def test_slurm_node_alarm_counts_reporting_nodes(slurm):
    alarm = alarms(slurm)["TrnClusterStack-node-left-service"]
    properties = alarm["Properties"]
    expression, reports = properties["Metrics"]
    assert expression["Expression"] == f"FILL(reports, 0) / {300 // shipper.DEFAULT_INTERVAL_SECONDS}"
    assert expression["ReturnData"] is not False
    assert reports["Id"] == "reports" and reports["ReturnData"] is False
    assert reports["MetricStat"] == {
        "Metric": {
            "Namespace": shipper.HEALTH_NAMESPACE,
            "MetricName": shipper.NODE_REPORTING,
            "Dimensions": [{"Name": "ClusterName", "Value": CLUSTER["slurm"]}],
        },
        "Period": 300,
        "Stat": "Sum",
    }
    assert (properties["Threshold"], properties["ComparisonOperator"]) == (3.5, "LessThanThreshold")
    assert "sinfo -N -p trainium" in properties["AlarmDescription"]
    assert (properties["EvaluationPeriods"], properties["TreatMissingData"]) == (2, "breaching")
    _notifies_topic(slurm, alarm)


@pytest.mark.parametrize("variant, capacity_gib", [("default", 1200), ("trn2u-fsx-full", 4800)])
def test_fsx_free_capacity_alarm_at_a_tenth_of_capacity(variant, capacity_gib):
    synthesized = synth_variant(variant)
    file_system, _ = resource(synthesized, "AWS::FSx::FileSystem")
    alarm = alarms(synthesized)["TrnClusterStack-fsx-free-capacity-low"]
    properties = alarm["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == ("AWS/FSx", "FreeDataStorageCapacity")
    assert properties["Dimensions"] == [{"Name": "FileSystemId", "Value": {"Ref": file_system}}]
    assert (properties["Statistic"], properties["Period"]) == ("Minimum", 300)
    assert properties["Threshold"] == capacity_gib * GIB // 10
    assert properties["ComparisonOperator"] == "LessThanThreshold"
    assert properties["TreatMissingData"] == "notBreaching"
    _notifies_topic(synthesized, alarm)


def test_the_node_alarm_waits_disarmed_for_the_handover_and_the_others_watch_from_the_start(each):
    _, synthesized = each
    (gate,) = synthesized.handover.find_resources("Custom::TrnHandover")
    found = alarms(synthesized)
    for name, alarm in found.items():
        # Not after the gate: the alarm must exist when a ready verdict arms it.
        assert gate not in alarm.get("DependsOn", []), name
        armed = alarm["Properties"].get("ActionsEnabled", True)
        assert armed is (name != "TrnClusterStack-node-left-service"), name
    # The handover's functions may arm and disarm exactly that alarm.
    alarm_arn = "arn:aws:cloudwatch:us-east-2:123456789012:alarm:TrnClusterStack-node-left-service"
    grants = [s for p in synthesized.handover.find_resources("AWS::IAM::Policy").values()
              for s in p["Properties"]["PolicyDocument"]["Statement"]
              if s["Action"] == ["cloudwatch:DisableAlarmActions", "cloudwatch:EnableAlarmActions"]]
    assert len(grants) == 2 and all(s["Resource"] == alarm_arn for s in grants)  # advance and stop


def test_alert_topic_is_encrypted_tls_only_and_cloudwatch_may_use_its_key(each):
    _, synthesized = each
    template = synthesized.template
    topic = template.find_resources("AWS::SNS::Topic")[topic_id(synthesized)]
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = template.find_resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Delete"
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Resource": "*",
    } in statements
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic_id(synthesized)}],
            "PolicyDocument": {
                "Statement": Match.array_with([
                    Match.object_like({
                        "Effect": "Deny",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    })
                ])
            },
        },
    )  # fmt: skip


# --- telemetry: log groups, metric filter, teardown ----------------------------------------------


def log_groups(synthesized) -> dict[str, dict]:
    found = synthesized.template.find_resources("AWS::Logs::LogGroup")
    return {
        group["Properties"]["LogGroupName"]: group
        for group in found.values()
        if str(group["Properties"].get("LogGroupName", "")).startswith("/aws/containerinsights/")
    }


def test_container_insights_log_groups_are_the_stacks_with_retention_and_teardown(eks, slurm):
    prefix = "/aws/containerinsights/TrnClusterStack"
    expected = {
        "eks": {f"{prefix}/performance": "Delete", f"{prefix}/host": "Delete",
                f"{prefix}/dataplane": "Delete", f"{prefix}/application": "Retain"},
        "slurm": {f"{prefix}-slurm/performance": "Delete"},
    }  # fmt: skip
    for orchestrator, synthesized in (("eks", eks), ("slurm", slurm)):
        groups = log_groups(synthesized)
        assert {name: group["DeletionPolicy"] for name, group in groups.items()} == expected[orchestrator]
        assert {group["Properties"]["RetentionInDays"] for group in groups.values()} == {90}


def test_container_insights_add_on_waits_for_its_log_groups(eks):
    addon = eks.template.find_resources(
        "AWS::EKS::Addon", {"Properties": {"AddonName": "amazon-cloudwatch-observability"}}
    )
    (addon,) = addon.values()
    groups = eks.template.find_resources("AWS::Logs::LogGroup")
    ours = [name for name, group in groups.items()
            if str(group["Properties"].get("LogGroupName", "")).startswith("/aws/containerinsights/")]
    assert set(ours) <= set(addon["DependsOn"])


def test_uncorrectable_ecc_metric_filter(each):
    orchestrator, synthesized = each
    _, metric_filter = resource(synthesized, "AWS::Logs::MetricFilter")
    properties = metric_filter["Properties"]
    performance = [
        name for name, group in synthesized.template.find_resources("AWS::Logs::LogGroup").items()
        if str(group["Properties"].get("LogGroupName")).endswith("/performance")
    ]
    assert properties["LogGroupName"] == {"Ref": performance[0]}
    assert properties["FilterPattern"] == (
        "{ ($.node_neurondevice_hw_ecc_events_total_mem_ecc_uncorrected > 0) || "
        "($.node_neurondevice_hw_ecc_events_total_sram_ecc_uncorrected > 0) }"
    )
    assert properties["MetricTransformations"] == [{
        "MetricNamespace": "TrnCluster/Health",
        "MetricName": "NeuronUncorrectableEccEvents",
        "MetricValue": "1",
        "Unit": "Count",
        "Dimensions": [{"Key": "ClusterName", "Value": "$.ClusterName"}],
    }]  # fmt: skip


# --- the Slurm metrics shipper's stack side ------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_stack():
    """The default (Slurm) stack, constructed but not synthesized, to read the node action."""
    return add_stacks(App(context=context_with({})))


def test_shipper_node_action_installs_with_the_clusters_names(slurm_stack, monkeypatch):
    telemetry = slurm_stack.infra.telemetry
    stack = Stack.of(telemetry)
    action = telemetry.node_action()
    assert stack.resolve(action.script) == stack.resolve(telemetry.shipper.s3_object_url)
    log_group = stack.get_logical_id(telemetry.log_groups["performance"].node.default_child)
    args = stack.resolve(list(action.args))
    assert args == [
        "install",
        "--cluster-name", CLUSTER["slurm"],
        "--log-group", {"Ref": log_group},
        "--region", "us-east-2",
    ]  # fmt: skip
    # The script's own parser takes exactly these arguments.
    installed = []
    monkeypatch.setattr(shipper, "install", lambda *given: installed.append(given) or 0)
    args[4] = "/aws/containerinsights/TrnClusterStack-slurm/performance"
    assert shipper.main(args) == 0
    assert installed == [(CLUSTER["slurm"], args[4], "us-east-2", shipper.DEFAULT_INTERVAL_SECONDS)]


def test_shipper_node_policy_reads_the_script_and_writes_only_its_log_group(slurm):
    policies = slurm.template.find_resources(
        "AWS::IAM::ManagedPolicy",
        {"Properties": {"Description": Match.string_like_regexp("metrics shipper")}},
    )
    (policy,) = policies.values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (performance,) = [
        name for name, group in slurm.template.find_resources("AWS::Logs::LogGroup").items()
        if str(group["Properties"].get("LogGroupName")).endswith("/performance")
    ]
    assert statements[1] == {
        "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [performance, "Arn"]},
    }
    assert statements[0]["Action"] == "s3:GetObject"
    assert "ship_neuron_metrics" not in json.dumps(statements[0])  # the asset's hashed key


def test_no_shipper_on_eks(eks):
    assert not eks.template.find_resources(
        "AWS::IAM::ManagedPolicy",
        {"Properties": {"Description": Match.string_like_regexp("metrics shipper")}},
    )
