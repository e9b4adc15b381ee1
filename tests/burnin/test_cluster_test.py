"""The cluster all-reduce: plan, floor, verdicts, result document and CLI, against EMULATED nccom-test."""

import json
import stat

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tests.burnin.nccom_emulation import EmulatedNccomTest
from trn_burnin.catalog import CATALOG
from trn_burnin.cli import main
from trn_burnin.collective import (GIB, SCHEMA_PATH, AllReducePlan, BusBandwidthFloor, NccomTest,
                                   SlurmPlacement, run_cluster_test)
from trn_burnin.publish import parse_s3_object_uri
from trn_burnin.report_check import load_schema, validate_report

MIB = 2**20
NOW = "2026-11-22T09:00:00Z"
RESULT_URI = "s3://reports/cluster-test/req-1/result.json"


def _result(nccom, spec_key="trn2", nodes=4, fraction=0.25, json_path=None, tmp_path=None):
    spec = CATALOG[spec_key]
    plan, floor = AllReducePlan.for_cluster(spec, nodes), BusBandwidthFloor.for_spec(spec, fraction)
    document = run_cluster_test(spec, plan, floor, SlurmPlacement("1234"), json_path or tmp_path / "nccom.json", nccom,
                                lambda: NOW, binary="nccom-test")
    assert validate_report(document, load_schema(SCHEMA_PATH)) == []
    return document


def _messages(document):
    return [f["message"] for f in document["verdict"]["failures"]]


# -- plan and floor ----------------------------------------------------------------------------
def test_trn2_plan_runs_one_rank_per_logical_core_inside_the_slurm_job(tmp_path):
    plan = AllReducePlan.for_cluster(CATALOG["trn2"], 4)
    assert (plan.ranks, plan.sizes) == (256, (64 * MIB, 256 * MIB, GIB))
    # Neuron's multi-node guide: libfabric's EFA provider with device RDMA, for every rank.
    assert plan.environment == {
        "NEURON_LOGICAL_NC_CONFIG": "2", "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1",
    }
    assert plan.argv(SlurmPlacement("1234"), tmp_path / "n.json", "/opt/aws/neuron/bin/nccom-test") == [
        "/opt/aws/neuron/bin/nccom-test", "all_reduce", "-r", "256", "-N", "4", "-b", "64MB", "-e", "1GB",
        "-f", "4", "-n", "20", "-w", "5", "-d", "fp32", "--check", "all_ones", "--slurm-mode", "--slurm-job-id", "1234",
        "--non-interactive", "--report-to-json-file", str(tmp_path / "n.json")]


def test_trn3_gen2_plan_counts_its_four_chip_servers(tmp_path):
    spec = CATALOG["trn3-gen2"]
    assert spec.logical_cores_per_instance == 16
    argv = AllReducePlan.for_cluster(spec, 36).argv(SlurmPlacement("77"), tmp_path / "n.json", "nccom-test")
    assert argv[2:6] == ["-r", "576", "-N", "36"]


@pytest.mark.parametrize("key, fraction, floor", [
    ("trn2", 0.25, 93.13), ("trn2", 0.5, 186.26), ("trn3-gen2", 0.25, 23.28)])
def test_floor_is_a_fraction_of_the_catalog_efa_bandwidth_in_gib_per_s(key, fraction, floor):
    threshold = BusBandwidthFloor.for_spec(CATALOG[key], fraction)
    assert round(threshold.min_bus_bandwidth_gibps, 2) == floor
    assert threshold.to_dict()["efa_gbps_per_instance"] == CATALOG[key].efa_gbps_per_instance


# -- verdicts ----------------------------------------------------------------------------------
def test_a_healthy_cluster_passes_on_the_largest_size(tmp_path):
    nccom = EmulatedNccomTest(busbw_gibps=150.0)
    document = _result(nccom, tmp_path=tmp_path)
    assert document["verdict"] == {"passed": True, "failures": []}
    assert document["bus_bandwidth_gibps"] == 150.0
    assert [r["size_bytes"] for r in document["results"]] == [64 * MIB, 256 * MIB, GIB]
    assert document["results"][0]["busbw_gibps"] < 93.13  # small sizes are latency-bound, not judged
    assert document["threshold"] == {"min_bus_bandwidth_gibps": pytest.approx(93.132, abs=1e-3),
                                     "fraction": 0.25, "efa_gbps_per_instance": 3200}
    assert (document["nodes"], document["ranks"], document["instance_type"]) == (4, 256, "trn2.48xlarge")
    assert document["command"] == nccom.calls[0][0]
    assert nccom.calls[0][1] == document["environment"] == {
        "NEURON_LOGICAL_NC_CONFIG": "2", "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1",
    }


def test_below_the_floor_fails_with_the_numbers(tmp_path):
    document = _result(EmulatedNccomTest(busbw_gibps=12.3), tmp_path=tmp_path)
    assert _messages(document) == [
        "all-reduce bus bandwidth 12.3 GiB/s across 4 nodes is below the 93.1 GiB/s floor "
        "(25% of 3200 Gbps EFA per instance)"]
    assert document["bus_bandwidth_gibps"] == 12.3


def test_a_failed_run_quotes_nccom_tests_last_lines(tmp_path):
    document = _result(EmulatedNccomTest(exit_code=1, write_json=False), tmp_path=tmp_path)
    assert _messages(document) == [
        "nccom-test exited 1: 1073741824 268435456 fp32 13281.25 75.294 150.0 | Failure running neuron-bench "
        "- log file /tmp/nccom_test_log_x.log | 1 errors found - test failed",
        "nccom-test reported no results (--report-to-json-file)",
    ]
    assert document["bus_bandwidth_gibps"] is None


def test_no_json_and_a_stale_file_from_an_earlier_run_both_fail(tmp_path):
    stale = tmp_path / "nccom.json"
    stale.write_text(json.dumps({"results": [{"size(B)": GIB, "count(elems)": GIB // 4, "type": "fp32",
                                              "algbw(GB/s)": 200.0, "busbw(GB/s)": 399.0, "time:avg(us)": 1.0}]}))
    document = _result(EmulatedNccomTest(write_json=False), json_path=stale)
    assert _messages(document) == ["nccom-test reported no results (--report-to-json-file)"]
    assert document["results"] == [] and document["bus_bandwidth_gibps"] is None


def test_results_without_the_largest_size_fail(tmp_path):
    document = _result(EmulatedNccomTest(skip_sizes=(GIB,)), tmp_path=tmp_path)
    assert _messages(document) == [
        "nccom-test reported no result for the largest size, 1073741824 bytes (largest reported: 268435456 bytes)"]


def test_results_in_another_format_fail_readably(tmp_path):
    class Renamed(EmulatedNccomTest):
        def rows(self, argv):
            rows = super().rows(argv)
            return [{("busbw" if key == "busbw(GB/s)" else key): value for key, value in row.items()}
                    for row in rows]

    assert _messages(_result(Renamed(), tmp_path=tmp_path)) == [
        "nccom-test results are not in the documented format (KeyError: 'busbw(GB/s)')"]


def test_the_real_runner_reports_exit_code_output_and_json(tmp_path):
    fake = tmp_path / "nccom-test"
    fake.write_text('#!/bin/sh\necho "LNC=$NEURON_LOGICAL_NC_CONFIG"\necho \'{"results": []}\' > "$1"\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    run = NccomTest().run([str(fake), str(tmp_path / "out.json")], {"NEURON_LOGICAL_NC_CONFIG": "2"},
                          tmp_path / "out.json")
    assert (run.exit_code, run.output, run.report) == (3, "LNC=2\n", {"results": []})
    missing = NccomTest().run([str(tmp_path / "absent")], {}, tmp_path / "none.json")
    assert missing.exit_code is None and missing.output.startswith(f"could not start {tmp_path / 'absent'}")
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    timed_out = NccomTest(timeout_s=0.2).run([str(slow)], {}, tmp_path / "none.json")
    assert (timed_out.exit_code, timed_out.output) == (None, "nccom-test did not finish within 0 s")


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def s3():
    client = boto3.client("s3", region_name="us-east-2", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _cli(tmp_path, *extra):
    return ["cluster-test", "--nodes", "4", "--slurm-job-id", "1234", "--result-uri", RESULT_URI,
            "--region", "us-east-2", "--output", str(tmp_path / "result.json"), *extra]


@pytest.mark.parametrize("busbw, code", [(150.0, 0), (30.0, 1)])
def test_cli_puts_the_result_at_the_exact_key_and_exits_by_verdict(tmp_path, s3, capsys, busbw, code):
    client, stub = s3
    stub.add_response("put_object", {}, {"Bucket": "reports", "Key": "cluster-test/req-1/result.json",
                                         "Body": ANY, "ContentType": "application/json"})
    nccom = EmulatedNccomTest(busbw_gibps=busbw)
    argv = _cli(tmp_path, "--instance-type", "trn3.48xlarge", "--min-bus-bandwidth-fraction", "0.1",
                "--catalog-overrides", '{"trn3-gen1": {"instance_type": "trn3.48xlarge"}}')
    assert main(argv, identity=pytest.fail, clients={"s3": client}.__getitem__, nccom=nccom) == code
    document = json.loads((tmp_path / "result.json").read_text())
    assert document["threshold"]["min_bus_bandwidth_gibps"] == pytest.approx(0.1 * 3200e9 / 8 / 2**30)
    assert document["verdict"]["passed"] is (code == 0)
    assert nccom.calls[0][0][nccom.calls[0][0].index("--slurm-job-id") + 1] == "1234"
    out = capsys.readouterr().out
    assert f"uploaded: {RESULT_URI}" in out and ("PASS" if code == 0 else "FAIL: 1 failure(s)") in out


def test_cli_reads_the_instance_type_from_metadata(tmp_path):
    nccom = EmulatedNccomTest()
    argv = ["cluster-test", "--nodes", "2", "--slurm-job-id", "9", "--output", str(tmp_path / "r.json")]
    assert main(argv, identity=lambda: ("trn2.48xlarge", "i-1"), nccom=nccom) == 0
    assert nccom.calls[0][0][2:4] == ["-r", "128"]


@pytest.mark.parametrize("argv, message", [
    (["cluster-test", "--slurm-job-id", "1"], "the following arguments are required: --nodes"),
    (["cluster-test", "--nodes", "2", "--slurm-job-id", ""], "expected a Slurm job id"),
    (["cluster-test", "--nodes", "0", "--slurm-job-id", "1"], "expected a positive integer"),
    (["cluster-test", "--nodes", "2", "--slurm-job-id", "1", "--min-bus-bandwidth-fraction", "2"], "between 0 and 1"),
    (["cluster-test", "--nodes", "2", "--slurm-job-id", "1", "--result-uri", "s3://b/prefix/"],
     "expected s3://bucket/key, got 's3://b/prefix/'"),
    (["cluster-test", "--nodes", "2", "--slurm-job-id", "1"],
     "could not read instance metadata (no route to host); pass --instance-type\n"),
])
def test_cli_usage_errors_are_messages(argv, message, capsys):
    def no_metadata():
        raise OSError("no route to host")

    with pytest.raises(SystemExit) as exit_info:
        main(argv, identity=no_metadata, nccom=EmulatedNccomTest())
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_exact_object_uris():
    assert parse_s3_object_uri(RESULT_URI) == ("reports", "cluster-test/req-1/result.json")
    for bad in ("s3://reports", "s3://reports/", "https://reports/key.json"):
        with pytest.raises(ValueError, match="expected s3://bucket/key"):
            parse_s3_object_uri(bad)
