"""The random llama that the llama.cpp end-to-end tests serve (hanode.devtools.tiny_gguf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader

from hanode.devtools.tiny_gguf import CHATML_TEMPLATE, vocabulary, write_model


def test_tiny_model_is_small_deterministic_and_never_picks_special_tokens(tmp_path: Path) -> None:
    a = write_model(tmp_path / "a.gguf")
    b = write_model(tmp_path / "b.gguf")
    assert a.stat().st_size < 1_000_000
    assert a.read_bytes() == b.read_bytes()  # same file, so same greedy text on every replica

    reader = GGUFReader(str(a))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 3 + 2 * 9
    allowed = {GGMLQuantizationType.F32, GGMLQuantizationType.F16}
    assert {t.tensor_type for t in tensors.values()} <= allowed  # F64 crashes llama-server

    tokens, _, types, never = vocabulary()
    assert len(set(tokens)) == len(tokens)
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3] == "<0x00>"
    assert {"<|im_start|>", "<|im_end|>"} <= set(tokens)
    output = np.asarray(tensors["output.weight"].data).reshape(len(tokens), -1)
    zero_rows = {i for i in range(len(tokens)) if not output[i].any()}
    assert zero_rows == never
    assert len(types) == len(tokens)

    template = reader.fields["tokenizer.chat_template"]
    assert bytes(template.parts[template.data[0]]).decode() == CHATML_TEMPLATE
