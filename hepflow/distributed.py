"""Grid batch processing: Dask workers as HTCondor jobs, through dask-jobqueue.

``hepflow process|infer ... --executor dask --cluster htcondor.toml`` runs the coffea
``Runner`` on a :class:`dask_jobqueue.HTCondorCluster` described by a strict TOML file
(:class:`HTCondorConfig`; example: ``analyses/ttbar_neutrino/htcondor.toml``, recipe:
``docs/scaleout.md``). The scheduler runs in the submitting process; each HTCondor job starts
``processes`` Dask worker processes that connect back to it. The cluster is closed (its jobs
removed with ``condor_rm``) when the run ends.

The file has four sections, every key optional, unknown keys refused:

* ``[job]``: what one HTCondor job requests: ``cores``, ``processes`` (Dask worker processes
  per job), ``memory``, ``disk``, ``log_directory``, ``death_timeout`` and
  ``job_extra_directives`` (submit-file lines, e.g. ``"+JobFlavour" = '"workday"'``);
* ``[scale]``: a fixed number of ``jobs``, or ``adaptive = true`` between ``minimum_jobs`` and
  ``maximum_jobs``; the run waits up to ``wait_timeout_s`` for ``wait_for_workers`` workers;
* ``[environment]``: how the hepflow environment reaches the worker nodes (``ship``):
  ``"shared"`` (the submitting Python on a shared file system or CVMFS), ``"image"`` (an
  Apptainer/Singularity image with hepflow installed, ``+SingularityImage``) or ``"tarball"``
  (a ``venv-pack``/``conda-pack`` archive, transferred with the job and unpacked before the
  worker starts); ``python``, ``job_script_prologue`` (shell lines run first) and
  ``transfer_input_files``;
* ``[scheduler]``: ``host``, ``port``, ``dashboard_address`` and the network ``interface``.

Nothing here needs HTCondor until jobs are submitted: :func:`build_cluster` creates the cluster
object (and its local scheduler) without submitting, so :meth:`job_script` can be checked.

Example:
    >>> cfg = HTCondorConfig.from_dict({"job": {"cores": 4, "memory": "8 GB"}, "scale": {"jobs": 10}})
    >>> cfg.job.cores, cfg.scale.jobs, cfg.environment.ship
    (4, 10, 'shared')
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hepflow.config import from_dict as _from_dict
from hepflow.config import read_toml
from hepflow.errors import ConfigError, HepflowError

log = logging.getLogger(__name__)

__all__ = [
    "EnvironmentConfig",
    "HTCondorConfig",
    "JobConfig",
    "ScaleConfig",
    "SchedulerConfig",
    "build_cluster",
    "connect",
    "load_cluster_config",
]

#: unpack directory of ``ship = "tarball"`` on the worker node (inside the job's scratch directory)
TARBALL_DIR = "hepflow-env"
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(k|m|g|t|ki|mi|gi|ti)?b?\s*$", re.IGNORECASE)


def _check_size(name: str, value: str) -> None:
    if not _SIZE.match(value):
        raise ConfigError(f"job.{name}: expected a size like '4 GB' or '500MiB', got {value!r}")


@dataclass(frozen=True)
class JobConfig:
    """``[job]``: the resources and submit-file lines of one HTCondor job."""

    cores: int = 1
    processes: int = 1
    memory: str = "4 GB"
    disk: str = "4 GB"
    log_directory: str | None = None
    death_timeout: float = 60.0
    job_extra_directives: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cores < 1 or self.processes < 1:
            raise ConfigError(
                f"job.cores and job.processes must be positive, got {self.cores}, {self.processes}"
            )
        if self.cores % self.processes:
            raise ConfigError(
                f"job.cores ({self.cores}) must be a multiple of job.processes ({self.processes})"
            )
        _check_size("memory", self.memory)
        _check_size("disk", self.disk)
        if self.death_timeout <= 0:
            raise ConfigError(f"job.death_timeout must be positive, got {self.death_timeout}")
        for key, value in self.job_extra_directives.items():
            if isinstance(value, dict | list) or not str(key).strip():
                raise ConfigError(
                    f"job.job_extra_directives: {key!r} = {value!r}; expected a submit-file "
                    "key with a string, number or boolean value"
                )


@dataclass(frozen=True)
class ScaleConfig:
    """``[scale]``: how many jobs, and how long to wait for the first workers."""

    jobs: int = 1
    adaptive: bool = False
    minimum_jobs: int = 0
    maximum_jobs: int = 10
    wait_for_workers: int = 1
    wait_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.adaptive and self.jobs < 1:
            raise ConfigError(f"scale.jobs must be positive, got {self.jobs}")
        if self.adaptive and not 0 <= self.minimum_jobs <= self.maximum_jobs:
            raise ConfigError(
                "scale: need 0 <= minimum_jobs <= maximum_jobs, got "
                f"{self.minimum_jobs} and {self.maximum_jobs}"
            )
        if self.adaptive and self.maximum_jobs < 1:
            raise ConfigError(f"scale.maximum_jobs must be positive, got {self.maximum_jobs}")
        if self.wait_for_workers < 0:
            raise ConfigError(f"scale.wait_for_workers must be >= 0, got {self.wait_for_workers}")
        if self.wait_timeout_s <= 0:
            raise ConfigError(f"scale.wait_timeout_s must be positive, got {self.wait_timeout_s}")


@dataclass(frozen=True)
class EnvironmentConfig:
    """``[environment]``: how the hepflow environment gets to the worker nodes.

    ``ship``: ``"shared"`` runs the submitting Python (``sys.executable``) on the worker, so
    it must be on a shared file system (or CVMFS); ``"image"`` adds ``image_directive =
    "image"`` (default ``+SingularityImage``) to the submit file, the image must have hepflow
    installed; ``"tarball"`` transfers ``tarball`` (``venv-pack``/``conda-pack`` archive of an
    environment with hepflow) with the job, unpacks it into ``hepflow-env/`` and activates it.
    ``python`` overrides the worker's interpreter (default: ``sys.executable`` for
    ``"shared"``, ``python3`` otherwise). ``job_script_prologue``: shell lines run before the
    worker starts (after the tarball is activated).
    """

    ship: Literal["shared", "image", "tarball"] = "shared"
    image: str | None = None
    image_directive: str = "+SingularityImage"
    tarball: str | None = None
    python: str | None = None
    job_script_prologue: tuple[str, ...] = ()
    transfer_input_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ship == "image" and not self.image:
            raise ConfigError('environment: ship = "image" needs image = "<image path or URL>"')
        if self.ship == "tarball" and not self.tarball:
            raise ConfigError('environment: ship = "tarball" needs tarball = "<archive>.tar.gz"')
        if self.image and self.ship != "image":
            raise ConfigError(f'environment: image is set but ship = "{self.ship}" (use ship = "image")')
        if self.tarball and self.ship != "tarball":
            raise ConfigError(f'environment: tarball is set but ship = "{self.ship}" (use ship = "tarball")')

    def python_executable(self) -> str:
        """The interpreter that starts the worker on the node."""
        if self.python:
            return self.python
        return sys.executable if self.ship == "shared" else "python3"

    def prologue(self) -> list[str]:
        """Shell lines run on the node before the worker starts."""
        lines = []
        if self.ship == "tarball":
            name = Path(str(self.tarball)).name
            lines += [
                f"mkdir -p {TARBALL_DIR}",
                f"tar -xzf {name} -C {TARBALL_DIR}",
                f"source {TARBALL_DIR}/bin/activate",
                f"test ! -x {TARBALL_DIR}/bin/conda-unpack || {TARBALL_DIR}/bin/conda-unpack",
            ]
        return lines + list(self.job_script_prologue)

    def directives(self) -> dict[str, Any]:
        """Submit-file lines that ship the environment (image, transferred files)."""
        out: dict[str, Any] = {}
        if self.ship == "image":
            quoted = self.image_directive.startswith("+")  # custom ClassAd attributes are strings
            out[self.image_directive] = f'"{self.image}"' if quoted else self.image
        files = list(self.transfer_input_files)
        if self.ship == "tarball":
            files.insert(0, str(self.tarball))
        if files:
            out["should_transfer_files"] = "YES"
            out["transfer_input_files"] = ", ".join(files)
        return out


@dataclass(frozen=True)
class SchedulerConfig:
    """``[scheduler]``: the Dask scheduler that runs in the submitting process.

    ``host``: the address the workers connect to (default: Dask's choice for ``interface``);
    ``port``: 0 for a free one; ``dashboard_address``: e.g. ``":8787"``, ``""`` for none;
    ``interface``: network interface of scheduler and workers, e.g. ``"eth0"``.
    """

    host: str | None = None
    port: int = 0
    dashboard_address: str = ":8787"
    interface: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"scheduler.port must be in [0, 65535], got {self.port}")


@dataclass(frozen=True)
class HTCondorConfig:
    """The ``--cluster`` file: :class:`JobConfig`, :class:`ScaleConfig`,
    :class:`EnvironmentConfig` and :class:`SchedulerConfig` sections."""

    job: JobConfig = field(default_factory=JobConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        if self.scale.wait_for_workers > self.max_workers:
            raise ConfigError(
                f"scale.wait_for_workers ({self.scale.wait_for_workers}) is more than the cluster "
                f"can start ({self.max_workers} worker processes)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "cluster config") -> HTCondorConfig:
        """Build from a dict (the parsed TOML); unknown keys and wrong types are refused."""
        try:
            return _from_dict(cls, data, where=where)
        except ConfigError as err:
            if str(err).startswith(where):
                raise
            raise ConfigError(f"{where}: {err}") from err

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> HTCondorConfig:
        """Read a TOML file; errors name the file and the key."""
        return cls.from_dict(read_toml(path), where=str(path))

    @property
    def max_workers(self) -> int:
        """Worker processes when every job runs."""
        jobs = self.scale.maximum_jobs if self.scale.adaptive else self.scale.jobs
        return jobs * self.job.processes

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`dask_jobqueue.HTCondorCluster`."""
        directives = dict(self.environment.directives())
        directives.update({str(k): _directive(v) for k, v in self.job.job_extra_directives.items()})
        scheduler: dict[str, Any] = {"port": self.scheduler.port}
        scheduler["dashboard_address"] = self.scheduler.dashboard_address or None
        if self.scheduler.host:
            scheduler["host"] = self.scheduler.host
        kwargs: dict[str, Any] = {
            "cores": self.job.cores,
            "processes": self.job.processes,
            "memory": self.job.memory,
            "disk": self.job.disk,
            "death_timeout": self.job.death_timeout,
            "job_extra_directives": directives,
            "job_script_prologue": self.environment.prologue(),
            "python": self.environment.python_executable(),
            "scheduler_options": scheduler,
        }
        if self.job.log_directory:
            kwargs["log_directory"] = self.job.log_directory
        if self.scheduler.interface:
            kwargs["interface"] = self.scheduler.interface
        return kwargs


def _directive(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def load_cluster_config(source: HTCondorConfig | str | os.PathLike[str]) -> HTCondorConfig:
    """An :class:`HTCondorConfig`, or the TOML file it is read from."""
    return source if isinstance(source, HTCondorConfig) else HTCondorConfig.from_file(source)


def build_cluster(config: HTCondorConfig | str | os.PathLike[str]) -> Any:
    """The :class:`dask_jobqueue.HTCondorCluster` of ``config``, with no job submitted yet.

    Creating it starts the Dask scheduler in this process; close it with ``cluster.close()``.
    """
    cfg = load_cluster_config(config)
    try:
        from dask_jobqueue import HTCondorCluster
    except ImportError as err:
        raise ConfigError(
            f"--cluster needs dask-jobqueue: pip install 'hepflow[distributed]' ({err})"
        ) from err
    return HTCondorCluster(**cfg.cluster_kwargs())


def connect(config: HTCondorConfig | str | os.PathLike[str], *, progress: bool = True) -> Any:
    """Build the cluster, submit its jobs (or make it adaptive), wait for the first workers.

    Returns a :class:`distributed.Client` whose ``cluster`` is the HTCondor cluster: closing both
    removes the jobs. Raises :class:`~hepflow.errors.HepflowError` when fewer than
    ``[scale] wait_for_workers`` workers connect within ``wait_timeout_s``.
    """
    from distributed import Client

    cfg = load_cluster_config(config)
    cluster = build_cluster(cfg)
    try:
        if cfg.scale.adaptive:
            cluster.adapt(minimum_jobs=cfg.scale.minimum_jobs, maximum_jobs=cfg.scale.maximum_jobs)
            what = f"adaptive, {cfg.scale.minimum_jobs} to {cfg.scale.maximum_jobs} jobs"
        else:
            cluster.scale(jobs=cfg.scale.jobs)
            what = f"{cfg.scale.jobs} job(s)"
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    n = cfg.scale.wait_for_workers
    message = f"HTCondor cluster ({what}), scheduler {cluster.scheduler_address}"
    log.info(message)
    if progress:
        print(f"{message}: waiting for {n} worker(s)", file=sys.stderr, flush=True)
    try:
        if n:
            client.wait_for_workers(n, timeout=cfg.scale.wait_timeout_s)
    except BaseException as err:  # a timeout, or Ctrl-C while waiting: remove the jobs
        client.close()
        cluster.close()
        if not isinstance(err, TimeoutError | OSError):
            raise
        where = f" and the logs in {cfg.job.log_directory}" if cfg.job.log_directory else ""
        raise HepflowError(
            f"fewer than {n} HTCondor worker(s) connected within {cfg.scale.wait_timeout_s:g} s "
            f"(see condor_q{where})"
        ) from err
    return client
