"""Write small random-weight llama models as GGUF files, for running a real ``llama-server``.

The model is a plain llama (RMSNorm, RoPE, SwiGLU) with random weights and a SentencePiece-style
vocabulary: ``<unk> <s> </s>``, the 256 byte-fallback tokens ``<0x00>..<0xFF>``, ChatML's
``<|im_start|> <|im_end|>``, printable ASCII characters and a few hundred ``▁word`` pieces. The
chat template is ChatML. The output rows of special, byte and bare-space tokens are zero, so
greedy decoding never picks them: the text is always valid, printable UTF-8 and generation runs
until ``max_tokens`` (no end-of-generation token is ever produced). Greedy output depends only
on the file, so every replica serving the same file answers the same prompt with the same text.

    python -m hanode.devtools.tiny_gguf OUT.gguf            # 2 layers, 64 dims, < 1 MB
    python -m hanode.devtools.tiny_gguf OUT.gguf --layers 24 --dim 1024   # loads slowly

Needs the ``gguf`` and ``numpy`` packages (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 1  # bump when the output changes, so cached files are regenerated

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORD_TEXT = """
the of and to in is it you that he was for on are with as his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end
put home read hand port large spell add even land here must big high such follow act why ask
men change went light kind off need house picture try us again animal point mother world near
build self earth father head stand own page should country found answer school grow study still
learn plant cover food sun four between state keep eye never last let thought city tree cross
farm hard start might story saw far sea draw left late run while press close night real life
few north open seem together next white children begin got walk example ease paper group always
music those both mark often letter until mile river car feet care second book carry took
science eat room friend began idea fish mountain stop once base hear horse cut sure watch color
face wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since
top whole king space heard best hour better true during hundred five remember step early hold
west ground interest reach fast verb sing listen six table travel less morning ten simple
several vowel toward war lay against pattern slow center love person money serve appear road
map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark
machine note wait plan figure star box noun field rest correct able pound done beauty drive
stood contain front teach week final gave green oh quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold
possible plane stead dry wonder laugh thousand ago ran check game shape equate miss brought heat
snow tire bring yes distant fill east paint language among OK Hello Say
"""
_WORDS = _WORD_TEXT.split()

SPACE = "\u2581"  # SentencePiece's word-boundary marker


@dataclass(frozen=True)
class ModelShape:
    layers: int = 2
    dim: int = 64
    heads: int = 4
    kv_heads: int = 4
    ffn: int = 128
    context: int = 4096
    f16: bool = True  # store the layer matrices as F16 (halves them)


def vocabulary() -> tuple[list[str], list[float], list[int], set[int]]:
    """Tokens, scores, token types, and the ids greedy decoding must never produce."""
    from gguf import TokenType

    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TokenType.BYTE)
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [TokenType.CONTROL, TokenType.CONTROL]
    never = set(range(len(tokens)))
    never.add(len(tokens))  # the bare word boundary: it would make blank-looking text
    pieces = [SPACE, *(c for c in string.printable[:94])]
    seen = set(pieces)
    for word in _WORDS:
        if SPACE + word not in seen:
            seen.add(SPACE + word)
            pieces.append(SPACE + word)
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    # SentencePiece merges the highest-scoring pair first: prefer longer pieces.
    scores = [0.0] * (len(tokens) - len(pieces)) + [
        float(len(p)) - i * 1e-4 for i, p in enumerate(pieces)
    ]
    return tokens, scores, [int(t) for t in types], never


def write_model(path: str | Path, shape: ModelShape = ModelShape(), seed: int = 1234) -> Path:
    """Write a random llama GGUF to ``path`` atomically; returns the path."""
    import numpy as np
    from gguf import GGUFWriter, LlamaFileType

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types, never = vocabulary()
    rng = np.random.default_rng(seed)
    d, hd = shape.dim, shape.dim // shape.heads
    kv = hd * shape.kv_heads
    big = np.float16 if shape.f16 else np.float32

    def mat(rows: int, cols: int, dtype: Any = big) -> Any:
        # Scaled so activations keep unit size through the layers.
        out = rng.standard_normal((rows, cols), dtype=np.float32)
        out *= 1.0 / np.sqrt(cols)
        return out.astype(dtype, copy=False)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = GGUFWriter(str(tmp), "llama")
    writer.add_name(f"hanode-random-llama-{shape.layers}x{shape.dim}")
    writer.add_file_type(LlamaFileType.MOSTLY_F16 if shape.f16 else LlamaFileType.ALL_F32)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(d)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(hd)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    def add(name: str, array: Any) -> None:
        # llama.cpp's CPU backend has no F64 matmul: an F64 tensor crashes llama-server.
        if array.dtype not in (np.float32, np.float16):
            raise TypeError(f"{name}: {array.dtype} is not float32/float16")
        writer.add_tensor(name, array)

    ones = np.ones(d, dtype=np.float32)
    add("token_embd.weight", rng.standard_normal((len(tokens), d), np.float32))
    output = mat(len(tokens), d, np.float32)
    output *= np.float32(np.sqrt(d))  # logits of order one
    output[sorted(never)] = 0.0
    add("output_norm.weight", ones)
    add("output.weight", output)
    for i in range(shape.layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", ones)
        add(p + "attn_q.weight", mat(d, d))
        add(p + "attn_k.weight", mat(kv, d))
        add(p + "attn_v.weight", mat(kv, d))
        add(p + "attn_output.weight", mat(d, d))
        add(p + "ffn_norm.weight", ones)
        add(p + "ffn_gate.weight", mat(shape.ffn, d))
        add(p + "ffn_up.weight", mat(shape.ffn, d))
        add(p + "ffn_down.weight", mat(d, shape.ffn))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def cached_model(cache_dir: str | Path, shape: ModelShape = ModelShape()) -> Path:
    """The model of ``shape`` under ``cache_dir``, written first if it is not there yet."""
    name = (
        f"random-llama-v{GENERATOR_VERSION}-{shape.layers}x{shape.dim}-h{shape.heads}"
        f"-kv{shape.kv_heads}-ff{shape.ffn}-c{shape.context}{'-f16' if shape.f16 else ''}.gguf"
    )
    path = Path(cache_dir) / name
    if not path.is_file():
        write_model(path, shape)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=0, help="default: 2 x dim")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--f32", action="store_true", help="layer matrices as F32, not F16")
    args = ap.parse_args(argv)
    shape = ModelShape(
        layers=args.layers,
        dim=args.dim,
        heads=args.heads,
        kv_heads=args.heads,
        ffn=args.ffn or 2 * args.dim,
        context=args.context,
        f16=not args.f32,
    )
    out = write_model(args.out, shape)
    print(f"{out} {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
