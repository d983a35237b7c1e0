"""Preemption of multi-host training (issue 14, part 2): SIGTERM to one of
two `ttcjax.main.train` processes; JAX's preemption sync point makes both
save the same step and exit with the preemption status (75)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ttcjax import faults, testing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


@pytest.mark.slow
def test_sigterm_to_one_host_saves_the_same_step_on_both(tmp_path):
  workdir = tmp_path / "w"
  args = ["--gin_file=models/tiny.gin", "--gin_file=runs/train_policy.gin",
          "--gin_bindings=TRAIN_STEPS = 400",
          "--gin_bindings=TrainConfig.warmup_steps = 1",
          "--gin_bindings=TrainConfig.eval_batches = 1",
          "--gin_bindings=TrainConfig.write_tensorboard = False",
          "--gin_bindings=TrainConfig.checkpoint_every = 50",
          "--gin_bindings=DataConfig.batch_size = 8",
          "--gin_bindings=DataConfig.train_examples = 64",
          "--gin_bindings=DataConfig.eval_examples = 8",
          f"--workdir={workdir}",
          f"--coordinator_address=localhost:{testing.free_port()}",
          "--num_processes=2"]
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  procs = []
  for i in range(2):
    with open(logs[i], "wb") as out:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "ttcjax.main.train", *args,
           f"--process_id={i}"], cwd=REPO, env=testing.cpu_process_env(1),
          stdout=out, stderr=subprocess.STDOUT))
  try:
    deadline = time.monotonic() + 600
    while not (workdir / "checkpoints" / "50").exists():
      assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
      assert time.monotonic() < deadline, "no checkpoint in 600 s"
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # one host's notice only
    began = time.monotonic()
    codes = [p.wait(timeout=300) for p in procs]
    seconds = time.monotonic() - began
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  texts = [log.read_text(errors="replace") for log in logs]
  assert codes == [faults.EXIT_PREEMPTED] * 2, (codes, texts[0][-3000:])
  steps = [re.findall(r"preempted \(SIGTERM\): train state of step (\d+)/",
                      t) for t in texts]
  assert len(steps[0]) == 1 and steps[0] == steps[1], steps
  step = int(steps[0][0])
  assert 50 < step < 400 and (workdir / "checkpoints" / str(step)).is_dir()
  print(f"both hosts saved step {step} and exited 75, {seconds:.1f} s after "
        f"SIGTERM to process 1")
