"""The study console: library logs in the workdir's log file, notices first."""

import dataclasses
import subprocess
import sys

from ttcjax.experiments import console, embedded_study, studies


def test_absl_and_orbax_info_go_to_the_log_file(tmp_path):
  code = (  # as under ttcjax.main.study: absl's app.run, INFO on
      "import logging as pylogging\n"
      "from absl import app, logging\n"
      "from ttcjax.experiments import console\n"
      "def main(_):\n"
      f"  console.log_to_file({str(tmp_path)!r})\n"
      "  logging.info('absl info line')\n"
      "  pylogging.getLogger('orbax').info('CheckpointManager dump')\n"
      "  print('console line')\n"
      "app.run(main)\n")
  out = subprocess.run([sys.executable, "-c", code], check=True,
                       capture_output=True, text=True)
  assert out.stdout == "console line\n"
  assert "absl info line" not in out.stderr
  assert "CheckpointManager" not in out.stderr
  text = (tmp_path / console.LOG_FILE).read_text()
  assert "absl info line" in text and "CheckpointManager dump" in text


def test_small_presets_say_first_that_they_cannot_show_the_direction():
  for preset in ("smoke", "micro"):
    (line,) = studies.notices(studies.ArithStudy(preset=preset))
    assert "docs/results/arith_cpu/" in line
  assert studies.notices(studies.ArithStudy(preset="arith_cpu")) == []
  assert embedded_study.SWEEPS["arith_cpu"].shows_direction


def test_progress_lines_are_spaced_and_carry_an_eta():
  lines = []
  ctx = type("Ctx", (), {"name": "search_sweep", "log": lines.append})()
  now = [0.0]
  report = embedded_study._progress_line(ctx, every_s=60,  # pylint: disable=protected-access
                                         clock=lambda: now[0])
  for t, done in ((10, 10), (70, 20), (80, 30), (90, 40)):
    now[0] = t
    report(done, 40)
  assert len(lines) == 2  # at 70 s, then the last one
  assert "20/40 generations (50%" in lines[0] and "left" in lines[0]
  assert lines[1].startswith("  search_sweep: 40/40")


def test_training_stages_print_a_line_per_tenth_with_loss_and_eta(tmp_path):
  """`train_role`'s console lines: about one per tenth of the steps (the
  trainer logs every `log_every`), each with the loss and the time left."""
  from ttcjax.experiments import embedded  # pylint: disable=g-import-not-at-top
  config = embedded.micro().replace(pretrain_problems=16)
  role = dataclasses.replace(config.pretrain, train=dataclasses.replace(
      config.pretrain.train, total_steps=20, log_every=1,
      checkpoint_every=20))
  lines = []
  ctx = type("Ctx", (), {"name": "pretrain_policy", "log": lines.append,
                         "work": tmp_path / "work", "out": tmp_path / "out"})()
  embedded.train_role(ctx, config.policy, role,
                      embedded.pretraining_examples(config), what="policy")
  assert len(lines) == 10, lines
  assert lines[0].startswith("  pretrain_policy/train policy: step 2/20 loss ")
  assert lines[-1].startswith("  pretrain_policy/train policy: step 20/20 ")
  assert all("so far, ~" in line and "left)" in line for line in lines)
