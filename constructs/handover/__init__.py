"""The handover: from the block's start (or a deploy after it) to a verdict on the cluster.

A Step Functions state machine runs one code path however it starts: the deploy's custom resource
starts it and waits for its verdict; before the block starts the deploy only stages the cluster,
and EC2's Capacity Block Delivered event (backed by a one-time schedule) starts it at the start.
Each poll (handler/workflow.py) reads EC2 and the nodes' reports, replaces failed nodes while time
allows (through the orchestrator's HandoverPlan), then runs the cluster test; the verdict goes to
the alert topic, the SSM parameter /trn-kit/<stack>/handover and the reports bucket. A failed
handover fails only this resource: it never deletes, replaces or rolls back the cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import hashlib

from aws_cdk import ArnFormat, CfnOutput, CustomResource, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from trn_constructs.burn_in import HANDOVER_PREFIX, BurnInArtifacts, cluster_test_arguments
from trn_constructs.capacity import CapacityTarget
from trn_constructs.config import BurnInConfig, ClusterConfig
from trn_constructs.alerts import Alerts
from trn_constructs.findings import acknowledge, arn_finding, wildcard_finding
from trn_constructs.handlers import handler_function, provider
from trn_constructs.handover.bundle import MODULE, handover_code
from trn_constructs.handover.plan import HandoverPlan, KubernetesAccess
from trn_constructs.log_groups import log_group
from trn_constructs.timeline import HANDOVER_MAX_MINUTES, POLL_SECONDS, Budgets
from trn_constructs.undelivered import UndeliveredEvents

RESOURCE_TYPE = "Custom::TrnHandover"
# EC2's names for the event at a Capacity Block's start (its user guide has used both).
DELIVERED_DETAIL_TYPES = ("Capacity Block Delivered", "Capacity Block Reservation Delivered")
EXPIRY_DETAIL_TYPES = ("Capacity Block Expiration Warning", "Capacity Block Reservation Expiration Warning")
# The Provider framework's own deadline, after the handover's: its message names what it waited for.
PROVIDER_MARGIN = Duration.minutes(4)
CLOUDFORMATION_MAX_WAIT_SECONDS = 3600
# A start still worth delivering: the handover's own first poll comes within its budget anyway.
START_DELIVERY_WINDOW = Duration.hours(1)
STEP_FUNCTIONS_TASK = (
    "Step Functions invokes it synchronously, retries it and on failure reports the error in the "
    "verdict; a dead-letter queue only receives failed asynchronous invocations"
)
INITIAL_STATE = json.dumps({"state": "not-started"})


def state_parameter_name(stack_name: str) -> str:
    return f"/trn-kit/{stack_name}/handover"


def log_group_name(stack_name: str) -> str:
    """Where each poll says what it waits for."""
    return f"/trn-kit/{stack_name}/handover"


@dataclass(frozen=True)
class ClusterTestPlan:
    """The all-reduce across the passed nodes: ``trn_burnin cluster-test``'s arguments both
    orchestrators share (each adds where the nodes are); None: it does not run, for ``skipped``."""

    arguments: tuple[str, ...] | None
    skipped: str | None = None

    @property
    def runs(self) -> bool:
        return self.arguments is not None


def cluster_test_plan(config: ClusterConfig, capacity: CapacityTarget, artifacts: BurnInArtifacts) -> ClusterTestPlan:
    if not config.burn_in.cluster_test:
        return ClusterTestPlan(None, "clusterTest is false")
    if capacity.instance_count < 2:
        return ClusterTestPlan(None, "a single node has no inter-node path to test")
    return ClusterTestPlan(tuple(cluster_test_arguments(capacity, config.burn_in, Stack.of(artifacts).region)))


class Handover(Construct):
    """The handover of one cluster.

    Attributes:
        summary: the verdict in one line (the deploy's), or what staging means.
        report_location: s3:// prefix of the node reports.
        state_parameter: the SSM parameter with the current state as JSON.
        state_machine: the workflow.
        log_group: where each poll says what it waits for (the advance function's logs).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: HandoverPlan,
        artifacts: BurnInArtifacts,
        capacity: CapacityTarget,
        burn_in: BurnInConfig,
        budgets: Budgets,
        cluster_test: ClusterTestPlan,
        alerts: Alerts,
        node_alarm: str,
        log_retention: logs.RetentionDays,
    ) -> None:
        """``node_alarm``: the name of the alarm on the node count, armed once the cluster is handed
        over and disarmed before the block ends."""
        super().__init__(scope, construct_id)
        topic = alerts.topic
        stack = Stack.of(self)
        self._stack = stack
        self._node_alarm = node_alarm
        self._artifacts = artifacts
        self._log_retention = log_retention
        self.state_parameter = ssm.StringParameter(
            self,
            "State",
            parameter_name=state_parameter_name(stack.stack_name),
            description="The handover's state and verdict as JSON (written by the handover)",
            string_value=INITIAL_STATE,
        )
        machine_name = f"{stack.stack_name}-handover"
        machine_arn = stack.format_arn(
            service="states", resource="stateMachine", resource_name=machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )  # fmt: skip
        executions_arn = stack.format_arn(
            service="states", resource="execution", resource_name=f"{machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )  # fmt: skip
        code = handover_code(self._plan_document(plan, artifacts, capacity, burn_in, budgets, cluster_test,
                                                 stack.stack_name, node_alarm))
        environment = {
            "REPORTS_BUCKET": artifacts.bucket.bucket_name,
            "CAPACITY_RESERVATION_ID": capacity.reservation_id,
            "ALERT_TOPIC_ARN": topic.topic_arn,
        }

        def function(name: str, entry: str, timeout: Duration, description: str, **extra: Any) -> lambda_.Function:
            return handler_function(
                self, name, code=code, entry_point=entry, module=MODULE, timeout=timeout,
                description=f"Handover: {description}", log_retention=log_retention,
                environment={**environment, **extra.pop("environment", {})}, **extra,
            )  # fmt: skip

        placement = (
            {"vpc": plan.vpc, "vpc_subnets": ec2.SubnetSelection(subnets=list(plan.subnets)),
             "security_groups": list(plan.security_groups)}
            if plan.vpc else {}
        )
        # A start or stop that EventBridge cannot deliver, or a stop that keeps failing, lands here
        # and alarms the alert topic: a staged cluster whose handover never starts must not be silent.
        self.undelivered = UndeliveredEvents(
            self, "Undelivered", topic=topic, key=alerts.key,
            what="the start of the handover or the stop of new work before the Capacity Block ends",
            alarm_suffix="handover-trigger-undelivered",
        )  # fmt: skip
        # Named, so that a deploy still waiting (its outputs not yet there) can be followed:
        # aws logs tail /trn-kit/<stack>/handover --follow
        self.advance = function("Advance", "advance", Duration.minutes(3),
                                "one poll: nodes, replacements, cluster test, verdict",
                                dead_letter_reason=STEP_FUNCTIONS_TASK, log_group_name=log_group_name(stack.stack_name),
                                **placement)
        stop = function("StopNewWork", "stop_new_work", Duration.minutes(2),
                        "stop new work before the Capacity Block ends",
                        dead_letter_queue=self.undelivered.queue, **placement)
        on_event = function("OnEvent", "on_event", Duration.minutes(1), "stage, or start the handover",
                            environment={"STATE_MACHINE_ARN": machine_arn})
        is_complete = function("IsComplete", "is_complete", Duration.minutes(1), "follow the handover to its verdict",
                               environment={"STATE_MACHINE_ARN": machine_arn})
        self.log_group = self.advance.log_group

        self._allow_common(self.advance, topic, machine_arn)
        for role_holder in (self.advance, stop):
            self._allow_orchestrator(role_holder, plan)
        self._publish(stop, topic)
        self._allow_gate(on_event, is_complete, capacity, machine_arn, executions_arn)
        if plan.kubernetes:
            self._allow_kubernetes(plan.kubernetes, (self.advance, stop))

        self.state_machine = self._state_machine(machine_name, budgets, burn_in, log_retention)
        gate = self._gate(on_event, is_complete, burn_in, plan, capacity)
        self._start_triggers(capacity, gate)
        self._stop_trigger(capacity, stop)
        self.summary = gate.get_att_string("Summary")
        self.report_location = gate.get_att_string("ReportLocation")
        self.gate = gate

    # -- plan.json: what the handover knows at synth time ------------------------------------
    @staticmethod
    def _plan_document(
        plan: HandoverPlan, artifacts: BurnInArtifacts, capacity: CapacityTarget, burn_in: BurnInConfig,
        budgets: Budgets, cluster_test: ClusterTestPlan, stack_name: str, node_alarm: str,
    ) -> dict[str, Any]:
        spec = capacity.instance
        document: dict[str, Any] = {
            "stack_name": stack_name,
            "orchestrator": plan.orchestrator,
            "state_parameter": state_parameter_name(stack_name),
            "log_group": log_group_name(stack_name),
            "node_alarm": node_alarm,
            "reports_prefix": artifacts.reports_prefix,
            "handover_prefix": HANDOVER_PREFIX,
            "cluster_test_prefix": artifacts.cluster_test_prefix,
            "expected_nodes": capacity.instance_count,
            "instances_per_ultraserver": spec.instances_per_ultraserver,
            "ultraserver_type": spec.ultraserver_type,
            "min_healthy_fraction": burn_in.min_healthy_fraction,
            "whole_ultraservers": burn_in.healthy_unit == "ultraserver",
            "replace_failed_nodes": burn_in.replace_failed_nodes,
            "max_replacements": burn_in.max_replacements,
            "budget_seconds": burn_in.timeout_minutes * 60,
            "poll_seconds": POLL_SECONDS,
            "replacement_seconds": budgets.replacement_seconds,
            "report_timeout_seconds": budgets.report_timeout_seconds,
            "cluster_test": (
                {"arguments": list(cluster_test.arguments), "seconds": budgets.cluster_test_minutes * 60}
                if cluster_test.runs else None
            ),
            "cluster_test_skipped": cluster_test.skipped,
            plan.orchestrator if plan.orchestrator == "slurm" else "kubernetes": dict(plan.settings),
        }
        return document

    # -- permissions ---------------------------------------------------------------------------
    def _allow_common(self, advance: lambda_.Function, topic: sns.ITopic, machine_arn: str) -> None:
        """Read the block's instances and every report, keep the ledger and the cluster test's
        folder, publish the verdict; and see whether another handover runs."""
        advance.role.add_managed_policy(self._artifacts.handover_policy())
        for statement in (
            iam.PolicyStatement(actions=["ec2:DescribeInstances", "ec2:DescribeCapacityReservations"], resources=["*"]),
            iam.PolicyStatement(actions=["states:ListExecutions"], resources=[machine_arn]),
        ):
            advance.add_to_role_policy(statement)
        self.state_parameter.grant_read(advance)
        self.state_parameter.grant_write(advance)
        self._publish(advance, topic)
        acknowledge(advance, "AwsSolutions-IAM5[Resource::*]",
                    "DescribeInstances and DescribeCapacityReservations have no resource-level permissions; "
                    "the handover only lists its own Capacity Block")

    def _publish(self, function: lambda_.Function, topic: sns.ITopic) -> None:
        """Tell people (the alert topic), and arm or disarm the node-count alarm."""
        topic.grant_publish(function)
        acknowledge(function, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
                    "Publishing to the alert topic encrypts with its KMS key: GenerateDataKey* on that one key")
        alarm = self._stack.format_arn(service="cloudwatch", resource="alarm", resource_name=self._node_alarm,
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)
        function.add_to_role_policy(iam.PolicyStatement(
            actions=["cloudwatch:EnableAlarmActions", "cloudwatch:DisableAlarmActions"], resources=[alarm]))

    @staticmethod
    def _allow_orchestrator(function: lambda_.Function, plan: HandoverPlan) -> None:
        for statement in plan.statements:
            function.add_to_role_policy(statement)
        for finding, reason in plan.findings:
            acknowledge(function, finding, reason)

    def _allow_gate(self, on_event: lambda_.Function, is_complete: lambda_.Function, capacity: CapacityTarget,
                    machine_arn: str, executions_arn: str) -> None:
        stack = self._stack
        own_stack = stack.format_arn(service="cloudformation", resource="stack", resource_name=f"{stack.stack_name}/*")
        for statement in (
            iam.PolicyStatement(actions=["states:StartExecution", "states:ListExecutions"], resources=[machine_arn]),
            iam.PolicyStatement(actions=["states:StopExecution"], resources=[executions_arn]),
            iam.PolicyStatement(actions=["cloudformation:DescribeStacks"], resources=[own_stack]),
            iam.PolicyStatement(actions=["ec2:DescribeCapacityReservations"], resources=["*"]),
        ):
            on_event.add_to_role_policy(statement)
        self.state_parameter.grant_read(on_event)
        self.state_parameter.grant_write(on_event)
        is_complete.add_to_role_policy(iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions_arn]))
        for function in (on_event, is_complete):
            acknowledge(function, wildcard_finding(stack, executions_arn),
                        "Executions are named per deployment request; only this state machine's")
        acknowledge(on_event, wildcard_finding(stack, own_stack),
                    "The stack's id ends in a generated suffix; the gate reads only its own stack's status "
                    "(to recognise a rollback)")
        acknowledge(on_event, "AwsSolutions-IAM5[Resource::*]",
                    "DescribeCapacityReservations has no resource-level permissions; the gate reads its block's "
                    "start to decide whether the cluster is staged")

    def _allow_kubernetes(self, access: KubernetesAccess, functions: tuple[lambda_.Function, ...]) -> None:
        """An EKS access entry per role, in the groups the orchestrator's RBAC binds."""
        for function in functions:
            eks.CfnAccessEntry(
                self, f"{function.node.id}Access", cluster_name=access.cluster_name,
                principal_arn=function.role.role_arn, kubernetes_groups=list(access.groups), type="STANDARD",
            )  # fmt: skip

    # -- the workflow --------------------------------------------------------------------------
    def _state_machine(self, name: str, budgets: Budgets, burn_in: BurnInConfig,
                       log_retention: logs.RetentionDays) -> sfn.StateMachine:
        advance = tasks.LambdaInvoke(
            self, "Poll",
            lambda_function=self.advance,
            payload=sfn.TaskInput.from_object({
                "state": sfn.JsonPath.object_at("$"),
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            }),
            payload_response_only=True,
            task_timeout=sfn.Timeout.duration(Duration.minutes(4)),
        )  # fmt: skip
        # Every poll recomputes from EC2, the reports and the ledger, so a retry is always safe.
        advance.add_retry(errors=["States.ALL"], interval=Duration.seconds(20), max_attempts=6, backoff_rate=2)
        # A poll that keeps failing still reaches the operator: the same function publishes a
        # not-ready verdict naming the error, then the execution fails.
        report = tasks.LambdaInvoke(
            self, "ReportError",
            lambda_function=self.advance,
            payload=sfn.TaskInput.from_object({
                "state": sfn.JsonPath.object_at("$"),
                "failure": sfn.JsonPath.object_at("$.failure"),
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            }),
            payload_response_only=True,
            result_path=sfn.JsonPath.DISCARD,
        )  # fmt: skip
        report.add_retry(errors=["States.ALL"], interval=Duration.seconds(20), max_attempts=3, backoff_rate=2)
        failed = sfn.Fail(self, "HandoverError", cause_path="$.failure.Cause", error_path="$.failure.Error")
        report.add_catch(failed, result_path=sfn.JsonPath.DISCARD)
        report.next(failed)
        advance.add_catch(report, result_path="$.failure")
        wait = sfn.Wait(self, "Wait", time=sfn.WaitTime.seconds_path("$.wait_seconds"))
        done = sfn.Succeed(self, "VerdictKnown", output_path="$")
        definition = advance.next(
            sfn.Choice(self, "Done?")
            .when(sfn.Condition.boolean_equals("$.done", True), done)
            .otherwise(wait.next(advance))
        )
        logs_group = log_group(self, "WorkflowLogs", retention=log_retention)
        machine = sfn.StateMachine(
            self, "Workflow",
            state_machine_name=name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            # Its own budget, a wait for a block not yet started, and room for retries.
            timeout=Duration.minutes(burn_in.timeout_minutes + 60),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )  # fmt: skip
        acknowledge(machine, arn_finding(self.advance), "Step Functions invokes the advance function, any version")
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "X-Ray tracing and CloudWatch Logs delivery, which Step Functions needs for its execution "
                    "logs, have no resource-level permissions")
        return machine

    def _gate(self, on_event: lambda_.Function, is_complete: lambda_.Function, burn_in: BurnInConfig,
              plan: HandoverPlan, capacity: CapacityTarget) -> CustomResource:
        wait = Duration.minutes(burn_in.timeout_minutes)
        framework = provider(
            self, "Provider", on_event_handler=on_event, is_complete_handler=is_complete,
            log_retention=self._log_retention,
            query_interval=Duration.seconds(POLL_SECONDS), total_timeout=wait.plus(PROVIDER_MARGIN),
        )  # fmt: skip
        gate = CustomResource(
            self, "Gate",
            service_token=framework.service_token,
            resource_type=RESOURCE_TYPE,
            service_timeout=Duration.seconds(min(CLOUDFORMATION_MAX_WAIT_SECONDS,
                                                 wait.plus(PROVIDER_MARGIN).plus(PROVIDER_MARGIN).to_seconds())),
            # Any change here is a new handover: the block, what runs on the nodes (package,
            # bootstrap, the orchestrator's node definition) and what judges them (the code and plan).
            properties={
                "ReservationId": capacity.reservation_id,
                "Nodes": hashlib.sha256("/".join((
                    self._artifacts.package.asset_hash, self._artifacts.bootstrap.asset_hash, plan.node_fingerprint,
                )).encode()).hexdigest()[:16],
                "Handover": Stack.of(self).resolve(self.advance.node.default_child.code)["s3Key"],
            },
        )  # fmt: skip
        gate.node.add_dependency(self.state_machine, self.state_parameter)
        return gate

    def _start_triggers(self, capacity: CapacityTarget, gate: CustomResource) -> None:
        """EC2's event at the block's start, and a one-time schedule two minutes after it in case the
        event is late; whichever comes second finds the first running and stands down."""
        rule = events.Rule(
            self, "AtBlockStart",
            description="Start the handover when EC2 delivers the Capacity Block",
            event_pattern=events.EventPattern(source=["aws.ec2"], detail_type=list(DELIVERED_DETAIL_TYPES),
                                              detail={"capacity-reservation-id": [capacity.reservation_id]}),
        )  # fmt: skip
        rule.add_target(targets.SfnStateMachine(
            self.state_machine, input=events.RuleTargetInput.from_object({"trigger": "block-start"}),
            dead_letter_queue=self.undelivered.queue, max_event_age=START_DELIVERY_WINDOW,
        ))  # fmt: skip
        schedule = scheduler.Schedule(
            self, "AfterBlockStart",
            description="Start the handover shortly after the Capacity Block starts (a backup for EC2's event)",
            schedule=scheduler.ScheduleExpression.expression(gate.get_att_string("StartSchedule")),
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine, input=scheduler.ScheduleTargetInput.from_object({"trigger": "block-start"}),
                dead_letter_queue=self.undelivered.queue, max_event_age=START_DELIVERY_WINDOW),
        )  # fmt: skip
        # Armed only when the deploy found the block not yet started (the gate says which).
        schedule.node.default_child.add_property_override("State", gate.get_att_string("StartScheduleState"))

    def _stop_trigger(self, capacity: CapacityTarget, stop: lambda_.Function) -> None:
        rule = events.Rule(
            self, "BeforeBlockEnd",
            description="Stop new work at EC2's Capacity Block expiration warning (40 minutes before the end)",
            event_pattern=events.EventPattern(source=["aws.ec2"], detail_type=list(EXPIRY_DETAIL_TYPES),
                                              detail={"capacity-reservation-id": [capacity.reservation_id]}),
        )  # fmt: skip
        rule.add_target(targets.LambdaFunction(stop, retry_attempts=3, max_event_age=Duration.minutes(15),
                                               dead_letter_queue=self.undelivered.queue))

    def add_outputs(self) -> None:
        stack = self._stack
        for name, value, description in (
            ("HandoverSummary", self.summary, "The handover's verdict (or, staged: when and how it runs)"),
            ("HandoverReports", self.report_location, "Per-node burn-in reports (JSON)"),
            ("HandoverStateParameter", self.state_parameter.parameter_name,
             "SSM parameter with the handover's current state and verdict as JSON (make handover prints it)"),
            ("HandoverLogGroup", self.log_group.log_group_name,
             "Where each poll of the handover says what it is waiting for"),
            ("HandoverStateMachineArn", self.state_machine.state_machine_arn, "The handover's workflow"),
        ):
            CfnOutput(stack, name, value=value, description=description)


