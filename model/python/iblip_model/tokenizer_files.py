"""Reads the tokenizer and processor files of a Hugging Face InstructBLIP
checkpoint into manifest sections, and names the files a package copies."""

import json
import os
import sys

from iblip_model.hf_config import CheckpointError

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _read_json(path, default=None):
    if not os.path.isfile(path):
        if default is not None:
            return default
        raise CheckpointError(f"{path}: not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def _added_tokens(directory):
    added = dict(_read_json(os.path.join(directory, "added_tokens.json"), default={}))
    config = _read_json(os.path.join(directory, "tokenizer_config.json"), default={})
    for token_id, info in (config.get("added_tokens_decoder") or {}).items():
        added.setdefault(info["content"], int(token_id))
    return added


_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


# The tokenizer classes' defaults for special tokens a config leaves unnamed.
_DEFAULT_SPECIAL = {
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "t5": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "bert": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]"},
}


def _special_tokens(directory, added, vocab_id, defaults):
    """Every string Hugging Face's slow tokenizer cuts out of the raw text
    before tokenizing (its added-tokens trie in transformers 4.40): the
    entries of added_tokens_decoder and added_tokens.json, and the named
    special tokens (bos/eos/unk/pad/..., additional_special_tokens) as
    [{"text", "id", "lstrip", "rstrip"}]. `vocab_id(text)` is the id of a
    string in the base vocabulary, or -1."""
    config = _read_json(os.path.join(directory, "tokenizer_config.json"), default={})
    special_map = _read_json(os.path.join(directory, "special_tokens_map.json"), default={})
    tokens = {}

    def add(value, token_id=None):
        text = _token_text(value)
        if not text or text in tokens:
            return
        if token_id is None:
            token_id = added.get(text, vocab_id(text))
        if token_id is None or token_id < 0:
            return
        flags = value if isinstance(value, dict) else {}
        tokens[text] = {"text": text, "id": int(token_id),
                        "lstrip": bool(flags.get("lstrip", False)), "rstrip": bool(flags.get("rstrip", False))}

    for token_id, info in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
        add(info, int(token_id))
    for text, token_id in added.items():
        add(text, token_id)
    for source in (config, special_map):
        for key in _SPECIAL_KEYS:
            add(source.get(key))
        for value in source.get("additional_special_tokens") or []:
            add(value)
    for key, text in defaults.items():
        if key not in config and key not in special_map:
            add(text)
    return list(tokens.values())


def lm_tokenizer(checkpoint_dir, config):
    """(manifest section, {package name: source path})."""
    import sentencepiece  # Debian's python3-sentencepiece

    name = "tokenizer.model" if config.lm_family == "llama" else "spiece.model"
    path = os.path.join(checkpoint_dir, name)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found (the language model's SentencePiece tokenizer)")
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(path)
    except Exception as e:  # sentencepiece raises OSError/RuntimeError
        raise CheckpointError(f"{path}: not a SentencePiece model ({e})") from e
    tok_config = _read_json(os.path.join(checkpoint_dir, "tokenizer_config.json"), default={})
    special = _read_json(os.path.join(checkpoint_dir, "special_tokens_map.json"), default={})
    added = _added_tokens(checkpoint_dir)
    if config.lm_family == "t5" and not any(t.startswith("<extra_id_") for t in added):
        extra = int(tok_config.get("extra_ids", 100))
        pieces = processor.GetPieceSize()
        added.update({f"<extra_id_{i}>": pieces + extra - 1 - i for i in range(extra)})

    def token_id(key):
        text = _token_text(tok_config.get(key) or special.get(key))
        if text is None:
            return -1
        if text in added:
            return added[text]
        piece = processor.PieceToId(text)
        return piece if processor.IdToPiece(piece) == text else -1

    llama = config.lm_family == "llama"
    if tok_config.get("legacy") is False:
        # The server tokenizes like legacy=True (what the fixtures' Vicuna and
        # Flan-T5 layouts say); legacy=False differs only next to special
        # tokens and at leading spaces.
        print(f"warning: {checkpoint_dir}/tokenizer_config.json says legacy false; the server tokenizes "
              "as legacy true (differences only next to special-token strings and leading spaces)",
              file=sys.stderr)

    def piece_id(text):
        piece = processor.PieceToId(text)
        return piece if processor.IdToPiece(piece) == text else -1

    add_bos = bool(tok_config.get("add_bos_token", llama))
    section = {
        "file": "lm_tokenizer.model",
        "kind": "llama" if llama else "t5",
        "bos_token_id": token_id("bos_token") if add_bos else -1,
        "append_eos": bool(tok_config.get("add_eos_token", not llama)),
        "eos_token_id": token_id("eos_token"),
        "pad_token_id": token_id("pad_token"),
        "unk_token_id": token_id("unk_token"),
        "added_tokens": added,
        "special_tokens": _special_tokens(checkpoint_dir, added, piece_id,
                                          _DEFAULT_SPECIAL["llama" if llama else "t5"]),
        "truncation_side": tok_config.get("truncation_side", "left"),
        # Hugging Face's decode: " ." -> "." etc. (T5 configs say true).
        "clean_up_tokenization_spaces": bool(tok_config.get("clean_up_tokenization_spaces", True)),
        "sentencepiece_size": processor.GetPieceSize(),
    }
    return section, {"lm_tokenizer.model": path}


def qformer_tokenizer(checkpoint_dir, config):
    directory = os.path.join(checkpoint_dir, "qformer_tokenizer")
    vocab = os.path.join(directory, "vocab.txt")
    if not os.path.isfile(vocab):
        raise CheckpointError(f"{vocab}: not found (the Q-Former's WordPiece vocabulary)")
    tok_config = _read_json(os.path.join(directory, "tokenizer_config.json"), default={})
    max_length = min(int(tok_config.get("model_max_length", 512)), config.qformer.max_position_embeddings)
    with open(vocab, encoding="utf-8") as f:
        vocab_ids = {line.rstrip("\n").rstrip("\r"): i for i, line in enumerate(f)}
    added = _added_tokens(directory)
    section = {
        "vocab_file": "qformer_vocab.txt",
        "lowercase": bool(tok_config.get("do_lower_case", True)),
        "strip_accents": tok_config.get("strip_accents"),
        "tokenize_chinese_chars": bool(tok_config.get("tokenize_chinese_chars", True)),
        "max_length": max_length,
        "truncation_side": tok_config.get("truncation_side", "left"),
        "added_tokens": added,
        "special_tokens": _special_tokens(directory, added, lambda text: vocab_ids.get(text, -1),
                                          _DEFAULT_SPECIAL["bert"]),
    }
    return section, {"qformer_vocab.txt": vocab}


def image_processor(checkpoint_dir, config):
    raw = _read_json(os.path.join(checkpoint_dir, "preprocessor_config.json"), default={})
    size = raw.get("size", {"height": config.vision.image_size, "width": config.vision.image_size})
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if size.get("height") != size.get("width"):
        raise CheckpointError(f"{checkpoint_dir}/preprocessor_config.json: non-square size {size}")
    if raw.get("resample", 3) != 3:
        raise CheckpointError(f"{checkpoint_dir}/preprocessor_config.json: resample "
                              f"{raw.get('resample')} (only 3, bicubic, is supported)")
    return {
        "size": int(size["height"]),
        "mean": list(raw.get("image_mean", _CLIP_MEAN)),
        "std": list(raw.get("image_std", _CLIP_STD)),
        "rescale_factor": float(raw.get("rescale_factor", 1 / 255)),
        "resample": "bicubic",
        "convert_rgb": bool(raw.get("do_convert_rgb", True)),
    }


def generation_settings(checkpoint_dir, config, lm_section):
    """Stop ids and special ids. Vicuna configs say eos 1 while the tokenizer's
    EOS is </s> (2): both stop a sequence."""
    generation = _read_json(os.path.join(checkpoint_dir, "generation_config.json"), default={})
    eos = []
    for source in (config.text.eos_token_id, generation.get("eos_token_id"), lm_section["eos_token_id"]):
        for value in (source if isinstance(source, list) else [source]):
            if isinstance(value, int) and value >= 0 and value not in eos:
                eos.append(value)
    if not eos:
        raise CheckpointError(f"{checkpoint_dir}: no EOS token id in config, generation config or tokenizer")
    pad = lm_section["pad_token_id"]
    settings = {"eos_token_ids": eos, "pad_token_id": pad}
    if config.lm_family == "t5":
        settings["decoder_start_token_id"] = int(generation.get("decoder_start_token_id",
                                                                config.text.decoder_start_token_id))
    for key in ("max_new_tokens", "min_new_tokens", "num_beams", "temperature", "top_k", "top_p",
                "repetition_penalty", "length_penalty", "do_sample"):
        if key in generation:
            settings.setdefault("defaults", {})[key] = generation[key]
    return settings
