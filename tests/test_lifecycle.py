"""No process left behind, and no model directory lost, whatever stops the bot.

The training child is a real `moodring train` on the tiny backbone, long enough that only a stop ends it.
The parent processes come from tests/lifecycle_parent.py; tests/process_guard.py checks the whole run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bot_fixtures import BotFactory, confirm_retrain, wait_until
from process_guard import process_alive, wait_until_gone

from model import EmotionClassifier, ModelMetadata
from model.child_process import stop_child
from model.storage import recover_directory
from sandbox import DiscordStandIn

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PARENT_SCRIPT = TESTS / "lifecycle_parent.py"


def start_parent(mode: str, root: Path, backbone: Path, data_dir: Path) -> tuple[subprocess.Popen, int]:
    """Start tests/lifecycle_parent.py in `mode`; returns it and its training child's pid, once announced."""
    parent = subprocess.Popen(
        [sys.executable, str(PARENT_SCRIPT), mode, str(root), str(backbone), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])},
    )
    output = []
    for line in parent.stdout:  # ends when the parent exits, so a crash cannot hang the test
        output.append(line)
        if line.startswith("child "):
            return parent, int(line.split()[1])
    parent.wait()
    pytest.fail("the parent never started its child:\n" + "".join(output))


def test_training_child_stops_by_itself_when_its_parent_is_killed(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    parent, child = start_parent("retrainer", tmp_path, tiny_backbone_dir, goemotions_dir)
    try:
        assert process_alive(child)
        parent.kill()  # SIGKILL: no handler, no clean-up, no chance to stop the child
        parent.wait(timeout=10)
        assert wait_until_gone(child, timeout=10), f"training child {child} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if process_alive(child):
            os.kill(child, signal.SIGKILL)


def test_sigterm_to_the_bot_stops_its_training_child(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    parent, child = start_parent("bot", tmp_path, tiny_backbone_dir, goemotions_dir)
    try:
        assert process_alive(child)
        parent.send_signal(signal.SIGTERM)  # what `systemctl stop` or `docker stop` sends to `moodring run`
        output, _ = parent.communicate(timeout=60)
        assert parent.returncode == 0, output
        assert not process_alive(child), f"training child {child} outlived the bot"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if process_alive(child):
            os.kill(child, signal.SIGKILL)


async def test_bot_shutdown_stops_its_training_child(
    make_moodring_bot: BotFactory, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    async with make_moodring_bot(
        model_dir=tmp_path / "no-model-yet",
        train_on_start=True,
        backbone=str(tiny_backbone_dir),
        data_dir=str(goemotions_dir),
        retrain_args="--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16",
    ) as bot:
        await wait_until(lambda: bot.retrainer.child_pid is not None, timeout=30, what="the training child")
        child = bot.retrainer.child_pid
        assert process_alive(child)
    # The block's exit is `bot.close()`, as on Ctrl-C, SIGTERM or a lost login.
    assert not process_alive(child), f"training child {child} outlived the bot"
    assert (bot.retrainer.status.outcome, bot.retrainer.status.detail) == ("cancelled", "the bot is shutting down")


async def test_retrain_cancel_from_discord_stops_the_child_and_says_which_model_serves(
    discord_standin: DiscordStandIn,
    make_moodring_bot: BotFactory,
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
) -> None:
    async with make_moodring_bot(
        model_dir=Path(shutil.copytree(tiny_model_dir, tmp_path / "serving")),
        backbone=str(tiny_backbone_dir),
        data_dir=str(goemotions_dir),
        retrain_args="--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16",
    ) as bot:
        serving = bot.inference.classifier
        started = await discord_standin.dispatch_slash_command("moodring retrain", user=discord_standin.owner_id)
        await confirm_retrain(discord_standin, started)
        await wait_until(lambda: bot.retrainer.child_pid is not None, timeout=30, what="the training child")
        child = bot.retrainer.child_pid
        cancel = await discord_standin.dispatch_slash_command("moodring retrain-cancel", user=discord_standin.owner_id)
        await discord_standin.wait_for_interaction_response(cancel)  # deferred while the child stops
        reply = await discord_standin.wait_for_request(
            lambda r: r.params.get("interaction_token") == cancel["token"],
            route="/webhooks/{application_id}/{interaction_token}",
            method="POST",
            timeout=30,
        )
        assert "Retraining cancelled (cancelled by an owner); the current model keeps serving." in reply.json["content"]
        assert not process_alive(child), f"training child {child} outlived the cancel"
        assert bot.inference.classifier is serving


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    # A child that ignores SIGTERM, with a grandchild (as DataLoader workers are) that ignores it too.
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.DEVNULL
        )
        print(grandchild.pid, flush=True)
        time.sleep(600)
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    grandchild = int((await process.stdout.readline()).decode())
    try:
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(stop_child(process, grace_s=0.5), 30)
        assert asyncio.get_running_loop().time() - started >= 0.5  # SIGTERM first, SIGKILL only after the grace
        assert process.returncode == -signal.SIGKILL
        assert wait_until_gone(grandchild, timeout=5), "the child's own child was left running"
    finally:
        for pid in (process.pid, grandchild):
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        await process.wait()


# A child process that runs model/storage.py's replace_directory and is SIGKILLed between its two renames.
CRASH_MID_REPLACE = textwrap.dedent(
    """
    import importlib.util, os, signal, sys
    spec = importlib.util.spec_from_file_location("storage", sys.argv[1])
    storage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(storage)
    real_replace = os.replace

    def replace_then_die(source, destination):
        real_replace(source, destination)
        os.kill(os.getpid(), signal.SIGKILL)  # after the first rename: the serving model is moved aside

    os.replace = replace_then_die
    storage.replace_directory(sys.argv[2], sys.argv[3])
    """
)


async def test_start_up_restores_a_model_directory_after_a_crash_mid_replace(
    make_moodring_bot: BotFactory, tmp_path: Path, tiny_model_dir: Path
) -> None:
    serving, candidate = tmp_path / "models" / "serving", tmp_path / "runs" / "candidate"
    shutil.copytree(tiny_model_dir, serving)
    candidate.mkdir(parents=True)
    (candidate / "half-written").write_text("a candidate that never made it")
    crash = subprocess.run(
        [sys.executable, "-c", CRASH_MID_REPLACE, str(REPO / "model" / "storage.py"), str(candidate), str(serving)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    assert not serving.exists()  # the crash left no model where the bot looks for one
    leftovers = sorted(p.name for p in serving.parent.iterdir())
    assert any(".retired-" in name for name in leftovers) and any(".incoming-" in name for name in leftovers)

    async with make_moodring_bot(model_dir=serving) as bot:
        assert bot.inference.ready  # start-up put the retired model back and serves it
        assert bot.inference.classifier.metadata == ModelMetadata.load(tiny_model_dir)
    assert sorted(p.name for p in serving.parent.iterdir()) == ["serving"]  # stale copies cleaned up
    assert EmotionClassifier.load(serving).metadata == ModelMetadata.load(tiny_model_dir)


def test_recovery_leaves_a_complete_directory_and_a_live_replace_alone(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("serving")
    dead = 2**22 + 1  # above Linux's default pid_max, so no process has it
    stale_incoming, stale_retired = tmp_path / f".model.incoming-{dead}", tmp_path / f".model.retired-{dead}"
    live = tmp_path / f".model.incoming-{os.getppid()}"  # a replace still running in another process
    for directory in (stale_incoming, stale_retired, live):
        directory.mkdir()
    assert not recover_directory(target)  # the target is there: nothing to restore
    assert (target / "weights").read_text() == "serving"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name])


def test_a_test_run_that_leaves_a_process_behind_fails(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys

            def test_starts_a_process_and_forgets_it():
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
                print("started", child.pid)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "process_guard", "-q", "-s", "-p", "no:cacheprovider", "test_leaky.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    leaked = int(run.stdout.split("started ", 1)[1].split()[0])
    try:
        assert "1 passed" in run.stdout and run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
        assert f"process left behind by the tests: pid {leaked}" in run.stdout
        assert not process_alive(leaked)  # and stopped, so that it cannot outlive the run either
    finally:
        if process_alive(leaked):
            os.kill(leaked, signal.SIGKILL)
