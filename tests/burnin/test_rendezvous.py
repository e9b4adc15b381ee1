"""The EKS cluster all-reduce: pods meeting through S3 and nccom-test over SSH, against EMULATED S3, SSH
and nccom-test (tests/burnin/rendezvous_fakes.py, nccom_emulation.py), and the real OpenSSH layer's
files and commands with a recording runner instead of processes."""

import json
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.burnin.nccom_emulation import EmulatedNccomTest
from tests.burnin.rendezvous_fakes import FakeNetwork, FakeS3, FakeSsh, FakeTime
from trn_burnin import cli
from trn_burnin.catalog import CATALOG
from trn_burnin.cli import main
from trn_burnin.collective import SCHEMA_PATH, AllReducePlan, HostsPlacement, SlurmPlacement
from trn_burnin.rendezvous import Clock, OpenSsh, RunFolder, SshError, run_command
from trn_burnin.report_check import load_schema, validate_report

BUCKET, PREFIX = "reports", "cluster-test/run-1/"
RUN = f"s3://{BUCKET}/{PREFIX}"
IPS = ("10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.1.13")
TRN2 = ["--instance-type", "trn2.48xlarge"]
NOW = "2026-12-01T12:00:00Z"
SSHD_DOWN = "/usr/sbin/sshd exited 255: Missing privilege separation directory: /run/sshd"


def _argv(index, nodes=4, *extra, tmp_path):
    return ["cluster-test", "--nodes", str(nodes), "--rendezvous", RUN, "--index", str(index),
            "--pod-ip", IPS[index], *TRN2, "--region", "us-east-2", "--output", str(tmp_path / f"r{index}.json"),
            *extra]


def _pod(index, s3, ssh, clock, nccom=None, tmp_path=None, nodes=4, extra=()):
    return main(_argv(index, nodes, *extra, tmp_path=tmp_path), identity=pytest.fail, clients=lambda service: s3,
                nccom=nccom or EmulatedNccomTest(), ssh=ssh, clock=clock)


@pytest.fixture
def wall_clock(monkeypatch):
    """The CLI's UTC time, NOW, against which it reads --not-after."""
    monkeypatch.setattr(cli, "utc_now", lambda: NOW)


def _register(s3, *indexes):
    folder = RunFolder(BUCKET, PREFIX, lambda service: s3)
    for index in indexes:
        folder.put_json(f"hosts/{index}.json", {"index": index, "ip": IPS[index]})


def _publish_key(s3):
    RunFolder(BUCKET, PREFIX, lambda service: s3).put_text("launcher.pub", "ssh-ed25519 AAAA-launcher root@pod-0")


def _result(s3):
    document = json.loads(s3.text(BUCKET, PREFIX + "result.json"))
    assert validate_report(document, load_schema(SCHEMA_PATH)) == []
    return document


def _not_run(document, *messages):
    assert document["verdict"] == {"passed": False, "failures": [{"message": m} for m in messages]}
    assert (document["command"], document["environment"], document["results"]) == ([], {}, [])
    assert document["bus_bandwidth_gibps"] is None and document["nodes"] == 4


# -- placements --------------------------------------------------------------------------------
def test_hosts_placement_puts_rank_0_and_the_collector_on_the_first_host(tmp_path):
    placement = HostsPlacement(IPS[:2])
    argv = AllReducePlan.for_cluster(CATALOG["trn2"], 2).argv(placement, tmp_path / "n.json", "nccom-test")
    assert argv[argv.index("--check"):] == [
        "--check", "all_ones", "--hosts", "10.0.1.10", "10.0.1.11", "--data-collector-host", "10.0.1.10",
        "--data-collector-port", "60006", "--non-interactive", "--report-to-json-file", str(tmp_path / "n.json")]
    assert placement.environment == {"NEURON_RT_ROOT_COMM_ID": "10.0.1.10:63182", "CCOM_SOCKET_IFNAME": "eth0",
                                     "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    assert (SlurmPlacement("7").args, SlurmPlacement("7").environment) == (["--slurm-mode", "--slurm-job-id", "7"], {})


# -- the whole run -----------------------------------------------------------------------------
def test_four_pods_meet_and_pod_0_runs_nccom_test_on_every_host_in_index_order(tmp_path, capsys):
    s3, network, nccom = FakeS3(page_size=2), FakeNetwork(), EmulatedNccomTest(busbw_gibps=150.0)
    ssh = {index: FakeSsh(network, IPS[index]) for index in range(4)}
    clock = Clock(sleep=lambda seconds: time.sleep(0.002))  # real time, short naps: threads meet in ms
    with ThreadPoolExecutor(max_workers=4) as pool:  # workers first, in reverse, then the launcher
        runs = {index: pool.submit(_pod, index, s3, ssh[index], clock, nccom, tmp_path) for index in (3, 2, 1, 0)}
        codes = {index: run.result(timeout=10) for index, run in runs.items()}
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0}
    [(argv, env)] = nccom.calls
    assert argv[argv.index("--hosts"):argv.index("--non-interactive")] == [
        "--hosts", *IPS, "--data-collector-host", IPS[0], "--data-collector-port", "60006"]
    assert argv[2:6] == ["-r", "256", "-N", "4"]
    assert env == {"NEURON_LOGICAL_NC_CONFIG": "2", "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1",
                   "NEURON_RT_ROOT_COMM_ID": "10.0.1.10:63182", "CCOM_SOCKET_IFNAME": "eth0",
                   "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    result = _result(s3)
    assert result["verdict"]["passed"] and (result["command"], result["environment"]) == (argv, env)
    assert json.loads((tmp_path / "r0.json").read_text()) == result
    assert s3.text(BUCKET, PREFIX + "launcher.pub") == ssh[0].key
    assert network.servers == {ip: ssh[0].key for ip in IPS}  # every sshd lets the launcher in, itself too
    assert {key for key in s3.puts if key.startswith(PREFIX + "hosts/")} == {
        f"{PREFIX}hosts/{i}.json" for i in (1, 2, 3)}
    assert json.loads(s3.text(BUCKET, PREFIX + "hosts/2.json")) == {"index": 2, "ip": "10.0.1.12"}
    out = capsys.readouterr().out
    assert f"uploaded: {RUN}result.json" in out and "PASS" in out
    assert out.count(f"the launcher (pod 0) put its verdict at {RUN}result.json") == 3


def test_a_worker_whose_sshd_fails_tells_pod_0_which_fails_without_waiting_out_the_rendezvous(tmp_path, capsys):
    s3, network = FakeS3(), FakeNetwork()
    ssh = {index: FakeSsh(network, IPS[index], start_error=SSHD_DOWN if index == 2 else None) for index in range(4)}
    clock = Clock(sleep=lambda seconds: time.sleep(0.002))
    nccom = EmulatedNccomTest()
    rendezvous = ["--rendezvous-seconds", "5"]  # were pod 0 to wait it out, it would say "did not register"
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = {index: pool.submit(_pod, index, s3, ssh[index], clock, nccom, tmp_path, extra=rendezvous)
                for index in (3, 2, 1, 0)}
        codes = {index: run.result(timeout=10) for index, run in runs.items()}
    assert codes == {0: 1, 1: 0, 2: 1, 3: 0} and nccom.calls == []
    message = f"cannot start SSH on pod 2 at 10.0.1.12: {SSHD_DOWN}"
    assert json.loads(s3.text(BUCKET, PREFIX + "hosts/2.json")) == {"index": 2, "error": message}
    _not_run(_result(s3), f"pod 2 could not take part: {message}")
    out = capsys.readouterr().out
    assert f"told the launcher this pod cannot take part: {RUN}hosts/2.json\n{message}\n" in out


def test_pods_that_never_register_and_pods_that_report_errors_are_all_named(tmp_path):
    s3, fake_time = FakeS3(), FakeTime()
    _register(s3, 1)
    RunFolder(BUCKET, PREFIX, lambda service: s3).put_json("hosts/3.json", {"index": 3, "error": "no sshd"})
    assert _pod(0, s3, FakeSsh(FakeNetwork(), IPS[0]), fake_time.clock(), tmp_path=tmp_path) == 1
    _not_run(_result(s3), "pod 2 of 4 did not register within 600 s (see those pods of the cluster-test Job: "
                          "unscheduled, or their logs say why)",
             "pod 3 could not take part: no sshd")
    assert fake_time.now_s == 600


@pytest.mark.parametrize("present, message", [
    ((1, 3), "pod 2 of 4 did not register within 600 s"),
    ((1,), "pods 2, 3 of 4 did not register within 600 s"),
])
def test_pods_that_never_register_fail_the_test_by_index(tmp_path, capsys, present, message):
    s3, fake_time, nccom = FakeS3(), FakeTime(), EmulatedNccomTest()
    _register(s3, *present)
    assert _pod(0, s3, FakeSsh(FakeNetwork(), IPS[0]), fake_time.clock(), nccom, tmp_path) == 1
    _not_run(_result(s3), message + " (see those pods of the cluster-test Job: unscheduled, or their logs say why)")
    assert nccom.calls == [] and fake_time.now_s == 600 and max(fake_time.naps) == 5
    assert f"FAIL: 1 failure(s)\n  - {message}" in capsys.readouterr().out


@pytest.mark.parametrize("not_after, waited", [
    ("2026-12-01T12:12:00Z", 300),  # 720 s left, of which nccom-test needs 360 and the verdict 60
    ("2026-12-01T13:00:00+00:00", 600),  # later than --rendezvous-seconds' end
    ("2026-12-01T11:00:00Z", 0),  # already past: the verdict at once
])
def test_not_after_shortens_pod_0s_rendezvous_to_leave_nccom_test_its_time(tmp_path, capsys, wall_clock,
                                                                          not_after, waited):
    s3, fake_time = FakeS3(), FakeTime(now_s=5000.0)  # the monotonic clock has its own origin
    _register(s3, 1, 3)
    assert _pod(0, s3, FakeSsh(FakeNetwork(), IPS[0]), fake_time.clock(), tmp_path=tmp_path,
                extra=["--not-after", not_after]) == 1
    _not_run(_result(s3), f"pod 2 of 4 did not register within {waited} s (see those pods of the cluster-test "
                          "Job: unscheduled, or their logs say why)")
    assert fake_time.now_s == 5000 + waited and (waited or fake_time.naps == [])
    assert f"waiting up to {waited} s for pods 1, 2, 3 to register under {RUN}hosts/" in capsys.readouterr().out


def test_pods_the_launcher_cannot_log_in_to_are_named_with_ssh_last_words(tmp_path):
    s3, network = FakeS3(), FakeNetwork()
    launcher = FakeSsh(network, IPS[0])
    _register(s3, 1, 2, 3)
    network.servers.update({IPS[1]: "ssh-ed25519 AAAA-the-launcher's", IPS[3]: "ssh-ed25519 AAAA-someone-else"})
    launcher.create_key = lambda: "ssh-ed25519 AAAA-the-launcher's"
    launcher.key = "ssh-ed25519 AAAA-the-launcher's"
    assert _pod(0, s3, launcher, FakeTime().clock(), tmp_path=tmp_path) == 1
    _not_run(_result(s3),
             "cannot reach pod 2 at 10.0.1.12 over SSH: ssh: connect to host 10.0.1.12 port 22: Connection refused",
             "cannot reach pod 3 at 10.0.1.13 over SSH: root@10.0.1.13: Permission denied (publickey).")


def test_a_registration_without_a_usable_address_fails(tmp_path):
    s3 = FakeS3()
    _register(s3, 1, 3)
    RunFolder(BUCKET, PREFIX, lambda service: s3).put_json("hosts/2.json", {"index": 2, "ip": "$(POD_IP)"})
    assert _pod(0, s3, FakeSsh(FakeNetwork(), IPS[0]), FakeTime().clock(), tmp_path=tmp_path) == 1
    _not_run(_result(s3), f"pod 2 registered no usable address at {RUN}hosts/2.json "
                          "(no IPv4 address for index 2 in {'index': 2, 'ip': '$(POD_IP)'})")


def test_a_launcher_whose_sshd_does_not_start_says_so_and_publishes_no_key(tmp_path):
    s3 = FakeS3()
    ssh = FakeSsh(FakeNetwork(), IPS[0], start_error=SSHD_DOWN)
    assert _pod(0, s3, ssh, FakeTime().clock(), tmp_path=tmp_path) == 1
    _not_run(_result(s3), f"cannot start SSH on pod 0 at 10.0.1.10: {SSHD_DOWN}")
    assert s3.puts == [PREFIX + "result.json"]


@pytest.mark.parametrize("key_at", [0, 100])
def test_a_worker_registers_then_waits_for_the_verdict_from_then_on_and_gives_up(tmp_path, capsys, key_at):
    s3, network, fake_time = FakeS3(), FakeNetwork(), FakeTime()
    fake_time.at(key_at, lambda: _publish_key(s3))
    assert _pod(2, s3, FakeSsh(network, IPS[2]), fake_time.clock(), tmp_path=tmp_path) == 1
    assert network.servers == {IPS[2]: "ssh-ed25519 AAAA-launcher root@pod-0"}
    assert json.loads(s3.text(BUCKET, PREFIX + "hosts/2.json")) == {"index": 2, "ip": "10.0.1.12"}
    assert fake_time.now_s == key_at + 600 + 360 + 60  # the launcher may have started when the key came
    assert capsys.readouterr().out.endswith(
        f"registered 10.0.1.12: {RUN}hosts/2.json; waiting up to 1020 s for the launcher's verdict\n"
        "no result from the launcher (pod 0) within 1020 s\n")
    assert not (tmp_path / "r2.json").exists()


@pytest.mark.parametrize("not_after, outcome, ends_at", [
    ("2026-12-01T12:25:00Z", "no result from the launcher (pod 0) within 1400 s", 1500),
    ("2026-12-01T12:01:40Z", "no result from the launcher (pod 0) within 0 s", 100),
    ("2026-12-01T12:00:50Z", f"no SSH key from the launcher (pod 0) at {RUN}launcher.pub within 50 s", 50),
])
def test_with_not_after_a_worker_waits_for_the_key_and_the_verdict_until_then(tmp_path, capsys, wall_clock,
                                                                              not_after, outcome, ends_at):
    s3, fake_time = FakeS3(), FakeTime()
    fake_time.at(100, lambda: _publish_key(s3))
    assert _pod(2, s3, FakeSsh(FakeNetwork(), IPS[2]), fake_time.clock(), tmp_path=tmp_path,
                extra=["--not-after", not_after]) == 1
    assert fake_time.now_s == ends_at
    assert capsys.readouterr().out.endswith(outcome + "\n")


def test_a_worker_whose_sshd_fails_registers_its_error(tmp_path, capsys):
    s3, network = FakeS3(), FakeNetwork()
    _publish_key(s3)
    assert _pod(2, s3, FakeSsh(network, IPS[2], start_error=SSHD_DOWN), FakeTime().clock(), tmp_path=tmp_path) == 1
    message = f"cannot start SSH on pod 2 at 10.0.1.12: {SSHD_DOWN}"
    assert json.loads(s3.text(BUCKET, PREFIX + "hosts/2.json")) == {"index": 2, "error": message}
    assert network.servers == {}
    assert capsys.readouterr().out == f"told the launcher this pod cannot take part: {RUN}hosts/2.json\n{message}\n"


@pytest.mark.parametrize("extra, waited", [((), 600), (("--not-after", "2026-12-01T11:59:00Z"), 0)])
def test_a_worker_without_the_launcher_key_registers_nothing(tmp_path, capsys, wall_clock, extra, waited):
    s3, network, fake_time = FakeS3(), FakeNetwork(), FakeTime()
    assert _pod(1, s3, FakeSsh(network, IPS[1]), fake_time.clock(), tmp_path=tmp_path, extra=extra) == 1
    assert s3.puts == [] and network.servers == {} and fake_time.now_s == waited
    assert capsys.readouterr().out == f"no SSH key from the launcher (pod 0) at {RUN}launcher.pub within {waited} s\n"


def test_the_run_folder_makes_one_s3_client(tmp_path):
    s3, made = FakeS3(), []
    folder = RunFolder.from_uri(RUN, lambda service: made.append(service) or s3)
    folder.put_text("launcher.pub", "key")
    folder.put_json("hosts/1.json", {"index": 1, "ip": IPS[1]})
    assert (folder.names("hosts/"), folder.read_if_present("launcher.pub")) == ({"hosts/1.json"}, b"key")
    assert made == ["s3"]


def test_a_single_node_has_nothing_to_test_across(tmp_path, capsys):
    s3, nccom = FakeS3(), EmulatedNccomTest()
    argv = ["cluster-test", "--nodes", "1", "--rendezvous", RUN, "--index", "0", "--pod-ip", IPS[0],
            "--output", str(tmp_path / "r.json")]
    assert main(argv, identity=pytest.fail, clients=pytest.fail, nccom=nccom, ssh=pytest.fail) == 0
    assert (s3.puts, nccom.calls, (tmp_path / "r.json").exists()) == ([], [], False)
    assert capsys.readouterr().out == "a single node has nothing to test across: no cluster all-reduce\n"


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "2", "--index", "0", "--pod-ip", IPS[0]],
     "one of the arguments --slurm-job-id --rendezvous is required"),
    (["--nodes", "2", "--slurm-job-id", "1", "--rendezvous", RUN],
     "argument --rendezvous: not allowed with argument --slurm-job-id"),
    (["--nodes", "2", "--rendezvous", "https://reports/run/"],
     "argument --rendezvous: expected s3://bucket[/prefix], got 'https://reports/run/'"),
    (["--nodes", "2", "--rendezvous", RUN, "--pod-ip", IPS[0]], "--rendezvous needs --index"),
    (["--nodes", "2", "--rendezvous", RUN], "--rendezvous needs --index and --pod-ip"),
    (["--nodes", "2", "--rendezvous", RUN, "--index", "-1", "--pod-ip", IPS[0]],
     "argument --index: expected an index >= 0, got '-1'"),
    (["--nodes", "4", "--rendezvous", RUN, "--index", "4", "--pod-ip", IPS[0]], "--index 4 is not below --nodes 4"),
    (["--nodes", "2", "--rendezvous", RUN, "--index", "0", "--pod-ip", "$(POD_IP)"],
     "argument --pod-ip: expected this pod's IPv4 address such as $(POD_IP), got '$(POD_IP)'"),
    (["--nodes", "2", "--rendezvous", RUN, "--index", "0", "--pod-ip", IPS[0], "--rendezvous-seconds", "x"],
     "argument --rendezvous-seconds: expected a number of seconds >= 0, got 'x'"),
    (["--nodes", "2", "--rendezvous", RUN, "--index", "0", "--pod-ip", IPS[0], "--result-uri", "s3://b/k.json"],
     f"--result-uri is for --slurm-job-id; with --rendezvous the result goes to {RUN}result.json"),
    (["--nodes", "2", "--slurm-job-id", "1", "--index", "0", "--rendezvous-seconds", "5"],
     "--index, --rendezvous-seconds: only with --rendezvous"),
    (["--nodes", "2", "--slurm-job-id", "1", "--not-after", "2026-12-01T12:25:00Z"],
     "--not-after: only with --rendezvous"),
    *((["--nodes", "2", "--rendezvous", RUN, "--index", "0", "--pod-ip", IPS[0], "--not-after", bad],
       f"argument --not-after: expected a UTC time such as 2026-12-01T12:25:00Z, got {bad!r}")
      for bad in ("12:25", "2026-12-01T12:25:00", "2026-12-01T13:25:00+01:00", "")),
])
def test_rendezvous_usage_errors_are_messages(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cluster-test", *argv], identity=pytest.fail, clients=pytest.fail, nccom=EmulatedNccomTest(),
             ssh=pytest.fail)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f": error: {message}\n")


# -- the real OpenSSH layer, with a recording runner ------------------------------------------
class Commands:
    """Records argv; ssh-keygen leaves a key pair behind as the real one does."""

    def __init__(self, codes=None, stderr=""):
        self.calls, self.codes, self.stderr = [], codes or {}, stderr

    def __call__(self, argv, timeout_s):
        self.calls.append(list(argv))
        if argv[0] == "ssh-keygen":
            path = argv[argv.index("-f") + 1]
            with open(path, "w") as key, open(path + ".pub", "w") as public:
                key.write("PRIVATE\n")
                public.write(f"ssh-ed25519 AAAA{len(self.calls)} root@pod\n")
        return subprocess.CompletedProcess(argv, self.codes.get(argv[0], 0), "", self.stderr)


ENVIRON = {"PATH": "/opt/aws/neuron/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/amazon/efa/lib64", "HOME": "/x",
           "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"}


def test_the_pod_sshd_has_its_own_config_key_and_session_environment(tmp_path):
    commands, state, privsep = Commands(), tmp_path / "sshd", tmp_path / "run" / "sshd"
    state.mkdir()
    (state / "host_key").write_text("STALE\n")  # ssh-keygen would stop to ask about overwriting it
    ssh = OpenSsh(state, port=2222, privsep_dir=privsep, home=tmp_path, environ=ENVIRON, run=commands)
    ssh.start_server("ssh-ed25519 AAAA-l\n")
    assert stat.S_IMODE(privsep.stat().st_mode) == 0o755  # sshd's privilege separation directory
    assert commands.calls == [
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state / "host_key")],
        ["/usr/sbin/sshd", "-f", str(state / "sshd_config"), "-E", str(state / "sshd.log")],
    ]
    assert (state / "authorized_keys").read_text() == "ssh-ed25519 AAAA-l\n"
    config = (state / "sshd_config").read_text()
    assert [line for line in config.splitlines() if not line.startswith("#")] == [
        "Port 2222",
        f"HostKey {state}/host_key",
        f"AuthorizedKeysFile {state}/authorized_keys",
        f"PidFile {state}/sshd.pid",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        # The remote ranks get the Job's EFA environment too: sshd hands sessions no other.
        'SetEnv "PATH=/opt/aws/neuron/bin:/usr/bin:/bin" "LD_LIBRARY_PATH=/opt/amazon/efa/lib64" '
        '"FI_PROVIDER=efa" "FI_EFA_USE_DEVICE_RDMA=1"',
    ]
    assert 'SetEnv "PATH=/bin"\n' in OpenSsh(state, environ={"PATH": "/bin"}).config_text()
    assert "SetEnv" not in OpenSsh(state, environ={}).config_text()


def test_an_sshd_that_does_not_start_quotes_its_log(tmp_path):
    state = tmp_path / "sshd"
    state.mkdir()
    (state / "sshd.log").write_text("Missing privilege separation directory: /run/sshd\n")
    ssh = OpenSsh(state, privsep_dir=tmp_path, environ=ENVIRON, run=Commands(codes={"/usr/sbin/sshd": 255}))
    with pytest.raises(SshError, match=r"^/usr/sbin/sshd exited 255: Missing privilege separation directory: "
                                       r"/run/sshd$"):
        ssh.start_server("ssh-ed25519 AAAA-l")


def test_files_ssh_cannot_write_are_an_ssh_failure_not_a_crash(tmp_path):
    # So a worker still registers its error and pod 0 names it, instead of a traceback in the logs.
    (tmp_path / "run").write_text("a file where a folder should be\n")
    ssh = OpenSsh(tmp_path / "sshd", privsep_dir=tmp_path / "run" / "sshd", home=tmp_path / "run", run=Commands())
    with pytest.raises(SshError, match=r"^cannot write the files of sshd: \[Errno 20\] Not a directory: "):
        ssh.start_server("ssh-ed25519 AAAA-l")
    with pytest.raises(SshError, match=r"^cannot write the files of the SSH client: \[Errno 20\] Not a directory: "):
        ssh.create_key()


def test_the_client_key_and_config_are_where_ssh_looks_and_the_probe_runs_true_as_root(tmp_path):
    commands, ssh_dir = Commands(), tmp_path / "root" / ".ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "config").write_text("Host *\n    StrictHostKeyChecking yes\n")  # the image's, if any
    (ssh_dir / "config").chmod(0o664)
    ssh = OpenSsh(tmp_path / "sshd", home=tmp_path / "root", run=commands)
    assert ssh.create_key() == "ssh-ed25519 AAAA1 root@pod"
    assert ssh_dir.stat().st_mode & 0o777 == 0o700
    assert commands.calls[0][-2:] == ["-f", str(ssh_dir / "id_ed25519")]
    assert stat.S_IMODE((ssh_dir / "config").stat().st_mode) == 0o600  # ssh refuses a config others may write
    assert [line for line in (ssh_dir / "config").read_text().splitlines() if not line.startswith("#")] == [
        "Host *", "    StrictHostKeyChecking no", "    UserKnownHostsFile /dev/null", "    LogLevel ERROR"]
    assert ssh.probe("10.0.1.11") is None
    assert commands.calls[1] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "22",
                                 "root@10.0.1.11", "true"]
    refused = OpenSsh(run=Commands(codes={"ssh": 255}, stderr="Warning: added\nroot@10.0.1.11: Permission denied "
                                                               "(publickey).\n"))
    assert refused.probe("10.0.1.11") == "root@10.0.1.11: Permission denied (publickey)."


def test_commands_that_fail_to_start_or_finish_exit_255(tmp_path):
    done = run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 5)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    missing = run_command([str(tmp_path / "absent")], 5)
    assert missing.returncode == 255 and missing.stderr.startswith(f"cannot run {tmp_path / 'absent'}: ")
    slow = run_command(["sleep", "5"], 0.05)
    assert (slow.returncode, slow.stderr) == (255, "sleep did not finish within 0.05 s")
