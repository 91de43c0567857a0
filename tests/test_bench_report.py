"""`bench report`: a table and a PNG from a results log (no model needed)."""

from __future__ import annotations

from bayling_local.bench.report import PANELS, model_rows
from bayling_local.bench.results import RunRecord, append_record, read_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_log(path):
    hardware = {"cpu": "Test CPU", "gpus": []}
    for model, quant, size, tg, chrf in (
        ("bayling-3-8b", "Q4_K_M", 4.9e9, 21.0, 47.0),
        ("tiny", "Q8_0", 1e8, 90.0, 12.0),
    ):
        details = {"size_bytes": int(size), "device": "cpu"}
        speed = {"prompt_tps": {"mean": tg * 8, "stddev": 1.0}, "generation_tps": {"mean": tg, "stddev": 0.3}}
        settings = {"prompt_tokens": 512, "generation_tokens": 128}
        append_record(RunRecord("speed", model, quant, "llama.cpp", hardware, settings, speed, details), path)
        pairs = [
            {"pair": f"eng_Latn-{t}", "source": "eng_Latn", "target": t, "chrf": chrf + i, "bleu": chrf / 3}
            for i, t in enumerate(("swh_Latn", "fra_Latn", "zho_Hans"))
        ]
        results = {"pairs": pairs, "average": {"chrf": chrf + 1, "bleu": chrf / 3}}
        append_record(RunRecord("translate", model, quant, "llama.cpp", hardware, {}, results, details), path)
        langs = [{"language": lang, "acc": 0.6, "acc_norm": 0.55} for lang in ("sw", "zh")]
        choice = {"languages": langs, "average": {"acc": 0.6}, "chance": 0.5}
        append_record(
            RunRecord("choice", model, quant, "llama.cpp", hardware, {"task": "xcopa"}, choice, details), path
        )


def test_report_writes_a_png_and_a_table_per_model(cli, tmp_path):
    log = tmp_path / "results.jsonl"
    _write_log(log)
    with log.open("ab") as out:
        out.write(b'{"kind": "speed", "model": "torn')  # a crash's leftovers are skipped, and said so
    png, md = tmp_path / "out" / "report.png", tmp_path / "report.md"
    result = cli("bench", "report", str(log), "--plot", str(png), "--markdown", str(md))
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "bayling-3-8b" in out and "tiny" in out and "1 unreadable line(s) skipped" in out
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 30_000
    assert "| bayling-3-8b | Q4_K_M | 4.56 GiB | cpu | 168.0 | 21.0 | 15.67 | 48.00 | 0.600 |" in md.read_text()


def test_every_panel_has_data_from_a_full_log(tmp_path):
    log = tmp_path / "results.jsonl"
    _write_log(log)
    rows = model_rows(read_records(log).records)
    assert [p.name for p in PANELS if p.wanted(rows)] == [p.name for p in PANELS]
    assert rows[0].generation_tps == 21.0 and rows[1].chrf == 13.0


def test_report_without_results_says_how_to_make_them(cli, tmp_path):
    result = cli("bench", "report", env={"BAYLING_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and "bench speed" in result.stderr.decode()
