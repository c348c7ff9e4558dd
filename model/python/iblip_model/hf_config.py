"""Reads a Hugging Face InstructBLIP config.json, applying the Hugging Face
class defaults to absent fields (real checkpoints omit values equal to the
defaults, e.g. the Q-Former's cross_attention_frequency)."""

import dataclasses
import json
import os
from typing import List, Optional


class CheckpointError(Exception):
    """A checkpoint directory that cannot be exported; the message names the
    file and the key."""


@dataclasses.dataclass
class VisionConfig:
    hidden_size: int = 1408
    intermediate_size: int = 6144
    num_hidden_layers: int = 39
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True


@dataclasses.dataclass
class QFormerConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 1408
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"


@dataclasses.dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: Optional[int] = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = None
    architectures: Optional[List[str]] = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads


@dataclasses.dataclass
class T5Config:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: Optional[int] = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    dense_act_fn: Optional[str] = None
    tie_word_embeddings: bool = True
    decoder_start_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 0
    bos_token_id: Optional[int] = None
    architectures: Optional[List[str]] = None

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise CheckpointError(f"text_config.feed_forward_proj: unsupported '{self.feed_forward_proj}'")
        self.is_gated_act = parts[0] == "gated"
        if self.dense_act_fn is None:
            # T5Config's own rule; InstructBLIP checkpoints store "gelu" explicitly.
            self.dense_act_fn = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]


@dataclasses.dataclass
class InstructBlipConfig:
    vision: VisionConfig
    qformer: QFormerConfig
    text: object  # LlamaConfig or T5Config
    lm_family: str  # "llama" or "t5"
    num_query_tokens: int = 32
    image_token_index: Optional[int] = None  # set: image tokens in the prompt
    raw: dict = dataclasses.field(default_factory=dict)


def _build(cls, values, section):
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in (values or {}).items() if k in known}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise CheckpointError(f"config.json: {section}: {e}") from e


def load_config(checkpoint_dir):
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found (not a Hugging Face checkpoint directory)")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if raw.get("model_type") not in ("instructblip", None):
        raise CheckpointError(f"{path}: model_type '{raw.get('model_type')}' is not instructblip")
    text = raw.get("text_config") or {}
    model_type = text.get("model_type", "opt")
    if model_type == "llama":
        text_config, family = _build(LlamaConfig, text, "text_config"), "llama"
    elif model_type == "t5":
        text_config, family = _build(T5Config, text, "text_config"), "t5"
    else:
        raise CheckpointError(f"{path}: text_config.model_type '{model_type}' is not supported "
                              "(supported: llama, t5)")
    vision = _build(VisionConfig, raw.get("vision_config"), "vision_config")
    qformer = _build(QFormerConfig, raw.get("qformer_config"), "qformer_config")
    # The top-level config forces the Q-Former's cross-attention width.
    qformer.encoder_hidden_size = vision.hidden_size
    image_token_index = raw.get("image_token_index", raw.get("image_token_id"))
    return InstructBlipConfig(vision=vision, qformer=qformer, text=text_config, lm_family=family,
                              num_query_tokens=raw.get("num_query_tokens", 32),
                              image_token_index=image_token_index, raw=raw)
