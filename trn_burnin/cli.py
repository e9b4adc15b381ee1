"""Command line: ``python -m trn_burnin run|plan|cluster-test``. Exit 0 only on a pass.

(Worker and compile processes are ``python -m trn_burnin.worker`` and ``python -m trn_burnin.artifacts``,
which the run starts itself.)"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trn_burnin.catalog import OVERRIDES, InstanceSpec, apply_overrides, find_by_instance_type
from trn_burnin.collective import (DEFAULT_MIN_BUS_BANDWIDTH_FRACTION, SCHEMA_PATH as CLUSTER_TEST_SCHEMA_PATH,
                                   AllReducePlan, BusBandwidthFloor, NccomRunner, NccomTest, Placement,
                                   SlurmPlacement, result_document, run_cluster_test)
from trn_burnin.device import DeviceLayer, NeuronHost
from trn_burnin.imds import instance_identity
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm
from trn_burnin.publish import (DEFAULT_NAMESPACE, ClientFactory, boto3_client_factory, parse_s3_object_uri,
                                parse_s3_uri, put_metrics, put_s3_object, upload_s3, write_local)
from trn_burnin.rendezvous import (DEFAULT_RENDEZVOUS_SECONDS, LAUNCHER_INDEX, RESULT_NAME, Clock, OpenSsh, Pod,
                                   RunFolder, Ssh, is_ipv4, join, lead)
from trn_burnin.report_check import load_schema, validate_report
from trn_burnin.runner import RunOptions, run_burnin, utc_now
from trn_burnin.thresholds import DEFAULT_MAX_REL_ERROR, DEFAULT_MIN_MEDIAN_FRACTION, DEFAULT_MIN_PEAK_FRACTION, Thresholds
from trn_burnin.workload import DEFAULT_SAMPLE_TILES

DTYPES = ("bf16", "fp8", "mxfp8", "fp32")
DEFAULT_REPEAT = 4
DEFAULT_WARMUP_S = 30.0
DEFAULT_DURATION_S = 180.0
DEFAULT_OUTPUT = Path("trn-burnin-report.json")
# Absolute: a Slurm batch job starts in the submitting directory, which this node may not have.
DEFAULT_CLUSTER_TEST_OUTPUT = Path("/tmp/trn-burnin-cluster-test.json")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from error
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('expected {"<catalog key>": {"<field>": <value>}, ...}')
    return value


def _number(expected: str, low: float, high: float | None = None, convert: Callable = float) -> Callable:
    """An argparse type accepting ``convert(text)`` within [low, high]."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number("a positive integer", 1, convert=int)
_fraction = _number("a fraction between 0 and 1", 0.0, 1.0)
_seconds = _number("a number of seconds >= 0", 0.0)
_tolerance = _number("a tolerance >= 0", 0.0)
_index = _number("an index >= 0", 0, convert=int)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type accepting the text when ``parse(text)`` raises no ValueError."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
        return text

    return check


_s3_uri = _checked(parse_s3_uri)
_s3_object_uri = _checked(parse_s3_object_uri)


def _ipv4(text: str) -> str:
    if not is_ipv4(text):
        raise argparse.ArgumentTypeError(f"expected this pod's IPv4 address such as $(POD_IP), got {text!r}")
    return text


def _utc_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.utcoffset() != timedelta(0):  # a time without a zone is no deadline
        raise argparse.ArgumentTypeError(f"expected a UTC time such as 2026-12-01T12:25:00Z, got {text!r}")
    return value


def _slurm_job_id(text: str) -> str:
    if not re.fullmatch(r"[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected a Slurm job id such as $SLURM_JOB_ID, got {text!r}")
    return text


def _add_instance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance-type", help="EC2 instance type (default: from instance metadata)")
    parser.add_argument("--catalog-overrides", type=_json_object, default={}, metavar="JSON",
                        help="catalog overrides with cdk.json's catalogOverrides names ("
                             + ", ".join(OVERRIDES) + '), e.g. \'{"trn3-gen1": {"instanceType": "trn3.48xlarge"}}\'')


def _add_target(parser: argparse.ArgumentParser) -> None:
    _add_instance(parser)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16", help="GEMM data type (default: bf16)")
    parser.add_argument("--shape", type=_positive_int, nargs=3, metavar=("M", "K", "N"), default=list(DEFAULT_SHAPE),
                        help="GEMM shape (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trn_burnin",
        description="NKI GEMM burn-in of every physical NeuronCore of this Trainium node, and the "
                    "cluster all-reduce across nodes that passed it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,plan,cluster-test}")

    run = commands.add_parser("run", help="burn in this node and write its report; exit 0 only on pass")
    _add_target(run)
    run.add_argument("--instance-id", help="EC2 instance id (default: from instance metadata)")
    run.add_argument("--ultraserver-id", help="UltraServer this node belongs to, recorded in the report")
    run.add_argument("--repeat", type=_positive_int, default=DEFAULT_REPEAT,
                     help="GEMMs per kernel launch (default: %(default)s)")
    run.add_argument("--warmup", type=_seconds, default=DEFAULT_WARMUP_S, metavar="SECONDS",
                     help="warm-up per core (default: %(default)s)")
    run.add_argument("--duration", type=_seconds, default=DEFAULT_DURATION_S, metavar="SECONDS",
                     help="measured time per core (default: %(default)s)")
    run.add_argument("--sample-tiles", type=_positive_int, default=DEFAULT_SAMPLE_TILES,
                     help="output tiles checked against float32 numpy (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="operand seed (default: %(default)s)")
    run.add_argument("--min-peak-fraction", type=_fraction, default=DEFAULT_MIN_PEAK_FRACTION, metavar="X",
                     help="each core must reach X of the catalog per-core peak (default: %(default)s)")
    run.add_argument("--min-median-fraction", type=_fraction, default=DEFAULT_MIN_MEDIAN_FRACTION, metavar="Y",
                     help="each core must reach Y of the node's median core (default: %(default)s)")
    run.add_argument("--max-rel-error", type=_tolerance, metavar="TOL",
                     help="max |error| / max |reference| (default per dtype: "
                          + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_MAX_REL_ERROR.items()) + ")")
    run.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="report path (default: %(default)s)")
    run.add_argument("--s3-uri", type=_s3_uri, help="also upload the report under s3://bucket/prefix/")
    run.add_argument("--cloudwatch", action="store_true", help="also put per-chip metrics to CloudWatch")
    run.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="CloudWatch namespace (default: %(default)s)")
    run.add_argument("--cluster-name", help="also a ClusterName dimension on every metric")
    run.add_argument("--region", help="AWS region for S3 and CloudWatch (default: the SDK's)")

    plan = commands.add_parser(
        "plan", help="print, per catalog entry and data type, the cores, the peak and threshold TFLOPS per core, "
                     "the data type's roofline ridge and the planned GEMM's intensity; reads no instance metadata")
    _add_instance(plan)
    plan.add_argument("--dtype", choices=DTYPES, help="only this data type (default: every one the core runs)")
    plan.add_argument("--shape", type=_positive_int, nargs=3, metavar=("M", "K", "N"), default=list(DEFAULT_SHAPE),
                      help="GEMM shape (default: %(default)s)")
    plan.add_argument("--min-peak-fraction", type=_fraction, default=DEFAULT_MIN_PEAK_FRACTION, metavar="X",
                      help="the threshold shown: X of the per-core peak (default: %(default)s)")

    cluster = commands.add_parser(
        "cluster-test", help="run the nccom-test all-reduce across nodes, in a Slurm job or across pods that "
                             "meet through S3, and judge its bus bandwidth; exit 0 only on pass")
    _add_instance(cluster)
    cluster.add_argument("--nodes", type=_positive_int, required=True, help="nodes in the test")
    where = cluster.add_mutually_exclusive_group(required=True)
    where.add_argument("--slurm-job-id", type=_slurm_job_id, metavar="ID",
                       help="the Slurm job (allocation) to run in, usually $SLURM_JOB_ID")
    where.add_argument("--rendezvous", type=_s3_uri, metavar="s3://BUCKET/PREFIX/",
                       help="one pod per node: meet the other pods under this S3 prefix, then pod 0 runs "
                            "nccom-test over SSH and puts the result there")
    pods = cluster.add_argument_group("with --rendezvous")
    pods.add_argument("--index", type=_index, help="this pod's index, 0 to --nodes - 1; 0 runs nccom-test")
    pods.add_argument("--pod-ip", type=_ipv4, metavar="IPV4", help="this pod's address")
    pods.add_argument("--rendezvous-seconds", type=_seconds, metavar="SECONDS",
                      help=f"how long pods wait for each other (default: {DEFAULT_RENDEZVOUS_SECONDS:g})")
    pods.add_argument("--not-after", type=_utc_time, metavar="TIMESTAMP",
                      help="when the Job's pods are stopped, in UTC such as 2026-12-01T12:25:00Z: pod 0 shortens "
                           "the rendezvous so that nccom-test ends before it, the others wait for the result "
                           "until it")
    cluster.add_argument("--min-bus-bandwidth-fraction", type=_fraction, metavar="F",
                         default=DEFAULT_MIN_BUS_BANDWIDTH_FRACTION,
                         help="bus bandwidth at the largest size must reach F x the instance's EFA bandwidth "
                              "(default: %(default)s)")
    cluster.add_argument("--result-uri", type=_s3_object_uri, metavar="s3://BUCKET/KEY.json",
                         help="with --slurm-job-id: also put the result at exactly this S3 key")
    cluster.add_argument("--region", help="AWS region for S3 (default: the SDK's)")
    cluster.add_argument("--output", type=Path, default=DEFAULT_CLUSTER_TEST_OUTPUT,
                         help="result path (default: %(default)s)")
    return parser


def _find_spec(parser: argparse.ArgumentParser, args: argparse.Namespace,
               identity: Callable[[], tuple[str, str]]) -> tuple[InstanceSpec, str]:
    """The catalog entry (after overrides) and instance id, from the flags or instance metadata."""
    try:
        catalog = apply_overrides(args.catalog_overrides)
    except (ValueError, TypeError) as error:
        parser.error(f"--catalog-overrides: {error}")
    instance_type, instance_id = args.instance_type, getattr(args, "instance_id", None) or ""
    if not instance_type or (hasattr(args, "instance_id") and not instance_id):
        try:
            found_type, found_id = identity()
        except OSError as error:
            flags = "--instance-type and --instance-id" if hasattr(args, "instance_id") else "--instance-type"
            parser.error(f"could not read instance metadata ({error}); pass {flags}")
        instance_type, instance_id = instance_type or found_type, instance_id or found_id
    spec = find_by_instance_type(instance_type, catalog)
    if spec is None:
        known = ", ".join(e.instance_type for e in catalog.values())
        parser.error(f"instance type {instance_type!r} is not in the catalog ({known}); "
                     "use --catalog-overrides for a renamed type")
    return spec, instance_id


def _resolve_spec(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  identity: Callable[[], tuple[str, str]]) -> tuple[InstanceSpec, str]:
    """_find_spec, and the GEMM's dtype and shape checked against that entry."""
    spec, instance_id = _find_spec(parser, args, identity)
    if args.dtype not in spec.core.supported_dtypes:
        parser.error(f"--dtype {args.dtype} is not supported on NeuronCore-{spec.core.name}; "
                     f"choose from {', '.join(spec.core.supported_dtypes)}")
    try:
        plan_gemm(spec.core, args.dtype, *args.shape)
    except ValueError as error:
        parser.error(f"--shape: {error}")
    return spec, instance_id


def _plan_table(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The catalog as the burn-in sees it: per entry and data type, what a core must reach."""
    try:
        catalog = apply_overrides(args.catalog_overrides)
    except (ValueError, TypeError) as error:
        parser.error(f"--catalog-overrides: {error}")
    specs = [s for s in catalog.values() if args.instance_type in (None, s.instance_type)]
    if not specs:
        parser.error(f"instance type {args.instance_type!r} is not in the catalog "
                     f"({', '.join(s.instance_type for s in catalog.values())})")
    print(f"GEMM {' x '.join(map(str, args.shape))} (M x K x N); threshold = {args.min_peak_fraction:g} x peak")
    print(f"{'entry':<10} {'instance type':<15} {'core':<4} {'cores':>5} {'dtype':<6} {'peak TF':>8} "
          f"{'thresh TF':>9} {'ridge':>6} {'planned':>8} {'x ridge':>7}  blocks MxNxK")
    sources = {}
    for spec in specs:
        for dtype in spec.core.supported_dtypes if args.dtype is None else (args.dtype,):
            if dtype not in spec.core.supported_dtypes:
                continue
            peak, ridge = spec.core.peak(dtype), spec.core.ridge_flop_per_byte(dtype)
            try:
                plan = plan_gemm(spec.core, dtype, *args.shape)
                planned = f"{plan.intensity:>8.0f} {plan.intensity / ridge:>7.2f}  " \
                          f"{plan.block_m}x{plan.block_n}x{plan.block_k}"
            except ValueError as error:
                planned = f"{'-':>8} {'-':>7}  {error}"
            mark = "?" if peak.uncertain else " "
            print(f"{spec.key:<10} {spec.instance_type:<15} {spec.core.name:<4} {spec.neuron_cores_per_instance:>5} "
                  f"{dtype:<6} {peak.tflops:>7.1f}{mark} {args.min_peak_fraction * peak.tflops:>9.1f} "
                  f"{ridge:>6.0f} {planned}")
            sources[(spec.core.name, dtype, peak.source)] = None
    print("peak per core (? = UNCERTAIN, overridable with --catalog-overrides); ridge and planned in FLOP per "
          "HBM byte, ridge = peak / (chip HBM bandwidth / cores per chip); sources:")
    for core, dtype, source in sources:
        print(f"  {core} {dtype}: {source}")
    return 0


def _progress(line: str) -> None:
    """What the run is doing, on stderr: stdout keeps the report's location and the verdict."""
    print(f"trn-burnin {utc_now()} {line}", file=sys.stderr, flush=True)


def _verdict_code(failures: Sequence[Mapping[str, Any]]) -> int:
    print("PASS" if not failures else f"FAIL: {len(failures)} failure(s)")
    for failure in failures:
        print(f"  - {failure['message']}")
    return 0 if not failures else 1


_RENDEZVOUS_NEEDS = (("--index", "index"), ("--pod-ip", "pod_ip"))
_RENDEZVOUS_ONLY = (*_RENDEZVOUS_NEEDS, ("--rendezvous-seconds", "rendezvous_seconds"), ("--not-after", "not_after"))


def _check_placement(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags that only make sense with the other placement are usage errors."""
    if not args.rendezvous:
        given = [flag for flag, dest in _RENDEZVOUS_ONLY if getattr(args, dest) is not None]
        if given:
            parser.error(f"{', '.join(given)}: only with --rendezvous")
        return
    if args.result_uri:
        bucket, prefix = parse_s3_uri(args.rendezvous)
        parser.error(f"--result-uri is for --slurm-job-id; with --rendezvous the result goes to "
                     f"s3://{bucket}/{prefix}{RESULT_NAME}")
    missing = [flag for flag, dest in _RENDEZVOUS_NEEDS if getattr(args, dest) is None]
    if missing:
        parser.error(f"--rendezvous needs {' and '.join(missing)}")
    if args.index >= args.nodes:
        parser.error(f"--index {args.index} is not below --nodes {args.nodes}")


def _cluster_test(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  identity: Callable[[], tuple[str, str]], nccom: NccomRunner,
                  clients: ClientFactory | None, ssh: Ssh | None, clock: Clock | None) -> int:
    _check_placement(parser, args)
    if args.rendezvous and args.nodes == 1:
        print("a single node has nothing to test across: no cluster all-reduce")
        return 0
    spec, _ = _find_spec(parser, args, identity)
    plan = AllReducePlan.for_cluster(spec, args.nodes)
    floor = BusBandwidthFloor.for_spec(spec, args.min_bus_bandwidth_fraction)
    clients = clients or boto3_client_factory(args.region)

    def run_test(placement: Placement) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="trn-burnin-nccom-") as scratch:
            return run_cluster_test(spec, plan, floor, placement, Path(scratch) / "nccom-test.json", nccom, utc_now)

    if not args.rendezvous:
        result_uri = args.result_uri
        result = run_test(SlurmPlacement(args.slurm_job_id))
    else:
        folder, pod = RunFolder.from_uri(args.rendezvous, clients), Pod(args.index, args.pod_ip, args.nodes)
        rendezvous_s = DEFAULT_RENDEZVOUS_SECONDS if args.rendezvous_seconds is None else args.rendezvous_seconds
        ssh, clock = ssh or OpenSsh(), clock or Clock()
        # The rendezvous keeps time on the monotonic clock: convert the wall-clock deadline once.
        not_after = (None if args.not_after is None
                     else clock.now() + (args.not_after - datetime.fromisoformat(utc_now())).total_seconds())
        if pod.index != LAUNCHER_INDEX:
            code, outcome = join(pod, folder, ssh, clock, rendezvous_s, not_after)
            print(outcome)
            return code
        result_uri = folder.uri(RESULT_NAME)
        result = lead(pod, folder, ssh, clock, rendezvous_s, run_test,
                      lambda failures: result_document(spec, plan, floor, utc_now(), failures), not_after)
    problems = validate_report(result, load_schema(CLUSTER_TEST_SCHEMA_PATH))
    if problems:  # a bug in this package, not in the cluster
        raise RuntimeError("cluster test result does not match its schema: " + "; ".join(problems))
    print(f"result: {write_local(result, args.output)}")
    if result_uri:
        print(f"uploaded: {put_s3_object(result, result_uri, clients)}")
    return _verdict_code(result["verdict"]["failures"])


def main(argv: Sequence[str] | None = None, *, host: DeviceLayer | None = None,
         identity: Callable[[], tuple[str, str]] = instance_identity,
         clients: ClientFactory | None = None, nccom: NccomRunner | None = None,
         ssh: Ssh | None = None, clock: Clock | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "cluster-test":
        return _cluster_test(parser, args, identity, nccom or NccomTest(), clients, ssh, clock)
    if args.command == "plan":
        return _plan_table(parser, args)
    spec, instance_id = _resolve_spec(parser, args, identity)
    thresholds = Thresholds.for_dtype(args.dtype, min_peak_fraction=args.min_peak_fraction,
                                      min_median_fraction=args.min_median_fraction,
                                      max_rel_error=args.max_rel_error)
    options = RunOptions(spec, instance_id, args.ultraserver_id, args.dtype, tuple(args.shape), args.repeat,
                         args.warmup, args.duration, args.sample_tiles, args.seed, thresholds)
    report = run_burnin(options, host or NeuronHost(), progress=_progress)
    problems = validate_report(report)
    if problems:  # a bug in this package, not in the node: say so loudly
        raise RuntimeError("report does not match its schema: " + "; ".join(problems))
    print(f"report: {write_local(report, args.output)}")
    clients = clients or boto3_client_factory(args.region)
    if args.s3_uri:
        print(f"uploaded: {upload_s3(report, args.s3_uri, clients)}")
    if args.cloudwatch:
        count = put_metrics(report, args.namespace, clients, args.cluster_name)
        print(f"metrics: {count} to {args.namespace}")
    return _verdict_code(report["verdict"]["failures"])
