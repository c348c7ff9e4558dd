"""EVA ViT-g vision encoder (InstructBlipVisionModel)."""

import torch
from torch import nn

from iblip_model.modeling.common import Activation


class InstructBlipVisionEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, hidden))
        self.patch_embedding = nn.Conv2d(3, hidden, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Parameter(torch.zeros(1, num_positions, hidden))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1).to(dtype)
        x = torch.cat([cls, patches], dim=1)
        return x + self.position_embedding[:, : x.shape[1], :].to(dtype)


class InstructBlipAttention(nn.Module):
    heads: torch.jit.Final[int]
    head_dim: torch.jit.Final[int]
    scale: torch.jit.Final[float]

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = hidden // self.heads
        self.scale = self.head_dim ** -0.5
        # Checkpoints store qkv.bias = q_bias | 0 | v_bias.
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=config.qkv_bias)
        self.projection = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.projection(context)


class InstructBlipMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.activation_fn = Activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class InstructBlipEncoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = InstructBlipAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = InstructBlipMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class InstructBlipEncoder(nn.Module):
    num_layers: torch.jit.Final[int]

    def __init__(self, config):
        super().__init__()
        self.num_layers = config.num_hidden_layers
        self.layers = nn.ModuleList(
            [InstructBlipEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layers(x, 0, self.num_layers)

    def run_layers(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Layers start .. end-1 (a piece of the pass: the engine interleaves
        pieces of a new image's encoding with decode steps)."""
        for i, layer in enumerate(self.layers):
            if start <= i < end:
                x = layer(x)
        return x


class InstructBlipVisionModel(nn.Module):
    """pixel_values [B,3,S,S] -> image_embeds [B,1+P,H] (after post_layernorm)."""

    def __init__(self, config):
        super().__init__()
        self.embeddings = InstructBlipVisionEmbeddings(config)
        self.encoder = InstructBlipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))
