"""Multi-process and multi-host training: one ``train`` per SageMaker host becomes a torchrun launch.

SageMaker starts the same container with ``train`` on every host of a job (``instance_count > 1``)
and tells each one which host it is in ``resourceconfig.json``. PyTorch's own launcher, torchrun,
turns that into processes the way SageMaker's PyTorch toolkit does: ``processes_per_host`` on each
host (one per GPU; one on a CPU host unless the hyperparameter says otherwise), ranked host by host,
meeting at the first host, NCCL between GPUs and gloo between CPUs, over the network interface
SageMaker names. Each process runs the ordinary job; the Trainer shards the data between them and
averages gradients. A single host with a single process stays one plain process: no launcher.

SageMaker's hosts can come up, and their names resolve, some time after each other, so the
launcher waits for every host's name to resolve before starting (``HFSM_HOST_WAIT_S``).

The processes write nothing twice: only the process of global rank 0 writes ``model/``,
``output/data/``, ``output/failure`` and the checkpoints' weights and state (each process adds its
own ``rng_state_<rank>.pth``, so with ``checkpoint_s3_uri`` the hosts' uploads never collide, and a
re-run gets every host the whole checkpoint back); the other ranks' failures are in their logs and still
fail the job, because torchrun fails when any of its processes fails and the launcher exits
non-zero then. On SIGTERM (spot interruption, ``StopTrainingJob``) the launcher passes the signal
to the training processes themselves, which agree on a step, checkpoint and exit; torchrun would
otherwise kill them 30 s after its own SIGTERM, whatever the grace period SageMaker gives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import parse_hyperparameters
from ..devices import available_cores, visible_gpus
from ..errors import TrainingProcessesFailed, UserError
from ..sagemaker import SageMakerEnv

log = logging.getLogger("hfsm.train")

DEFAULT_MASTER_PORT = 29500
DEFAULT_HOST_WAIT_S = 300.0
"""Seconds to wait for the other hosts' names to resolve (``HFSM_HOST_WAIT_S``)."""
WORKER_VARIABLE = "TORCHELASTIC_RUN_ID"
"""Set by torchrun in every process it starts: such a process trains instead of launching."""


@dataclass(frozen=True)
class LaunchPlan:
    """What this host runs: how many processes, where they meet, and this host's place among them."""

    hosts: tuple[str, ...]
    node_rank: int
    processes_per_host: int
    master_port: int
    interface: str | None
    gpus: int

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_host

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus else "gloo"

    def torchrun_command(self, master_addr: str, python: str = sys.executable) -> list[str]:
        return [
            python,
            "-m",
            "torch.distributed.run",
            f"--nnodes={len(self.hosts)}",
            f"--nproc_per_node={self.processes_per_host}",
            f"--node_rank={self.node_rank}",
            f"--master_addr={master_addr}",
            f"--master_port={self.master_port}",
            "-m",
            "hfsm",
            "train",
        ]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The processes' environment: the interface for NCCL or gloo, and one OpenMP thread pool
        per process that together fill the cores instead of each taking all of them."""
        env = dict(base)
        if self.interface:
            env.setdefault("NCCL_SOCKET_IFNAME" if self.gpus else "GLOO_SOCKET_IFNAME", self.interface)
        if not self.gpus and self.processes_per_host > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, available_cores() // self.processes_per_host))
        return env


def plan_launch(
    env: SageMakerEnv,
    *,
    distributed: bool | None,
    processes_per_host: int,
    environ: Mapping[str, str],
) -> LaunchPlan:
    """This host's part of the job, from ``resourceconfig.json``, the GPUs and two hyperparameters.

    ``distributed=False`` trains one plain process on the first host; the other hosts do nothing.
    ``processes_per_host=0`` means one per GPU, or one on a CPU host.
    """
    hosts = tuple(env.hosts)
    if env.current_host not in hosts:
        raise UserError(
            f"resourceconfig.json: current_host {env.current_host!r} is not among hosts {list(hosts)}"
        )
    gpus = len(visible_gpus(environ))
    per_host = processes_per_host or max(1, gpus)
    if distributed is False:
        hosts, per_host = hosts[:1], 1
    node_rank = hosts.index(env.current_host) if env.current_host in hosts else -1
    return LaunchPlan(
        hosts=hosts,
        node_rank=node_rank,
        processes_per_host=per_host,
        master_port=_port(environ.get("HFSM_MASTER_PORT", str(DEFAULT_MASTER_PORT))),
        interface=env.resource_config.get("network_interface_name") or None,
        gpus=gpus,
    )


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1024 <= port <= 65535:
        raise UserError(f"HFSM_MASTER_PORT = {raw!r}: expected a port number from 1024 to 65535")
    return port


def wait_for_hosts(
    hosts: Sequence[str],
    timeout_s: float,
    resolve: Callable[[str], str] | None = None,
    interval_s: float = 2.0,
) -> dict[str, str]:
    """Each host's address, retrying names that do not resolve yet until ``timeout_s`` has passed."""
    resolve = resolve or _resolve
    addresses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for host in hosts:
            if host not in addresses:
                with contextlib.suppress(OSError):
                    addresses[host] = resolve(host)
        missing = [host for host in hosts if host not in addresses]
        if not missing:
            return addresses
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"the names of hosts {missing} did not resolve within {timeout_s:.0f}s "
                "(HFSM_HOST_WAIT_S); the other instances of the job did not come up"
            )
        log.info("waiting for hosts %s to resolve", missing)
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def _resolve(host: str) -> str:
    return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])


def is_training_process(environ: Mapping[str, str]) -> bool:
    """True in a process torchrun started (it trains); False in the launcher SageMaker started."""
    return bool(environ.get(WORKER_VARIABLE))


def global_rank(environ: Mapping[str, str]) -> int:
    return int(environ.get("RANK", "0") or 0)


def run_torchrun(plan: LaunchPlan, master_addr: str, environ: Mapping[str, str]) -> int:
    """Run torchrun for this host until it ends; SIGTERM and SIGINT go to the training processes."""
    command = plan.torchrun_command(master_addr)
    log.info(
        "host %d of %d: %d process(es) here, %d in all, %s, meeting at %s:%d",
        plan.node_rank + 1,
        len(plan.hosts),
        plan.processes_per_host,
        plan.world_size,
        plan.backend,
        master_addr,
        plan.master_port,
    )
    process = subprocess.Popen(command, env=plan.environment(environ))

    def forward(signum: int, frame: Any) -> None:
        workers = child_pids(process.pid)
        log.warning("signal %d: passing it to the training processes %s", signum, workers or [process.pid])
        for pid in workers or [process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``); empty where that cannot be read."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        return []
    return children


def launch_or_train(env: SageMakerEnv, environ: Mapping[str, str]) -> None:
    """What ``train`` does on this host: the job itself, torchrun for it, or nothing.

    Raises :class:`TrainingProcessesFailed` when torchrun ends with a failed process.
    """
    config = parse_hyperparameters(env.hyperparameters)
    plan = plan_launch(
        env, distributed=config.distributed, processes_per_host=config.processes_per_host, environ=environ
    )
    if plan.node_rank < 0:
        log.info("distributed=false: host %s has nothing to do; the first host trains", env.current_host)
        return
    if not plan.distributed:
        from .job import train

        train(env)
        return
    if len(plan.hosts) == 1:
        master_addr = "127.0.0.1"  # all processes are here: no name to resolve
    else:
        wait_s = float(environ.get("HFSM_HOST_WAIT_S", DEFAULT_HOST_WAIT_S))
        master_addr = wait_for_hosts(plan.hosts, wait_s)[plan.hosts[0]]
    code = run_torchrun(plan, master_addr, environ)
    if code != 0:
        raise TrainingProcessesFailed(
            f"torchrun ended with exit code {code} on host {env.current_host}: a training process "
            "failed (its reason is in the logs, and in output/failure on the first host)",
            first_host=plan.node_rank == 0,
        )


def ddp_arguments(environ: Mapping[str, str], cuda: bool) -> dict[str, Any]:
    """TrainingArguments for a process torchrun started (the backend); none for a plain process."""
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    return {"ddp_backend": "nccl" if cuda else "gloo"} if world > 1 else {}


def share_first_process_weights(model: Any) -> None:
    """Give every process the weights of process 0, which has reloaded the best checkpoint.

    Checkpoints are written by process 0 (transformers 5.23 writes a model's weights from global rank
    0 only, even with ``save_on_each_node``), so on the other hosts the Trainer finds no best
    checkpoint to reload and keeps the last step's weights; the final evaluation and test predictions,
    which every process shares, must all use the best ones.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    log.info("process %d: weights of process 0 (the best checkpoint) in place", dist.get_rank())


def close_process_group(finished: bool) -> None:
    """End ``torch.distributed`` before the process exits, if the Trainer started it.

    A process that leaves with its process group alive can abort while the interpreter shuts down
    (``terminate called without an active exception``, SIGABRT), seen on a process of a job that had
    succeeded: torchrun then fails the job and the other host waits for it at its exit barrier.
    After a finished job every process first waits for the others (process 0 still writes the
    model and the report), so none leaves while the group is in use; after a failure the others may
    never arrive, so the group is only closed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def agreed_checkpoint(found: Path | None) -> Path | None:
    """The checkpoint to resume from, the same for every process (or a clear error when not)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return found
    names: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(names, found.name if found is not None else None)
    if len(set(names)) > 1:
        raise UserError(
            f"the training processes found different checkpoints to resume from ({names}, by rank); "
            "give every host the same checkpoint location (checkpoint_s3_uri on the Estimator)"
        )
    return found


def log_share(
    rank: int, world: int, seen: int, total: int, steps: int, per_device: int, accumulation: int
) -> None:
    """One line saying how the data was shared out, for the logs of every process."""
    log.info(
        "process %d of %d: %d training features seen in %d steps (the train split has %d); global batch %d "
        "(%d per process x %d processes x %d accumulation steps)",
        rank,
        world,
        seen,
        steps,
        total,
        per_device * world * accumulation,
        per_device,
        world,
        accumulation,
    )
