"""The GGUF header reader describes real and hand-written files and refuses cut, foreign or unknown ones."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bayling_local.errors import InvalidModelFileError
from bayling_local.gguf_header import ArraySummary, read_gguf_header

# --- a GGUF writer of our own, from the spec (not from the reader's tables) -----------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_PACK = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
         U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_Q4_1 = 0, 3


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(type_id: int, value) -> bytes:
    if type_id == STRING:
        return _string(value)
    if type_id == ARRAY:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(_value(item_type, v) for v in items)
    return struct.pack(_PACK[type_id], value)


def gguf_bytes(metadata=(), tensors=(), *, version: int = 3, alignment: int = 32) -> bytes:
    """A whole GGUF: `metadata` is (key, type, value) rows, `tensors` (name, shape, ggml type, data)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, type_id, value in metadata:
        out += _string(key) + struct.pack("<I", type_id) + _value(type_id, value)
    offset = 0
    for name, shape, ggml_type, data in tensors:
        out += _string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, offset)
        offset += -(-len(data) // alignment) * alignment
    for _, _, _, data in tensors:
        out += bytes(-len(out) % alignment) + data
    # Like llama.cpp's writer: the data section starts aligned even with no tensors, and every
    # tensor's data (the last one too) is padded to the alignment.
    return bytes(out + bytes(-len(out) % alignment))


ROUND_TRIP_METADATA = [
    ("general.architecture", STRING, "llama"),
    ("general.name", STRING, "百灵 BayLing ✓"),
    ("general.file_type", U32, 3),
    ("llama.context_length", U32, 4096),
    ("llama.rope.freq_base", F32, 10000.0),
    ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("tokenizer.ggml.add_bos_token", BOOL, True),
    ("tokenizer.ggml.add_eos_token", BOOL, False),
    ("tokenizer.ggml.bos_token_id", I32, -7),
    ("test.u8", U8, 255),
    ("test.u64", U64, 2**63 + 5),
    ("test.f64", F64, 0.1),
    ("test.int_array", ARRAY, (I32, [1, -2, 3, 2**31 - 1])),
    ("test.string_array", ARRAY, (STRING, ["en", "zh", "ja"])),
    ("tokenizer.chat_template", STRING, "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"),
]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the real bundled model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_header(bundled_gguf):
    return read_gguf_header(bundled_gguf)


@pytest.fixture(scope="module")
def bundled_cut_in_half(bundled_gguf, tmp_path_factory) -> Path:
    """The bundled GGUF's first half: every header byte present, half the tensor data gone."""
    path = tmp_path_factory.mktemp("cut") / "half.gguf"
    with bundled_gguf.open("rb") as source, path.open("wb") as target:
        target.write(source.read(bundled_gguf.stat().st_size // 2))
    return path


def test_bundled_smollm2_header_describes_a_llama_q4_1_model_with_8k_context(bundled_header):
    assert bundled_header.version == 3
    assert bundled_header.architecture == "llama"
    assert bundled_header.quant == "Q4_1"
    assert bundled_header.context_length == 8192
    assert "<|im_start|>" in bundled_header.chat_template
    assert len(bundled_header.tensors) == 272


def test_bundled_smollm2_expected_size_equals_its_file_size(bundled_gguf, bundled_header):
    assert bundled_header.expected_size() == bundled_gguf.stat().st_size == bundled_header.file_size


def test_bundled_smollm2_vocabulary_arrays_are_counted_not_decoded(bundled_header):
    tokens = bundled_header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArraySummary) and len(tokens) == 49152
    # Keys after the skipped arrays still parse: the skip lands on the next key exactly.
    assert bundled_header.metadata["tokenizer.ggml.eos_token_id"] == 2


def test_bundled_copy_cut_in_half_is_refused_as_truncated_in_one_line(bundled_cut_in_half):
    with pytest.raises(InvalidModelFileError, match="truncated") as caught:
        read_gguf_header(bundled_cut_in_half)
    assert "\n" not in str(caught.value)
    assert str(bundled_cut_in_half) in str(caught.value)


@pytest.mark.parametrize("cut", [30, 1000, 1_000_000, 1_785_000], ids=lambda n: f"first-{n}-bytes")
def test_bundled_copy_cut_inside_its_header_is_refused_as_truncated(bundled_gguf, tmp_path, cut):
    # 1_000_000 falls inside the skipped vocabulary arrays, 1_785_000 inside the tensor table.
    with bundled_gguf.open("rb") as source:
        path = write(tmp_path / "cut.gguf", source.read(cut))
    with pytest.raises(InvalidModelFileError, match="truncated") as caught:
        read_gguf_header(path)
    assert "\n" not in str(caught.value)


# --- files that are not a GGUF ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"a plain text file that is long enough to pass the size check\n",
        b"PK\x03\x04" + bytes(60),  # zip (also a .safetensors-less HF archive)
        b"\x89PNG\r\n\x1a\n" + bytes(60),
        b"FUGG" + struct.pack("<IQQ", 3, 0, 0),  # the magic byte-swapped
    ],
    ids=["text", "zip", "png", "swapped-magic"],
)
def test_foreign_file_is_refused_as_not_a_gguf_file(tmp_path, content):
    with pytest.raises(InvalidModelFileError, match="not a GGUF file"):
        read_gguf_header(write(tmp_path / "model.gguf", content))


@pytest.mark.parametrize("content", [b"", b"GGUF"], ids=["empty", "magic-only"])
def test_empty_or_magic_only_file_is_refused(tmp_path, content):
    with pytest.raises(InvalidModelFileError):
        read_gguf_header(write(tmp_path / "model.gguf", content))


def test_directory_or_missing_path_is_refused(tmp_path):
    with pytest.raises(InvalidModelFileError, match="not a file"):
        read_gguf_header(tmp_path)
    with pytest.raises(InvalidModelFileError, match="not a file"):
        read_gguf_header(tmp_path / "missing.gguf")


@pytest.mark.parametrize("version", [0, 1, 4, 0x03000000])
def test_unsupported_gguf_version_is_refused_naming_the_version(tmp_path, version):
    data = bytearray(gguf_bytes(ROUND_TRIP_METADATA))
    data[4:8] = struct.pack("<I", version)
    with pytest.raises(InvalidModelFileError, match=f"version {version};"):
        read_gguf_header(write(tmp_path / "model.gguf", bytes(data)))


def test_gguf_version_2_is_read(tmp_path):
    header = read_gguf_header(write(tmp_path / "v2.gguf", gguf_bytes(ROUND_TRIP_METADATA, version=2)))
    assert header.version == 2 and header.architecture == "llama"


def test_unknown_metadata_value_type_is_refused_as_corrupt(tmp_path):
    data = gguf_bytes([("general.architecture", STRING, "llama")])
    # Rewrite the single key's value type (the u32 right after the key string) to 13, which no spec defines.
    type_at = 24 + 8 + len("general.architecture")
    data = data[:type_at] + struct.pack("<I", 13) + data[type_at + 4:]
    with pytest.raises(InvalidModelFileError, match="unknown GGUF value type 13"):
        read_gguf_header(write(tmp_path / "model.gguf", data))


# --- files we wrote ourselves -------------------------------------------------------------------


def test_hand_written_gguf_metadata_reads_back_to_the_values_written(tmp_path):
    header = read_gguf_header(write(tmp_path / "tiny.gguf", gguf_bytes(ROUND_TRIP_METADATA)))
    expected = {key: (list(value[1]) if type_id == ARRAY else value) for key, type_id, value in ROUND_TRIP_METADATA}
    # float32 values come back as the float32 nearest to what was written.
    expected["llama.attention.layer_norm_rms_epsilon"] = struct.unpack("<f", struct.pack("<f", 1e-5))[0]
    assert header.metadata == expected
    assert header.version == 3 and header.tensors == ()
    assert (header.architecture, header.quant, header.context_length) == ("llama", "Q4_1", 4096)
    assert header.chat_template.startswith("{% for m in messages %}<|im_start|>")


def test_hand_written_gguf_tensor_table_gives_shapes_offsets_and_expected_size(tmp_path):
    q4_1_blocks = bytes(range(40))  # 64 Q4_1 weights = 2 blocks of 20 bytes
    tensors = [
        ("token_embd.weight", (4, 2), GGML_F32, struct.pack("<8f", *range(8))),
        ("blk.0.attn_q.weight", (32, 2), GGML_Q4_1, q4_1_blocks),
    ]
    path = write(tmp_path / "tiny.gguf", gguf_bytes(ROUND_TRIP_METADATA, tensors))
    header = read_gguf_header(path)
    assert [(t.name, t.shape, t.type_id, t.offset) for t in header.tensors] == [
        ("token_embd.weight", (4, 2), GGML_F32, 0),
        ("blk.0.attn_q.weight", (32, 2), GGML_Q4_1, 32),
    ]
    assert header.data_offset % 32 == 0
    # The data ends after the last tensor's 40 bytes; the file's trailing padding is not required.
    assert header.expected_size() == header.data_offset + 32 + 40 == path.stat().st_size - 24
    # The last weight's bytes sit where the header says they do.
    assert path.read_bytes()[header.data_offset + 32:header.data_offset + 72] == q4_1_blocks


def test_hand_written_gguf_missing_its_last_data_byte_is_truncated(tmp_path):
    tensors = [("token_embd.weight", (4, 2), GGML_F32, struct.pack("<8f", *range(8)))]
    data = gguf_bytes(ROUND_TRIP_METADATA, tensors).rstrip(b"\0")  # f32 7.0 ends in 0x40, not 0
    assert read_gguf_header(write(tmp_path / "whole.gguf", data)).expected_size() == len(data)
    with pytest.raises(InvalidModelFileError, match=r"truncated: .* bytes of the .* its header describes"):
        read_gguf_header(write(tmp_path / "tiny.gguf", data[:-1]))


def test_hand_written_gguf_custom_alignment_moves_the_data_section(tmp_path):
    metadata = [*ROUND_TRIP_METADATA, ("general.alignment", U32, 256)]
    tensors = [("token_embd.weight", (4, 2), GGML_F32, struct.pack("<8f", *range(8)))]
    path = write(tmp_path / "tiny.gguf", gguf_bytes(metadata, tensors, alignment=256))
    header = read_gguf_header(path)
    assert header.data_offset % 256 == 0
    assert header.expected_size() == header.data_offset + 32 == path.stat().st_size - 224


def test_hand_written_long_arrays_are_summarised_and_later_keys_still_read(tmp_path):
    tokens = [f"tok{i}" for i in range(100)]
    metadata = [
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * 65)),
        ("tokenizer.ggml.token_type", ARRAY, (I32, [1] * 64)),
        ("test.u8_array", ARRAY, (U8, [1] * 101)),
        ("test.u64_array", ARRAY, (U64, [2**40] * 70)),
        ("general.architecture", STRING, "qwen2"),
    ]
    header = read_gguf_header(write(tmp_path / "tiny.gguf", gguf_bytes(metadata)))
    assert header.metadata["tokenizer.ggml.tokens"] == ArraySummary(STRING, 100)
    assert header.metadata["tokenizer.ggml.scores"] == ArraySummary(F32, 65)
    assert header.metadata["tokenizer.ggml.token_type"] == [1] * 64  # at the limit: decoded
    assert header.metadata["test.u8_array"] == ArraySummary(U8, 101)
    assert header.metadata["test.u64_array"] == ArraySummary(U64, 70)
    assert header.architecture == "qwen2"
