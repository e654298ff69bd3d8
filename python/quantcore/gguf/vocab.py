"""Tokenizer metadata for GGUF from a Hugging Face tokenizer directory
(``tokenizer.json``, ``tokenizer_config.json``, ``config.json``), the keys
llama.cpp reads: ``tokenizer.ggml.*`` and ``tokenizer.chat_template``.

Two tokenizer families are covered. Byte-level BPE (GPT-2 style: Llama 3,
SmolLM, Qwen) is written as ``gpt2`` with its merges and the pre-tokenizer name
llama.cpp recognises by hashing the token ids of a fixed probe text. BPE with
byte fallback (SentencePiece-style: Gemma, Llama 2, Mistral) is written as
``llama``; its scores rank each token by the merge that makes it, which gives
llama.cpp's SentencePiece tokenizer the same merge order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .container import ValueType

__all__ = ["TokenType", "vocab_metadata", "PRE_TOKENIZER_HASHES", "PROBE_TEXT"]


class TokenType:
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# The probe text llama.cpp's converter encodes to identify a BPE pre-tokenizer
# (convert_hf_to_gguf.py, get_vocab_base_pre): whitespace runs, emoji, digit
# runs, several scripts, quote runs and English contractions.
PROBE_TEXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f '
              '(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 '
              '3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785'
              '\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e '
              '\u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 \'\'\'\'\'\'```````""""......!!!!!!?????? '
              'I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')

# sha256 of str(ids of PROBE_TEXT) -> llama.cpp's pre-tokenizer name (the families quantcore supports).
PRE_TOKENIZER_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}

_LOOKS_SPECIAL = re.compile(r"^(<\|.*\|>|<｜.*｜>|<unused\d*>|<pad>|<mask>|<2mass>|\[@BOS@\])$")
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-F]{2}>$")


@dataclass
class Metadata:
    """(key, value, type, item type) entries in writing order."""

    entries: List[Tuple[str, Any, ValueType, Optional[ValueType]]] = field(default_factory=list)

    def add(self, key: str, value: Any, vtype: ValueType, item: Optional[ValueType] = None) -> None:
        self.entries.append((key, value, vtype, item))


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it as JSON: {e}") from None


def _token_text(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def vocab_metadata(model_dir: Path, vocab_size: Optional[int] = None) -> Metadata:
    """The tokenizer keys for the tokenizer in ``model_dir``; ValueError when it
    is missing or of a kind llama.cpp could not be told about exactly."""
    model_dir = Path(model_dir)
    tok_json = model_dir / "tokenizer.json"
    if not tok_json.is_file():
        raise ValueError(f"{model_dir} has no tokenizer.json: GGUF files carry the tokenizer, so export needs one "
                         "(save the tokenizer with save_pretrained)")
    tj = _read_json(tok_json)
    tc = _read_json(model_dir / "tokenizer_config.json")
    cfg = _read_json(model_dir / "config.json")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{tok_json}: tokenizer model {model.get('type')!r} is not supported for GGUF export "
                         "(BPE tokenizers are: byte-level like Llama 3/Qwen/SmolLM, or with byte fallback like Gemma)")
    n_vocab = int(vocab_size or cfg.get("vocab_size") or 0)
    by_id: Dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    added = {int(a["id"]): a for a in tj.get("added_tokens") or []}
    for i, a in added.items():
        by_id[i] = a["content"]
    n_vocab = max(n_vocab, max(by_id) + 1 if by_id else 0)
    merges = [m if isinstance(m, str) else " ".join(p.replace(" ", "\u0120") for p in m)
              for m in model.get("merges") or []]
    sentencepiece_style = bool(model.get("byte_fallback"))

    tokens: List[str] = []
    types: List[int] = []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        a = added.get(i)
        if a is not None:
            if a.get("special") or _LOOKS_SPECIAL.match(text):
                types.append(TokenType.CONTROL)
            else:
                types.append(TokenType.USER_DEFINED)
                text = text.replace("\u2581", " ")
        elif sentencepiece_style and _BYTE_TOKEN.match(text):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(text)

    md = Metadata()
    if sentencepiece_style:
        md.add("tokenizer.ggml.model", "llama", ValueType.STRING)
        md.add("tokenizer.ggml.pre", "default", ValueType.STRING)
        md.add("tokenizer.ggml.tokens", tokens, ValueType.ARRAY, ValueType.STRING)
        md.add("tokenizer.ggml.scores", _merge_rank_scores(tokens, types, merges), ValueType.ARRAY, ValueType.FLOAT32)
        md.add("tokenizer.ggml.token_type", types, ValueType.ARRAY, ValueType.INT32)
    else:
        if not merges:
            raise ValueError(f"{tok_json} has no merges; a byte-level BPE tokenizer needs them in GGUF")
        md.add("tokenizer.ggml.model", "gpt2", ValueType.STRING)
        md.add("tokenizer.ggml.pre", _pre_tokenizer(tok_json), ValueType.STRING)
        md.add("tokenizer.ggml.tokens", tokens, ValueType.ARRAY, ValueType.STRING)
        md.add("tokenizer.ggml.token_type", types, ValueType.ARRAY, ValueType.INT32)
        md.add("tokenizer.ggml.merges", merges, ValueType.ARRAY, ValueType.STRING)
    _special_ids(md, tj, tc, cfg, added, n_vocab)
    template = tc.get("chat_template")
    if not isinstance(template, str) and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str) and template:
        md.add("tokenizer.chat_template", template, ValueType.STRING)
    return md


def _pre_tokenizer(tok_json: Path) -> str:
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - tokenizers comes with transformers
        raise ImportError("GGUF export of a BPE tokenizer needs the `tokenizers` package") from e
    ids = Tokenizer.from_file(str(tok_json)).encode(PROBE_TEXT).ids
    digest = sha256(str(ids).encode()).hexdigest()
    name = PRE_TOKENIZER_HASHES.get(digest)
    if name is None:
        raise ValueError(f"{tok_json}: this BPE pre-tokenizer (probe hash {digest[:16]}...) is not one llama.cpp "
                         f"knows among {sorted(set(PRE_TOKENIZER_HASHES.values()))}; a GGUF file without the right "
                         "tokenizer.ggml.pre would tokenize differently in llama.cpp")
    return name


def _merge_rank_scores(tokens: List[str], types: List[int], merges: List[str]) -> List[float]:
    """SentencePiece-style scores: the token made by merge r scores -r, so
    llama.cpp (which merges the best-scoring pair first) follows the BPE ranks.
    Tokens no merge makes (characters, bytes) score 0; control and user tokens
    -1000, as llama.cpp's converter gives them."""
    rank: Dict[str, int] = {}
    for r, m in enumerate(merges):
        a, _, b = m.partition(" ")
        rank.setdefault(a + b, r)
    out = []
    for text, t in zip(tokens, types):
        if t in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNUSED):
            out.append(-1000.0)
        elif t == TokenType.BYTE:
            out.append(0.0)
        else:
            out.append(-float(rank[text]) if text in rank else 0.0)
    return out


def _special_ids(md: Metadata, tj: Dict[str, Any], tc: Dict[str, Any], cfg: Dict[str, Any],
                 added: Dict[int, Dict[str, Any]], n_vocab: int) -> None:
    by_content = {}
    for i, a in sorted(added.items()):
        by_content.setdefault(a["content"], i)
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
            "sep": "seperator_token_id", "pad": "padding_token_id", "mask": "mask_token_id"}
    for kind, key in keys.items():
        text = _token_text(tc.get(f"{kind}_token"))
        tid = by_content.get(text) if text is not None else None
        if tid is None:
            cid = cfg.get(f"{kind}_token_id")
            tid = cid[0] if isinstance(cid, list) and cid else cid
        if isinstance(tid, int) and 0 <= tid < n_vocab:
            md.add(f"tokenizer.ggml.{key}", tid, ValueType.UINT32)
    add_bos, add_eos = tc.get("add_bos_token"), tc.get("add_eos_token")
    post = tj.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing" and (add_bos is None or add_eos is None):
        single = post.get("single") or []
        first_special = bool(single) and "SpecialToken" in single[0]
        last_special = bool(single) and "SpecialToken" in single[-1] and len(single) > 1
        add_bos = first_special if add_bos is None else add_bos
        add_eos = last_special if add_eos is None else add_eos
    if add_bos is not None:
        md.add("tokenizer.ggml.add_bos_token", bool(add_bos), ValueType.BOOL)
    if add_eos or "add_eos_token" in tc:  # llama.cpp's default is no EOS
        md.add("tokenizer.ggml.add_eos_token", bool(add_eos), ValueType.BOOL)
    space = _adds_space_prefix(tj)
    if space is not None:
        md.add("tokenizer.ggml.add_space_prefix", space, ValueType.BOOL)


def _adds_space_prefix(tj: Dict[str, Any]) -> Optional[bool]:
    """Whether the tokenizer puts a space before the text: a byte-level
    pre-tokenizer's add_prefix_space, or a SentencePiece-style Prepend("▁")."""
    def steps(node):
        if not isinstance(node, dict):
            return []
        return [s for sub in node.get("normalizers") or node.get("pretokenizers") or [] for s in steps(sub)] or [node]
    for node in steps(tj.get("pre_tokenizer")):
        if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
            return bool(node["add_prefix_space"])
    if (tj.get("model") or {}).get("byte_fallback"):
        return any(n.get("type") == "Prepend" for n in steps(tj.get("normalizer")))
    return None
