"""Multi-host training through torchrun: the launch plan, and two real hosts on this machine."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_hyperparameters
from hfsm.errors import UserError
from hfsm.sagemaker import SageMakerEnv
from hfsm.training.distributed import (
    is_training_process,
    plan_launch,
    wait_for_hosts,
)
from sagemaker_tree import DATA_DIR, TrainResult, make_tree, run_train


def env_of(hosts: list[str], current: str, interface: str = "eth0") -> SageMakerEnv:
    return SageMakerEnv(
        base_dir=Path("/opt/ml"),
        resource_config={"hosts": hosts, "current_host": current, "network_interface_name": interface},
    )


def test_one_host_one_process_is_not_distributed() -> None:
    plan = plan_launch(
        env_of(["algo-1"], "algo-1"),
        distributed=None,
        processes_per_host=0,
        environ={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert (plan.world_size, plan.distributed, plan.backend) == (1, False, "gloo")


def test_hosts_and_gpus_make_the_torchrun_command() -> None:
    plan = plan_launch(
        env_of(["algo-1", "algo-2", "algo-3"], "algo-2"),
        distributed=None,
        processes_per_host=0,
        environ={"CUDA_VISIBLE_DEVICES": "0,1,2,3", "HFSM_MASTER_PORT": "29123"},
    )
    assert (plan.node_rank, plan.processes_per_host, plan.world_size, plan.backend) == (1, 4, 12, "nccl")
    command = plan.torchrun_command("10.0.0.1", python="python")
    assert command == [
        "python", "-m", "torch.distributed.run", "--nnodes=3", "--nproc_per_node=4", "--node_rank=1",
        "--master_addr=10.0.0.1", "--master_port=29123", "-m", "hfsm", "train",
    ]  # fmt: skip
    assert plan.environment({})["NCCL_SOCKET_IFNAME"] == "eth0"


def test_cpu_processes_share_the_cores_and_use_gloo_on_the_named_interface() -> None:
    plan = plan_launch(
        env_of(["algo-1"], "algo-1", "ens5"),
        distributed=None,
        processes_per_host=2,
        environ={"CUDA_VISIBLE_DEVICES": ""},
    )
    env = plan.environment({})
    assert (plan.world_size, plan.backend, env["GLOO_SOCKET_IFNAME"]) == (2, "gloo", "ens5")
    assert int(env["OMP_NUM_THREADS"]) >= 1
    assert plan.environment({"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def test_distributed_off_trains_one_process_on_the_first_host() -> None:
    first = plan_launch(
        env_of(["algo-1", "algo-2"], "algo-1"), distributed=False, processes_per_host=0, environ={}
    )
    second = plan_launch(
        env_of(["algo-1", "algo-2"], "algo-2"), distributed=False, processes_per_host=0, environ={}
    )
    assert (first.world_size, first.node_rank) == (1, 0)
    assert second.node_rank == -1, "the second host has nothing to do"


def test_bad_resource_config_and_port_are_user_errors() -> None:
    with pytest.raises(UserError, match="current_host 'algo-9'"):
        plan_launch(env_of(["algo-1"], "algo-9"), distributed=None, processes_per_host=0, environ={})
    with pytest.raises(UserError, match="HFSM_MASTER_PORT"):
        plan_launch(
            env_of(["algo-1"], "algo-1"),
            distributed=None,
            processes_per_host=0,
            environ={"HFSM_MASTER_PORT": "80"},
        )


def test_only_torchruns_processes_train_without_launching() -> None:
    assert is_training_process({"TORCHELASTIC_RUN_ID": "abc"}) and not is_training_process({})


def test_host_names_that_resolve_late_are_waited_for() -> None:
    attempts: dict[str, int] = {}

    def resolve(host: str) -> str:
        attempts[host] = attempts.get(host, 0) + 1
        if host == "algo-2" and attempts[host] < 3:
            raise socket.gaierror("not yet")
        return f"10.0.0.{host[-1]}"

    assert wait_for_hosts(["algo-1", "algo-2"], 10, resolve, interval_s=0.01) == {
        "algo-1": "10.0.0.1",
        "algo-2": "10.0.0.2",
    }
    assert attempts == {"algo-1": 1, "algo-2": 3}
    with pytest.raises(RuntimeError, match=r"hosts \['algo-3'\] did not resolve"):
        wait_for_hosts(
            ["algo-3"], 0.05, lambda host: (_ for _ in ()).throw(socket.gaierror()), interval_s=0.01
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_hosts(tree: Path, hosts: list[str], current: str) -> None:
    (tree / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": current, "hosts": hosts, "network_interface_name": "lo"}),
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def two_hosts(
    tmp_path_factory: pytest.TempPathFactory, base_models: dict[str, Path]
) -> dict[str, TrainResult]:
    """The same job on two hosts (two trees, two `train` processes, 127.0.0.1 and 127.0.0.2), per-device
    batch 4, and on one host with batch 8: the same global batch."""
    hosts = ["127.0.0.1", "127.0.0.2"]
    # 4 steps of 8 stay inside the first epoch (the last partial batch of an epoch is evened out
    # between processes by repeating features, which one process does not do)
    hyper = quick_hyperparameters(
        "ner", base_models["bert"], per_device_train_batch_size=4, max_steps=4, eval_steps=2, logging_steps=1
    )
    trees = []
    for host in hosts:
        tree = make_tree(tmp_path_factory.mktemp(f"host-{host}"), DATA_DIR / "ner", hyper)
        write_hosts(tree, hosts, host)
        trees.append(tree)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["HFSM_MASTER_PORT"] = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "hfsm", "train"],
            env={**env, "SAGEMAKER_BASE_DIR": str(tree)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tree in trees
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    results = {
        host: TrainResult(tree, process.returncode, output)
        for host, tree, process, output in zip(hosts, trees, processes, outputs, strict=True)
    }
    single = make_tree(
        tmp_path_factory.mktemp("one-host"),
        DATA_DIR / "ner",
        {**hyper, "per_device_train_batch_size": 8},
    )
    results["single"] = run_train(single)
    return results


def test_two_hosts_train_one_model_written_by_the_first(two_hosts: dict[str, TrainResult]) -> None:
    first, second = two_hosts["127.0.0.1"], two_hosts["127.0.0.2"]
    assert first.returncode == 0, first.output[-4000:]
    assert second.returncode == 0, second.output[-4000:]
    assert (first.model_dir / "model.safetensors").is_file() and (
        first.output_data / "metrics.json"
    ).is_file()
    assert not second.model_dir.exists() or not any(second.model_dir.iterdir()), (
        "only host 1 writes the model"
    )
    assert not (second.output_data / "metrics.json").exists()
    assert first.failure is None and second.failure is None
    assert "weights of process 0 (the best checkpoint) in place" in second.output
    assert "host 1 of 2: 1 process(es) here, 2 in all, gloo" in first.output


def test_each_process_trains_on_half_of_the_data(two_hosts: dict[str, TrainResult]) -> None:
    pattern = (
        r"process (\d) of (\d): (\d+) training features seen in (\d+) steps \(the train split has (\d+)\); "
        r"global batch (\d+)"
    )
    shares = {}
    for host in ("127.0.0.1", "127.0.0.2", "single"):
        found = re.search(pattern, two_hosts[host].output)
        assert found, two_hosts[host].output[-3000:]
        shares[host] = tuple(int(value) for value in found.groups())
    (rank_1, world_1, seen_1, steps, _, batch), (rank_2, world_2, seen_2, _, _, _) = (
        shares["127.0.0.1"],
        shares["127.0.0.2"],
    )
    assert (rank_1, rank_2, world_1, world_2, steps, batch) == (0, 1, 2, 2, 4, 8)
    assert seen_1 == seen_2 == steps * 4, "each process trains on 4 features a step, half the global batch"
    assert shares["single"][2] == seen_1 + seen_2 and shares["single"][1] == 1


def test_two_hosts_match_one_host_with_the_same_global_batch(two_hosts: dict[str, TrainResult]) -> None:
    distributed, single = two_hosts["127.0.0.1"].metrics(), two_hosts["single"].metrics()
    assert distributed["train"]["global_step"] == single["train"]["global_step"] == 4
    assert distributed["train"]["train_loss"] == pytest.approx(single["train"]["train_loss"], rel=0.01)
    assert distributed["dev"]["accuracy"] == pytest.approx(single["dev"]["accuracy"], abs=0.02)


def start_hosts(trees: list[Path], port: int, logs: Path) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HFSM_MASTER_PORT": str(port),
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "hfsm", "train"],
            env={**env, "SAGEMAKER_BASE_DIR": str(tree)},
            stdout=(logs / f"{tree.name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for tree in trees
    ]


def test_sigterm_stops_every_host_at_one_step_and_the_rerun_resumes(
    tmp_path: Path, base_models: dict[str, Path]
) -> None:
    """Spot interruption of a two-host job: both stop at the same step, host 1 checkpoints and reports
    Interrupted (exit 143); run again with the same checkpoint location (one folder for both hosts, as
    checkpoint_s3_uri gives them), the job resumes there and finishes."""
    import signal
    import time

    hosts = ["127.0.0.1", "127.0.0.2"]
    shared_checkpoints = tmp_path / "checkpoints"
    hyper = quick_hyperparameters(
        "ner", base_models["bert"], per_device_train_batch_size=4, max_steps=400, eval_steps=200
    )
    trees = []
    for host in hosts:
        tree = make_tree(tmp_path / host, DATA_DIR / "ner", hyper)
        write_hosts(tree, hosts, host)
        (tree / "input" / "config" / "checkpointconfig.json").write_text(
            json.dumps({"LocalPath": str(shared_checkpoints)}), encoding="utf-8"
        )
        trees.append(tree)
    processes = start_hosts(trees, free_port(), tmp_path)
    first_log = tmp_path / f"{hosts[0]}.log"
    deadline = time.monotonic() + 300
    while "step 8/400" not in first_log.read_text() and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), first_log.read_text()[-3000:]
        time.sleep(0.2)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    codes = [process.wait(120) for process in processes]
    logs = [(tmp_path / f"{host}.log").read_text() for host in hosts]
    assert codes[0] == 143 and codes[1] != 0, logs[0][-3000:] + logs[1][-3000:]
    stopped = {re.search(r"Training stopped by SIGTERM at step (\d+)", log).group(1) for log in logs}  # type: ignore[union-attr]
    assert len(stopped) == 1, f"the hosts stopped at different steps: {stopped}"
    step = int(stopped.pop())
    assert (trees[0] / "output" / "failure").read_text().startswith("Interrupted: ")
    assert not (trees[1] / "output" / "failure").exists(), "only the first host reports"
    assert not (trees[0] / "model" / "model.safetensors").exists()

    processes = start_hosts(trees, free_port(), tmp_path)
    codes = [process.wait(300) for process in processes]
    logs = [(tmp_path / f"{host}.log").read_text() for host in hosts]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert f"resuming from checkpoint {shared_checkpoints / f'checkpoint-{step}'}" in logs[0]
    assert f"resuming from checkpoint {shared_checkpoints / f'checkpoint-{step}'}" in logs[1]
    result = TrainResult(trees[0], 0, logs[0])
    assert result.metrics()["train"]["global_step"] == 400
    assert result.failure is None


def test_two_processes_on_one_host_need_no_host_names(tmp_path: Path, base_models: dict[str, Path]) -> None:
    """processes_per_host=2 on a CPU host whose name (algo-1) resolves nowhere: torchrun meets on loopback."""
    hyper = quick_hyperparameters(
        "ner", base_models["bert"], per_device_train_batch_size=4, processes_per_host=2
    )
    tree = make_tree(tmp_path, DATA_DIR / "ner", hyper)
    result = run_train(tree, extra_env={"HFSM_MASTER_PORT": str(free_port()), "HFSM_HOST_WAIT_S": "1"})
    assert result.returncode == 0, result.output[-4000:]
    assert "host 1 of 1: 2 process(es) here, 2 in all, gloo, meeting at 127.0.0.1" in result.output
    assert "process 1 of 2:" in result.output and (result.model_dir / "model.safetensors").is_file()
