"""Bad `bench` input: one line on stderr naming the problem, a non-zero exit, before any model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("BAYLING_SHARED_DATA") or Path(__file__).parent.parents[1] / "shared" / "data")


def _fails_with_one_line(result, code: int, *fragments: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert err.count("\n") == 1 and err.startswith("bayling-local: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["bench", "translate", "--data", "/no/such/folder", "--pairs", "en-sw"], ["/no/such/folder does not exist"]),
        (["bench", "choice", "--data", "/no/such/folder"], ["/no/such/folder does not exist"]),
        (["bench", "choice", "--task", "hellaswag", "--data", "/tmp"], ["unknown task 'hellaswag'"]),
        (["bench", "speed", "--threads", "one"], ["--threads must be comma-separated"]),
        (["bench", "speed", "--device", "tpu"], ["unknown device tpu"]),
    ],
)
def test_bad_input_without_data(cli, args, fragments):
    _fails_with_one_line(cli(*args), 2, *fragments)


def test_bad_pairs_and_languages_with_data(cli):
    if not (DATA / "flores200_dev_devtest_204langs.tar.xz").is_file() or not (DATA / "xcopa.tar.xz").is_file():
        pytest.skip(f"evaluation archives not found in {DATA}")
    _fails_with_one_line(
        cli("bench", "translate", "--data", str(DATA), "--pairs", "eng_Latn"), 2, "malformed pair 'eng_Latn'"
    )
    _fails_with_one_line(cli("bench", "translate", "--data", str(DATA), "--pairs", "en-klingon"), 2, "malformed pair")
    _fails_with_one_line(cli("bench", "choice", "--data", str(DATA), "--langs", "fr"), 2, "XCOPA has no French")
    _fails_with_one_line(cli("bench", "translate", "--data", str(DATA), "--pairs", "all-from"), 2, "all-from:eng_Latn")
    _fails_with_one_line(
        cli("bench", "choice", "--data", str(DATA), "--langs", "xx_Zzzz"), 2, "unknown language 'xx_Zzzz'"
    )
    _fails_with_one_line(cli("bench", "choice", "--data", str(DATA), "--split", "train"), 2, "no split 'train'")


def test_unknown_model_is_one_line(cli, tmp_path):
    _fails_with_one_line(cli("bench", "speed", str(tmp_path / "missing.gguf")), 1, "missing.gguf does not exist")


def test_corrupt_data_file_is_one_line(cli, tmp_path):
    broken = tmp_path / "test.sw.jsonl"
    broken.write_text(json.dumps({"premise": "x"}) + "\n", encoding="utf-8")
    result = cli("bench", "choice", "--data", str(broken), "--threads", "1")
    _fails_with_one_line(result, 2, "not XCOPA-style JSONL")
