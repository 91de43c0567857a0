"""The command that runs `python -m bayling_local.training.sft RECIPE` on one or many processes/nodes.

No flags: one process here. `--gpus N`: torchrun with N processes on this node. `--hostfile F`:
the DeepSpeed launcher over the hosts of F (each line `host slots=N`), which starts the same module
on every node. Every launcher is run through this Python, so the virtualenv is the same everywhere.
"""

from __future__ import annotations

import subprocess
import sys

from bayling_local.errors import UsageError

SFT_MODULE = "bayling_local.training.sft"
LAUNCHERS = ("auto", "deepspeed", "torchrun")


def launch_command(
    recipe: str,
    *,
    gpus: int | None,
    hostfile: str | None,
    launcher: str = "auto",
    resume: bool = False,
    stop_after: int | None = None,
) -> list[str]:
    """argv for the run; see the module docstring for which launcher each choice gets."""
    if launcher not in LAUNCHERS:
        raise UsageError(f"unknown launcher '{launcher}'; choose one of: {', '.join(LAUNCHERS)}")
    if gpus is not None and gpus < 1:
        raise UsageError("--gpus must be at least 1")
    script = [recipe, *(["--resume"] if resume else []), *(["--stop-after", str(stop_after)] if stop_after else [])]
    chosen = _chosen_launcher(launcher, gpus, hostfile)
    if chosen is None:
        return [sys.executable, "-m", SFT_MODULE, *script]
    if chosen == "torchrun":
        if hostfile:
            raise UsageError("--hostfile needs the DeepSpeed launcher; drop --launcher torchrun")
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus or 1),
                "-m", SFT_MODULE, *script]
    hosts = ["--hostfile", hostfile] if hostfile else []
    slots = ["--num_gpus", str(gpus)] if gpus else []
    return [sys.executable, "-m", "deepspeed.launcher.runner", *hosts, *slots, "--module", SFT_MODULE, *script]


def _chosen_launcher(launcher: str, gpus: int | None, hostfile: str | None) -> str | None:
    if launcher != "auto":
        return launcher
    if hostfile:
        return "deepspeed"
    if gpus is not None:
        return "torchrun"
    return None


def run_launch(command: list[str]) -> int:
    """Run the launcher, forwarding its output; its exit code is ours."""
    print("launching: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command)
