"""The translation memory: exact reuse with human before machine, fuzzy examples above a threshold,
rejected answers never reused as translations, and two processes writing one memory at once."""

from __future__ import annotations

import multiprocessing

from bayling_local.translate.memory import HUMAN, MACHINE, REJECTED, MemoryUnit, TranslationMemory


def test_exact_hit_prefers_human_and_is_keyed_by_languages_and_context(tmp_path):
    with TranslationMemory.open(tmp_path / "tm.sqlite") as memory:
        memory.add([MemoryUnit("Open", "Ouvrir", "eng_Latn", "fra_Latn", "menu", MACHINE)])
        memory.add([MemoryUnit("Open", "Ouvert", "eng_Latn", "fra_Latn", "shop status", MACHINE)])
        memory.add([MemoryUnit("Open ", "Ouvrir (relu)", "eng_Latn", "fra_Latn", "menu", HUMAN)])
        assert memory.exact("  Open", "eng_Latn", "fra_Latn", "menu").target == "Ouvrir (relu)"
        assert memory.exact("Open", "eng_Latn", "fra_Latn", "shop status").target == "Ouvert"
        assert memory.exact("Open", "eng_Latn", "swh_Latn", "menu") is None
        assert memory.exact("Open", "eng_Latn", "fra_Latn") is None


def test_fuzzy_matches_above_threshold_and_never_rejected(tmp_path):
    with TranslationMemory.open(tmp_path / "tm.sqlite") as memory:
        memory.add(
            [
                MemoryUnit("The library opens at nine.", "La bibliothèque ouvre à neuf heures.", "", "fra_Latn"),
                MemoryUnit("The library opens at ten.", "<1> missing", "", "fra_Latn", origin=REJECTED),
                MemoryUnit("Bananas are yellow.", "Les bananes sont jaunes.", "", "fra_Latn"),
            ]
        )
        matches = memory.fuzzy("The library opens at eight.", "", "fra_Latn", 0.75)
        assert [m.target for m in matches] == ["La bibliothèque ouvre à neuf heures."] and matches[0].score >= 0.75
        assert memory.fuzzy("The library opens at eight.", "", "fra_Latn", 0.99) == []
        assert all(u.origin != REJECTED for u in memory.units())


def _writer(path: str, worker: int) -> None:
    with TranslationMemory.open(path) as memory:
        for i in range(100):
            memory.add([MemoryUnit(f"sentence {worker}-{i}", f"phrase {worker}-{i}", "eng_Latn", "fra_Latn")])


def test_two_processes_write_one_memory_at_once(tmp_path):
    path = str(tmp_path / "tm.sqlite")
    TranslationMemory.open(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, n)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with TranslationMemory.open(path) as memory:
        assert memory.stats()["units"] == 200
        assert memory.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
