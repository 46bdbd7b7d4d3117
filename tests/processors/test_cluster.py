"""HTCondor workers through dask-jobqueue: the config, the job script, the --cluster wiring.

No HTCondor here: the cluster objects are built (which starts a local Dask scheduler) and
closed without submitting a job; the job script is what ``condor_submit`` would receive.
"""

from __future__ import annotations

import dataclasses
import shlex
from contextlib import contextmanager
from pathlib import Path

import pytest

from hepflow.cli import main
from hepflow.errors import ConfigError, HepflowError
from hepflow.processing import RunConfig, _close_dask, _make_executor

pytest.importorskip("distributed")
dask_jobqueue = pytest.importorskip("dask_jobqueue")

from hepflow.distributed import HTCondorConfig, build_cluster, connect  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "analyses" / "ttbar_neutrino" / "htcondor.toml"
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "nano_tt_v12.root"


def _local(cfg: HTCondorConfig, tmp_path: Path) -> HTCondorConfig:
    """Logs under tmp_path, no dashboard (its port may be taken on a shared machine)."""
    job = dataclasses.replace(cfg.job, log_directory=str(tmp_path / "logs"))
    scheduler = dataclasses.replace(cfg.scheduler, dashboard_address="", host="127.0.0.1")
    return dataclasses.replace(cfg, job=job, scheduler=scheduler)


@contextmanager
def _cluster(cfg: HTCondorConfig):
    cluster = build_cluster(cfg)
    try:
        yield cluster
    finally:
        cluster.close()


def _arguments(script: str) -> str:
    """The shell command of the job: the ``Arguments = "-c '...'"`` line, unquoted."""
    line = next(x for x in script.splitlines() if x.startswith("Arguments = "))
    return shlex.split(line.removeprefix("Arguments = ").strip('"'))[1]


def test_example_config_builds_the_cluster_and_job_script(tmp_path):
    cfg = _local(HTCondorConfig.from_file(EXAMPLE), tmp_path)
    assert (cfg.job.cores, cfg.job.processes, cfg.scale.jobs, cfg.environment.ship) == (4, 4, 10, "shared")
    with _cluster(cfg) as cluster:
        assert isinstance(cluster, dask_jobqueue.HTCondorCluster)
        assert len(cluster.workers) == 0  # nothing submitted
        script = cluster.job_script()
    lines = set(script.splitlines())
    for expected in (
        "RequestCpus = MY.DaskWorkerCores",
        "MY.DaskWorkerCores = 4",
        "MY.DaskWorkerMemory = 8000000000",
        "MY.DaskWorkerDisk = 4000000000",
        "RequestMemory = floor(MY.DaskWorkerMemory / 1048576)",
        "RequestDisk = floor(MY.DaskWorkerDisk / 1024)",
        '+JobFlavour = "workday"',
        f"LogDirectory = {tmp_path / 'logs'}",
        "Executable = /bin/sh",
    ):
        assert expected in lines, expected
    assert (tmp_path / "logs").is_dir()
    command = _arguments(script)
    prologue, worker = command.split("; ", 1)
    assert prologue == "export OMP_NUM_THREADS=1"
    assert "-m distributed.cli.dask_worker tcp://127.0.0.1:" in worker
    assert "--nworkers 4" in worker
    assert "--nthreads 1" in worker
    assert "--death-timeout 120" in worker


def test_image_shipping(tmp_path):
    cfg = HTCondorConfig.from_dict(
        {
            "job": {
                "cores": 2,
                "memory": "3GiB",
                "disk": "1 GB",
                "job_extra_directives": {"+MaxRuntime": 7200},
            },
            "environment": {
                "ship": "image",
                "image": "/cvmfs/unpacked.cern.ch/some/hepflow:1",
                "job_script_prologue": ["echo start", "export A=1"],
            },
        }
    )
    with _cluster(_local(cfg, tmp_path)) as cluster:
        script = cluster.job_script()
    lines = set(script.splitlines())
    assert '+SingularityImage = "/cvmfs/unpacked.cern.ch/some/hepflow:1"' in lines
    assert "+MaxRuntime = 7200" in lines
    assert "MY.DaskWorkerMemory = 3221225472" in lines
    assert "MY.DaskWorkerDisk = 1000000000" in lines
    assert "transfer_input_files" not in script
    command = _arguments(script)
    assert command.startswith("echo start; export A=1; python3 -m distributed.cli.dask_worker ")
    assert "--nthreads 2" in command


def test_tarball_shipping(tmp_path):
    cfg = HTCondorConfig.from_dict(
        {
            "environment": {
                "ship": "tarball",
                "tarball": "/eos/user/me/hepflow-env.tar.gz",
                "transfer_input_files": ["models.tar.gz"],
                "job_script_prologue": ["tar -xzf models.tar.gz"],
                "python": "python",
            },
        }
    )
    with _cluster(_local(cfg, tmp_path)) as cluster:
        script = cluster.job_script()
    lines = set(script.splitlines())
    assert "should_transfer_files = YES" in lines
    assert "transfer_input_files = /eos/user/me/hepflow-env.tar.gz, models.tar.gz" in lines
    steps = _arguments(script).split("; ")
    assert steps[:5] == [
        "mkdir -p hepflow-env",
        "tar -xzf hepflow-env.tar.gz -C hepflow-env",
        "source hepflow-env/bin/activate",
        "test ! -x hepflow-env/bin/conda-unpack || hepflow-env/bin/conda-unpack",
        "tar -xzf models.tar.gz",
    ]
    assert steps[5].startswith("python -m distributed.cli.dask_worker ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[job]\ncpus = 4\n", "unknown key 'cpus' for JobConfig"),
        ("[jobs]\ncores = 4\n", "unknown key 'jobs' for HTCondorConfig"),
        ('[job]\ncores = "four"\n', r"job.cores: expected an integer"),
        ('[job]\nmemory = "lots"\n', "job.memory: expected a size"),
        ("[job]\ncores = 3\nprocesses = 2\n", "multiple of job.processes"),
        ("[job]\njob_extra_directives = { a = [1, 2] }\n", "job_extra_directives"),
        ('[environment]\nship = "image"\n', 'ship = "image" needs image'),
        ('[environment]\nship = "docker"\n', "'docker' is not one of"),
        ('[environment]\ntarball = "env.tar.gz"\n', 'tarball is set but ship = "shared"'),
        ("[scale]\nadaptive = true\nminimum_jobs = 5\nmaximum_jobs = 2\n", "minimum_jobs <= maximum_jobs"),
        ("[scale]\njobs = 2\nwait_for_workers = 3\n", r"wait_for_workers \(3\) is more than"),
        ("[scheduler]\nport = 70000\n", r"scheduler.port must be in"),
    ],
)
def test_config_is_strict(tmp_path, text, message):
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        HTCondorConfig.from_file(path)
    assert str(err.value).startswith(str(path))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        HTCondorConfig.from_file(tmp_path / "nope.toml")


def test_dask_executor_runs_on_the_cluster(tmp_path):
    """``RunConfig(cluster=...)`` gives coffea a DaskExecutor on the HTCondor cluster's scheduler."""
    cfg = HTCondorConfig.from_dict(
        {"scale": {"adaptive": True, "minimum_jobs": 0, "maximum_jobs": 2, "wait_for_workers": 0}}
    )
    executor = _make_executor(RunConfig(executor="dask", cluster=_local(cfg, tmp_path), progress=False))
    cluster = executor.client.cluster
    try:
        assert isinstance(cluster, dask_jobqueue.HTCondorCluster)
        assert executor.client.scheduler.address == cluster.scheduler_address
        assert "MY.DaskWorkerCores = 1" in cluster.job_script()
    finally:
        _close_dask(executor)
    assert executor.client.status == "closed"


def test_no_worker_in_time_is_a_clear_error(tmp_path):
    cfg = HTCondorConfig.from_dict(
        {
            "job": {"log_directory": str(tmp_path / "logs")},
            "scale": {"adaptive": True, "maximum_jobs": 1, "wait_timeout_s": 0.5},
            "scheduler": {"dashboard_address": "", "host": "127.0.0.1"},
        }
    )
    with pytest.raises(HepflowError, match=r"fewer than 1 HTCondor worker\(s\) connected within 0.5 s"):
        connect(cfg, progress=False)


def test_cluster_needs_the_dask_executor(tmp_path, capsys):
    cluster = tmp_path / "cluster.toml"
    cluster.write_text("[job]\ncores = 1\n")
    out = tmp_path / "out"
    args = ["process", "neutrino", "--input", str(SAMPLE), "--output", str(out), "--cluster", str(cluster)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hepflow: error: --cluster")
    assert "needs --executor dask, not 'iterative'" in err
    assert not out.exists()  # refused before any work
    assert main([*args, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "give one of them" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --executor dask, not 'futures'"):
        RunConfig(executor="futures", cluster=HTCondorConfig())
