"""DistributedDataParallel through torchrun, on two CPU processes (gloo): the path a multi-GPU machine takes."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, tiny_overrides


@pytest.mark.slow
def test_torchrun_two_processes(demo_version, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.run",
           "--quiet", *tiny_overrides(demo_version.path, tmp_path / "runs", "output.name=ddp", "train.device=cpu")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2, "only rank 0 writes metrics"
    assert (run / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "runs" / "ddp-2").exists(), "only rank 0 creates the run folder"
