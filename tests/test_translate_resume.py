"""Resumable file translation: SIGKILL, Ctrl-C and cancel leave a journal, and rerunning the same
command finishes with exactly the output of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from bayling_local.translate.journal import Journal, JournalEntry
from tests.conftest import run_cli
from tests.processes import wait_until
from tests.test_translate_formats import bundled_model

ANIMALS = ("cat", "dog", "bird", "horse", "fish", "goat")
PLACES = ("river", "market", "school", "forest", "bridge")
LINES = [f"The {ANIMALS[i % 6]} waits near the {PLACES[i % 5]} on day {i}." for i in range(30)]
# One thread: llama.cpp's spinning worker threads crawl when other jobs share a 2-core machine.
# --no-tm: this module is about the journal; a memory shared across its tests would answer for the model.
FLAGS = ("--to", "fr", "--max-tokens", "4", "--batch-size", "3", "--threads", "1", "--no-tm")


def command(folder, *extra):
    return ["translate", "-i", str(folder / "lines.txt"), "-o", str(folder / "out.txt"), *FLAGS, *extra]


def make_input(folder):
    folder.mkdir()
    (folder / "lines.txt").write_text("\n".join(LINES) + "\n")
    return folder


def journal_entries(folder) -> int:
    path = folder / "out.txt.journal"
    return max(0, len(path.read_bytes().splitlines()) - 1) if path.exists() else 0


# A test run started in the background (`cmd &` in a script, nohup) ignores SIGINT, and a child inherits
# that: Python then installs no KeyboardInterrupt handler and Ctrl-C would do nothing. A user's terminal
# delivers Ctrl-C, so the child installs Python's handler itself before running the CLI.
WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'bayling-local'; runpy.run_module('bayling_local', run_name='__main__')"
)


def start(folder, *extra):
    return subprocess.Popen(
        [sys.executable, "-c", WITH_CTRL_C, *command(folder, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


def stop_when_journal_has(process, folder, entries: int, sig: int) -> None:
    def reached() -> bool:
        assert process.poll() is None, process.communicate()[1].decode()  # it must not end first
        return journal_entries(folder) >= entries

    wait_until(reached, what=f"{entries} journal entries")
    process.send_signal(sig)
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = make_input(tmp_path_factory.mktemp("resume") / "reference")
    result = run_cli(*command(folder))
    assert result.returncode == 0, result.stderr
    return (folder / "out.txt").read_bytes()


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, uninterrupted):
    folder = make_input(tmp_path / "killed")
    seen = 0
    for wanted in (1, 10):  # kill after the first batch, then again well into the file
        process = start(folder)
        stop_when_journal_has(process, folder, max(wanted, seen + 3), signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        assert not (folder / "out.txt").exists() and not list(folder.glob(".*.tmp"))
        assert journal_entries(folder) >= seen  # nothing finished is lost
        seen = journal_entries(folder)
    assert seen < len(LINES)
    result = run_cli(*command(folder, "--json-log", "-"))
    assert result.returncode == 0, result.stderr
    assert (folder / "out.txt").read_bytes() == uninterrupted
    assert not (folder / "out.txt.journal").exists()
    summary = json.loads(result.stdout.decode().splitlines()[-1])
    assert summary["resumed"] == seen and summary["resumed"] + summary["translated"] == len(LINES)


def test_ctrl_c_exits_130_keeps_the_journal_and_writes_no_output(tmp_path, uninterrupted):
    folder = make_input(tmp_path / "interrupted")
    process = start(folder)
    stop_when_journal_has(process, folder, 3, signal.SIGINT)
    assert process.returncode == 130
    assert (folder / "out.txt.journal").exists() and not (folder / "out.txt").exists()
    changed = run_cli(*command(folder, "--max-tokens", "7"))
    assert changed.returncode == 2 and b"--restart" in changed.stderr and b"generation" in changed.stderr
    assert len(changed.stderr.decode().strip().splitlines()) == 1
    finished = run_cli(*command(folder))
    assert finished.returncode == 0, finished.stderr
    assert (folder / "out.txt").read_bytes() == uninterrupted
    assert not (folder / "out.txt.journal").exists()


def test_restart_discards_a_journal_of_other_settings(tmp_path):
    folder = make_input(tmp_path / "restart")
    (folder / "lines.txt").write_text("Good morning.\nGood night.\n")
    (folder / "out.txt.journal").write_text('{"journal": 1, "settings_hash": "other", "settings": {}}\n')
    assert run_cli(*command(folder)).returncode == 2
    result = run_cli(*command(folder, "--restart"))
    assert result.returncode == 0, result.stderr
    assert len((folder / "out.txt").read_text().splitlines()) == 2


def test_cancel_event_stops_between_batches_and_a_rerun_finishes(tmp_path):
    model = bundled_model()
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(LINES[:6]) + "\n")
    options = BatchOptions(output=str(tmp_path / "out.txt"), max_tokens=6, batch_size=2)
    cancel = threading.Event()
    events = []

    def progress(event):
        events.append(event)
        if event.batch == 1:
            cancel.set()

    stopped = translate_file(model, path, [resolve("fr")], options=options, progress=progress, cancel=cancel)
    assert not stopped.completed and stopped.translated == 2
    assert not (tmp_path / "out.txt").exists() and (tmp_path / "out.txt.journal").exists()
    finished = translate_file(model, path, [resolve("fr")], options=options)
    assert finished.completed and finished.resumed == 2 and finished.translated == 4
    resumed_text = (tmp_path / "out.txt").read_text()
    fresh = translate_file(
        model, path, [resolve("fr")], options=BatchOptions(output=str(tmp_path / "b.txt"), max_tokens=6, batch_size=2)
    )
    assert fresh.resumed == 0 and (tmp_path / "b.txt").read_text() == resumed_text


def test_a_line_cut_by_a_kill_is_dropped_and_appends_start_clean(tmp_path):
    path = tmp_path / "out.journal"
    settings = {"model": "m"}
    journal = Journal.open(path, settings)
    journal.record([JournalEntry(0, 0, "fra_Latn", "abc", "Bonjour")])
    journal.close()
    with path.open("a") as file:
        file.write('{"segment": 1, "piece": 0, "tar')  # what a kill in mid-write leaves
    reopened = Journal.open(path, settings)
    assert list(reopened.entries) == [(0, 0, "fra_Latn", "abc")]
    reopened.record([JournalEntry(1, 0, "fra_Latn", "def", "Salut")])
    reopened.close()
    assert len(Journal.open(path, settings).entries) == 2
