"""The model store imports, lists, removes and refuses models without ever leaving half an entry."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import socket
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

from bayling_local.catalog import BUNDLED_MODEL_NAME
from bayling_local.errors import (
    InvalidModelFileError,
    ModelNotFoundError,
    OfflineError,
    StoreError,
)
from bayling_local.store import (
    MANIFEST_NAME,
    get_model,
    import_model,
    list_models,
    pull_model,
    remove_model,
)

pytestmark = pytest.mark.usefixtures("store_home")


@pytest.fixture(scope="module")
def smollm2_copy(bundled_gguf, tmp_path_factory) -> Path:
    """One copy of the bundled GGUF under its real file name, shared by the module's tests (read-only)."""
    path = tmp_path_factory.mktemp("source") / bundled_gguf.name
    path.write_bytes(bundled_gguf.read_bytes())
    return path


@pytest.fixture(scope="module")
def smollm2_cut_in_half(bundled_gguf, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cut") / "smollm2-half.gguf"
    with bundled_gguf.open("rb") as source:
        path.write_bytes(source.read(bundled_gguf.stat().st_size // 2))
    return path


def tiny_gguf(path: Path, *, fill: float = 1.0, architecture: str = "llama", strings: dict | None = None) -> Path:
    """A complete GGUF with one F32 tensor and `strings` as extra string metadata, written by hand (see
    test_gguf_header for the format)."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    metadata = string("general.architecture") + struct.pack("<I", 8) + string(architecture)
    metadata += string("general.file_type") + struct.pack("<II", 4, 0)  # u32 0 = F32
    for key, value in (strings or {}).items():
        metadata += string(key) + struct.pack("<I", 8) + string(value)
    tensor = string("w") + struct.pack("<IQQIQ", 2, 4, 2, 0, 0)
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 2 + len(strings or {})) + metadata + tensor
    out += bytes(-len(out) % 32) + struct.pack("<8f", *[fill] * 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def everything_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


def store_listing(models: Path) -> list[str]:
    """Every name in the models folder, hidden ones (staging folders) included."""
    return sorted(os.listdir(models)) if models.exists() else []


# --- importing a GGUF ---------------------------------------------------------------------------


def test_import_copies_the_gguf_byte_for_byte_with_a_manifest_from_its_header(smollm2_copy, store_home):
    model = import_model(smollm2_copy)

    assert model.name == "smollm2-135m-instruct.q4_1"  # from the file name
    manifest = model.manifest
    assert (manifest.format, manifest.quant, manifest.chat_format) == ("gguf", "Q4_1", "template")
    assert (manifest.architecture, manifest.context_length, manifest.languages) == ("llama", 8192, "en")
    assert manifest.size == smollm2_copy.stat().st_size
    assert manifest.sha256 == hashlib.sha256(smollm2_copy.read_bytes()).hexdigest()
    assert model.path == store_home / model.name / smollm2_copy.name
    assert filecmp.cmp(model.path, smollm2_copy, shallow=False)
    assert not model.bundled
    assert model.name in [m.name for m in list_models()]
    assert get_model(model.name) == model


@pytest.mark.parametrize("recorded", ["bayling-2", "bayling-3"])
def test_gguf_without_a_template_is_stored_with_the_chat_format_convert_recorded(tmp_path, store_home, recorded):
    path = tiny_gguf(tmp_path / "mine.gguf", strings={"bayling.chat_format": recorded})
    assert import_model(path).manifest.chat_format == recorded
    assert import_model(path, name="asked", chat_format="chatml").manifest.chat_format == "chatml"


def test_manifest_json_holds_every_info_field_and_reads_back_equal(tmp_path, store_home):
    model = import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="tiny", chat_format="chatml")

    on_disk = json.loads((store_home / "tiny" / MANIFEST_NAME).read_text("utf-8"))
    assert on_disk == asdict(model.manifest)
    assert on_disk["chat_format"] == "chatml" and on_disk["quant"] == "F32"
    assert asdict(get_model("tiny").manifest) == on_disk


def test_link_import_references_the_source_instead_of_copying_it(smollm2_copy, store_home):
    model = import_model(smollm2_copy, name="linked", link=True)

    assert model.manifest.artifact == str(smollm2_copy.resolve())
    assert model.path == smollm2_copy.resolve()
    assert os.listdir(store_home / "linked") == [MANIFEST_NAME]
    assert get_model("linked").path == smollm2_copy.resolve()


@pytest.mark.parametrize(
    "file_name, expected",
    [("My Model (v2).GGUF", "my-model-v2"), ("Qwen2.5-7B_Q4_K_M.gguf", "qwen2.5-7b_q4_k_m"), ("...gguf", "model")],
)
def test_name_defaults_to_the_lower_cased_safe_file_name(tmp_path, file_name, expected):
    assert import_model(tiny_gguf(tmp_path / "src" / file_name)).name == expected


def test_upper_case_name_is_stored_lower_case(tmp_path, store_home):
    model = import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="UPPER")
    assert model.name == "upper"
    assert store_listing(store_home) == ["upper"]
    assert get_model("UPPER").name == "upper"


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/b", "..", "", "   ", "x" * 200, "/tmp/abs", ".hidden", "a..b", "-dash", "sp ace", "a\\b", "é"],
)
def test_names_that_could_leave_the_store_are_refused_and_nothing_is_written(tmp_path, store_home, name):
    source = tiny_gguf(tmp_path / "src" / "tiny.gguf")
    before = everything_under(tmp_path)

    with pytest.raises(StoreError, match="invalid model name"):
        import_model(source, name=name)

    assert everything_under(tmp_path) == before
    assert not (tmp_path / "evil").exists() and not (tmp_path / "home" / "evil").exists()


def test_importing_an_existing_name_is_refused_without_force_and_replaced_with_it(tmp_path, store_home):
    first = import_model(tiny_gguf(tmp_path / "one.gguf", fill=1.0), name="tiny")
    second_source = tiny_gguf(tmp_path / "two.gguf", fill=2.0)

    with pytest.raises(StoreError, match="--force"):
        import_model(second_source, name="tiny")
    assert get_model("tiny").manifest.sha256 == first.manifest.sha256

    replaced = import_model(second_source, name="tiny", force=True)
    assert replaced.manifest.sha256 == sha256_of(second_source) != first.manifest.sha256
    assert filecmp.cmp(replaced.path, second_source, shallow=False)
    assert store_listing(store_home) == ["tiny"]
    assert sorted(os.listdir(store_home / "tiny")) == [MANIFEST_NAME, "two.gguf"]


def test_truncated_gguf_import_is_refused_and_leaves_nothing_in_the_store(smollm2_cut_in_half, store_home):
    with pytest.raises(InvalidModelFileError, match="truncated"):
        import_model(smollm2_cut_in_half, name="half")
    assert store_listing(store_home) == []
    with pytest.raises(ModelNotFoundError):
        get_model("half")


def test_foreign_file_import_is_refused_and_leaves_nothing_in_the_store(tmp_path, store_home):
    source = tmp_path / "notes.gguf"
    source.write_text("not a model at all, just some text that is long enough\n")
    with pytest.raises(InvalidModelFileError, match="not a GGUF file"):
        import_model(source)
    assert store_listing(store_home) == []


class Interrupted(Exception):
    pass


def raise_after_first_call(error: type[BaseException] = Interrupted):
    """A progress callback that lets the first chunk through and fails on the second."""
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) > 1:
            raise error(f"stopped at {done} of {total} bytes")

    return progress, calls


# KeyboardInterrupt is the Ctrl-C a user presses; it is not an Exception, so cleanup must not need one.
@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_import_interrupted_mid_copy_leaves_no_entry_and_no_temporary_folder(smollm2_copy, store_home, error):
    progress, calls = raise_after_first_call(error)

    with pytest.raises(error):
        import_model(smollm2_copy, name="smollm2-copy", progress=progress)

    assert len(calls) == 2 and calls[0] < smollm2_copy.stat().st_size  # it stopped mid-copy
    assert store_listing(store_home) == []
    assert [m.name for m in list_models()] == [BUNDLED_MODEL_NAME]


def test_interrupted_forced_reimport_keeps_the_previous_entry_whole(smollm2_copy, tmp_path, store_home):
    previous = import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="kept")
    progress, _ = raise_after_first_call()

    with pytest.raises(Interrupted):
        import_model(smollm2_copy, name="kept", force=True, progress=progress)

    assert store_listing(store_home) == ["kept"]
    assert get_model("kept") == previous
    assert sha256_of(previous.path) == previous.manifest.sha256


@pytest.mark.parametrize("name", [BUNDLED_MODEL_NAME, BUNDLED_MODEL_NAME.upper()])
def test_importing_under_the_bundled_models_name_is_refused(tmp_path, store_home, name):
    with pytest.raises(StoreError, match="bundled"):
        import_model(tiny_gguf(tmp_path / "tiny.gguf"), name=name)
    with pytest.raises(StoreError, match="bundled"):
        import_model(tiny_gguf(tmp_path / f"{BUNDLED_MODEL_NAME}.gguf"))  # the default name
    assert store_listing(store_home) == []
    assert get_model(BUNDLED_MODEL_NAME).bundled


def test_importing_a_missing_path_says_it_does_not_exist(tmp_path, store_home):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        import_model(tmp_path / "nowhere.gguf")
    assert store_listing(store_home) == []


# --- importing a Hugging Face checkpoint folder ---------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    """A .safetensors file by hand: u64 header length, JSON header, then the F32 data (zeros)."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


HF_CONFIG = {"model_type": "llama", "torch_dtype": "bfloat16", "max_position_embeddings": 2048,
             "hidden_size": 64, "num_hidden_layers": 2}
CHATML_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def hf_folder(folder: Path, *, config: bool = True, weights: str = "safetensors") -> Path:
    folder.mkdir(parents=True)
    if config:
        (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    if weights == "safetensors":
        write_safetensors(folder / "model.safetensors", {"embed.weight": (8, 4), "norm.weight": (4,)})
    else:
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x02pickled weights")
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML_TEMPLATE}))
    (folder / "README.md").write_text("# a model card the store has no use for\n")
    return folder


def test_hf_folder_import_copies_config_weights_and_tokenizer_into_checkpoint(tmp_path, store_home):
    source = hf_folder(tmp_path / "Tiny-Llama")
    (source / "pytorch_model.bin").write_bytes(b"pickled weights are left behind")

    model = import_model(source)

    assert model.name == "tiny-llama"
    manifest = model.manifest
    assert (manifest.format, manifest.artifact, manifest.chat_format) == ("hf", "checkpoint", "template")
    assert (manifest.architecture, manifest.quant, manifest.context_length) == ("llama", "bfloat16", 2048)
    assert model.path == store_home / "tiny-llama" / "checkpoint"
    kept = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(os.listdir(model.path)) == kept
    for name in kept:
        assert filecmp.cmp(model.path / name, source / name, shallow=False)
    assert manifest.size == sum((source / name).stat().st_size for name in kept)
    assert get_model("tiny-llama") == model


def test_hf_folder_with_only_pickled_weights_is_refused_naming_safetensors(tmp_path, store_home):
    with pytest.raises(InvalidModelFileError, match="safetensors"):
        import_model(hf_folder(tmp_path / "pickled", weights="bin"))
    assert store_listing(store_home) == []


def test_folder_without_config_json_is_refused(tmp_path, store_home):
    with pytest.raises(InvalidModelFileError, match="config.json"):
        import_model(hf_folder(tmp_path / "no-config", config=False))
    assert store_listing(store_home) == []


# --- removing -----------------------------------------------------------------------------------


def test_remove_model_deletes_its_folder_and_forgets_it(tmp_path, store_home):
    import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="doomed")
    import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="kept")

    assert remove_model("doomed") == store_home / "doomed"

    assert store_listing(store_home) == ["kept"]
    assert [m.name for m in list_models()] == [BUNDLED_MODEL_NAME, "kept"]
    with pytest.raises(ModelNotFoundError):
        get_model("doomed")
    assert (tmp_path / "tiny.gguf").is_file()  # the import source is untouched


def test_removing_a_linked_model_leaves_the_linked_file_in_place(tmp_path):
    source = tiny_gguf(tmp_path / "elsewhere" / "tiny.gguf")
    import_model(source, name="linked", link=True)
    remove_model("linked")
    assert source.is_file()


def test_removing_the_bundled_model_is_refused_and_its_file_stays(bundled_gguf):
    with pytest.raises(StoreError, match="uninstall"):
        remove_model(BUNDLED_MODEL_NAME)
    assert bundled_gguf.is_file()


def test_removing_an_unknown_model_raises_model_not_found():
    with pytest.raises(ModelNotFoundError):
        remove_model("never-imported")


# --- looking models up --------------------------------------------------------------------------


def test_missing_catalog_model_error_says_how_to_pull_or_import_it():
    with pytest.raises(ModelNotFoundError) as caught:
        get_model("bayling-3-8b")
    message = str(caught.value)
    assert "bayling-local models pull bayling-3-8b" in message
    assert "models import" in message
    assert "\n" not in message


def test_missing_unknown_model_error_lists_what_is_installed(tmp_path):
    import_model(tiny_gguf(tmp_path / "tiny.gguf"), name="tiny")
    with pytest.raises(ModelNotFoundError, match=f"installed: {BUNDLED_MODEL_NAME}, tiny"):
        get_model("no-such-model")


@pytest.mark.parametrize(
    "manifest_text",
    ["{not json", "", "[]", "null", '{"name": "broken"}', b"\xff\xfe\x00binary"],
    ids=["bad-json", "empty", "list", "null", "missing-fields", "not-utf8"],
)
def test_corrupt_manifest_raises_store_error_naming_the_fix(store_home, manifest_text):
    entry = store_home / "broken"
    entry.mkdir(parents=True)
    data = manifest_text if isinstance(manifest_text, bytes) else manifest_text.encode()
    (entry / MANIFEST_NAME).write_bytes(data)

    with pytest.raises(StoreError, match="manifest .* unreadable.*import again"):
        get_model("broken")


def test_list_models_shows_the_bundled_model_first_then_entries_by_name(tmp_path, store_home):
    for name in ("zeta", "aaa", "mid"):
        import_model(tiny_gguf(tmp_path / "tiny.gguf"), name=name)
    # A staging folder of an import in progress (hidden) is not an entry, even with a manifest.
    (store_home / ".aaa.tmp123").mkdir()
    (store_home / ".aaa.tmp123" / MANIFEST_NAME).write_text("{}")

    models = list_models()

    assert [m.name for m in models] == [BUNDLED_MODEL_NAME, "aaa", "mid", "zeta"]
    assert models[0].bundled and not any(m.bundled for m in models[1:])
    assert models[0].manifest.quant == "Q4_1"


def test_empty_store_lists_only_the_bundled_model(store_home):
    assert [(m.name, m.bundled) for m in list_models()] == [(BUNDLED_MODEL_NAME, True)]
    assert not store_home.exists()  # listing creates nothing


# --- pulling (no network in tests) --------------------------------------------------------------


def closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again once the socket is


@pytest.fixture
def connect_attempts(monkeypatch) -> list[tuple[object, float | None]]:
    """Every socket connect this test makes: (address, the socket's timeout). Pulls are judged by what
    they try on the network, not by how long a machine took."""
    attempts = []
    real_connect = socket.socket.connect

    def recording_connect(sock, address):
        attempts.append((address, sock.gettimeout()))
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    return attempts


def test_pull_with_hf_hub_offline_raises_offline_error_at_once_saying_how_to_import(
    monkeypatch, store_home, connect_attempts
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as caught:
        pull_model("bayling-3-8b")
    assert connect_attempts == []  # not even a probe
    message = str(caught.value)
    assert "\n" not in message
    assert "bayling-local models import" in message and "HF_HUB_OFFLINE" in message
    assert store_listing(store_home) == []  # no half-made download folder


def test_pull_with_unreachable_hub_gives_up_after_one_bounded_probe(monkeypatch, store_home, connect_attempts):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    port = closed_local_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(OfflineError, match="bayling-local models import"):
        pull_model("bayling-3-8b")
    # One probe with a short timeout, no retry loop and no hub client behind it.
    assert [address for address, _ in connect_attempts] == [("127.0.0.1", port)]
    assert all(timeout is not None and timeout <= 5 for _, timeout in connect_attempts), connect_attempts
    assert store_listing(store_home) == []


def test_pull_on_this_offline_machine_raises_offline_error_after_bounded_probes(monkeypatch, connect_attempts):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    from bayling_local.store import _hub_reachable

    if _hub_reachable(timeout=2.0):
        pytest.skip("the hub is reachable here; this test must not start a 16 GB download")
    connect_attempts.clear()
    with pytest.raises(OfflineError):
        pull_model("bayling-3-8b")
    # At most one attempt per address the name resolves to, each with a timeout.
    assert len(connect_attempts) <= 4, connect_attempts
    assert all(timeout is not None and timeout <= 5 for _, timeout in connect_attempts), connect_attempts


@pytest.mark.parametrize("name", ["nonexistent", BUNDLED_MODEL_NAME])
def test_pull_of_a_model_the_catalog_cannot_download_raises_model_not_found(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="bayling-3-8b"):
        pull_model(name)


def test_pull_of_a_model_already_in_the_store_needs_force(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import_model(hf_folder(tmp_path / "bayling"), name="bayling-3-8b")
    with pytest.raises(StoreError, match="--force"):
        pull_model("bayling-3-8b")
    with pytest.raises(OfflineError):
        pull_model("bayling-3-8b", force=True)
    assert get_model("bayling-3-8b").manifest.format == "hf"  # the failed pull kept the entry
