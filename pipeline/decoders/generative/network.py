"""GenerativeDecoder: an autoregressive transformer that turns a unit vector into a sentence.

Warm-started from the teacher itself: the teacher's six BERT layers run with a causal
mask (and a KV cache when generating), its word, position and token-type embeddings
are reused frozen, and the output layer is tied to the word embeddings. The vector
enters as `prefix` learned prefix positions in front of `[CLS] tokens… [SEP]`.
A from-scratch configuration (own, smaller embeddings and layers) is kept for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from pipeline.decoders.generative.int8 import Projection
from pipeline.errors import BundleError

FROZEN = ("word.weight", "position.weight", "token_type")


@dataclass(frozen=True)
class GenerativeConfig:
    """Network shape (fixed at training) and decoding knobs (free at inference)."""

    init: Literal["teacher", "scratch"] = "teacher"
    dim: int = 384  # model width; the teacher's is 384
    layers: int = 6
    heads: int = 12
    ffn: int = 1536
    prefix: int = 8  # prefix positions the vector is projected onto
    vector_dim: int = 384  # the conditioning vector's dimension (the teacher's)
    max_tokens: int = 48  # generated word pieces before the cap stops a hypothesis
    dropout: float = 0.1
    # Decoding.
    beam: int = 1  # 1 = greedy (the default, the fastest; README has its times by host); beam 3 + rerank scores higher but slower
    rerank: bool = False  # pick the beam candidate whose teacher embedding is closest to the target
    constrain: bool = True  # only real words (see pipeline/decoders/words.py)
    no_repeat_ngram: int = 3  # no n-gram of word pieces twice in one output (0 = off)
    no_repeat_piece: bool = True  # no word piece twice in a row ("von von", "the the")
    length_penalty: float = 1.0  # beam score = log p / length ** penalty
    min_length: float = 0.8  # no end before this share of the length predicted from the vector (0 = off)
    int8: bool = True  # multiply the layers and the output in int8 where torch has an int8 CPU engine (fbgemm); see Projection

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerativeConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raises ValueError naming any option that is not a field (from_dict would drop it without a word)."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown decoding option(s) {', '.join(unknown)}; known: {', '.join(sorted(cls.__dataclass_fields__))}")

    @classmethod
    def scratch(cls, **overrides: Any) -> GenerativeConfig:
        """The from-scratch comparison: d 256, 4 layers, own embeddings."""
        return cls(**{"init": "scratch", "dim": 256, "layers": 4, "heads": 8, "ffn": 1024, **overrides})


class Layer(nn.Module):
    """A post-LayerNorm BERT layer whose attention can be causal and cached."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ff1, self.ff2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = dropout
        self.fused: dict[str, Projection] | None = None  # inference copies (see fuse)

    def fuse(self) -> None:
        """Inference: q, k and v in one matmul, and every projection in the layout its row count multiplies fastest."""
        with torch.no_grad():
            qkv = Projection(torch.cat([self.q.weight, self.k.weight, self.v.weight]), torch.cat([self.q.bias, self.k.bias, self.v.bias]))
            self.fused = {"qkv": qkv, **{name: Projection(getattr(self, name).weight.clone(), getattr(self, name).bias.clone()) for name in ("o", "ff1", "ff2")}}

    def train(self, mode: bool = True) -> Layer:
        if mode:
            self.fused = None  # training changes the weights; the fused copies would go stale
        return super().train(mode)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool,
        key_padding: torch.Tensor | None = None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        at: int = 0,
        int8: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`cache`: key and value buffers (B, heads, capacity, d) holding positions before `at`; the new
        positions are written into them from `at` on, so generating copies nothing per step. `int8`: the
        fused inference projections multiply in int8 (see Projection)."""
        fused = self.fused if not self.training else None
        if fused is not None:
            q, k, v = (self.split(t) for t in fused["qkv"](x, int8).chunk(3, -1))
        else:
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        if cache is not None:
            end = at + x.shape[1]
            cache[0][:, :, at:end], cache[1][:, :, at:end] = k, v
            k, v = cache[0][:, :, :end], cache[1][:, :, :end]
        mask = None
        if key_padding is not None:  # (B, S) True = real token
            mask = key_padding[:, None, None, :]
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal and cache is None and x.shape[1] > 1)
        att = att.transpose(1, 2).reshape(x.shape)
        if fused is not None:
            x = self.norm1(x + fused["o"](att, int8))
            return self.norm2(x + fused["ff2"](F.gelu(fused["ff1"](x, int8)), int8)), (k, v)
        x = self.norm1(x + F.dropout(self.o(att), p, self.training))
        x = self.norm2(x + F.dropout(self.ff2(F.gelu(self.ff1(x))), p, self.training))
        return x, (k, v)


class DecoderNet(nn.Module):
    """Embeddings, prefix projection, layers and the tied output head."""

    def __init__(self, config: GenerativeConfig, vocab_size: int, max_positions: int = 512) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.word = nn.Embedding(vocab_size, d)
        self.position = nn.Embedding(max_positions, d)
        self.token_type = nn.Parameter(torch.zeros(d))
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.prefix = nn.Linear(config.vector_dim, config.prefix * d)
        self.length = nn.Linear(config.vector_dim, 1)  # log piece count from the vector, fitted in closed form after training
        self.layers = nn.ModuleList(Layer(d, config.heads, config.ffn, config.dropout) for _ in range(config.layers))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        self.output_ids: torch.Tensor | None = None
        self.output_tokens: list[int] | None = None
        if config.init == "scratch":
            nn.init.normal_(self.word.weight, std=0.02)
            nn.init.normal_(self.position.weight, std=0.02)

    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(positions)[None] + self.token_type
        return F.dropout(self.emb_norm(x), self.config.dropout, self.training)

    def predicted_length(self, vectors: torch.Tensor) -> torch.Tensor:
        """Expected word pieces of the sentence behind each vector (B,)."""
        return self.length(vectors)[:, 0].exp()

    def prefix_states(self, vectors: torch.Tensor) -> torch.Tensor:
        p = self.config.prefix
        x = self.prefix(vectors).view(-1, p, self.config.dim) + self.position.weight[:p][None]
        return F.dropout(self.emb_norm(x), self.config.dropout, self.training)

    def logits(self, hidden: torch.Tensor, restricted: bool = False, int8: bool = False) -> torch.Tensor:
        """Next-token logits over the whole vocabulary, or (`restricted`, generation) over `output_ids` only,
        column j for token output_ids[j]: the pieces the training text uses, a third fewer rows in the
        largest matmul (the other pieces are never an answer's pieces anyway). `int8`: the restricted output
        multiplies in int8 (inference only; see Projection)."""
        if not restricted or self.output_ids is None:
            return self.head(hidden) @ self.word.weight.T + self.head_bias
        return self.output(self.head(hidden), int8 and not self.training)

    def restrict_output(self, ids: list[int] | None) -> None:
        """Limits inference logits to these token ids (None: the whole vocabulary)."""
        if not ids:
            self.output_ids = self.output_tokens = None
            return
        self.output_tokens = sorted(ids)  # the same as a list, for per-token lookups while decoding
        self.output_ids = torch.tensor(self.output_tokens)
        self.output = Projection(self.word.weight.detach()[self.output_ids].contiguous(), self.head_bias.detach()[self.output_ids].contiguous())

    def hidden(self, vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: final states (B, T-1, D) that predict ids[:, 1:] from the vector and ids[:, :-1]."""
        x = torch.cat([self.prefix_states(vectors), self.embed(ids[:, :-1], self.config.prefix)], 1)
        for layer in self.layers:
            x, _ = layer(x, causal=True)
        return x[:, self.config.prefix :]

    def forward(self, vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T-1, V) over the whole vocabulary."""
        return self.logits(self.hidden(vectors, ids))

    def subset_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits over only these token ids (training: the pieces the text uses, as generation is limited to them)."""
        return self.head(hidden) @ self.word.weight[ids].T + self.head_bias[ids]

    def start(self, vectors: torch.Tensor, cls_id: int, int8: bool = False) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Runs prefix + [CLS]; returns next-token logits (B, V) and the KV cache: per layer, key and value
        buffers with room for every position up to the length cap."""
        cls = torch.full((vectors.shape[0], 1), cls_id, dtype=torch.long, device=vectors.device)
        x = torch.cat([self.prefix_states(vectors), self.embed(cls, self.config.prefix)], 1)
        capacity = self.config.prefix + 1 + self.config.max_tokens
        cache = []
        for layer in self.layers:
            x, (k, v) = layer(x, causal=True, int8=int8)
            b, h, t, d = k.shape
            buffers = (k.new_empty((b, h, capacity, d)), v.new_empty((b, h, capacity, d)))
            buffers[0][:, :, :t], buffers[1][:, :, :t] = k, v
            cache.append(buffers)
        return self.logits(x[:, -1], restricted=True, int8=int8), cache

    def step(self, ids: torch.Tensor, position: int, cache: list[tuple[torch.Tensor, torch.Tensor]], int8: bool = False) -> tuple[torch.Tensor, list]:
        """One generated token per row (B,) at `position`: its own output fed back through the cache (filled in place)."""
        x = self.embed(ids[:, None], position)
        for layer, kv in zip(self.layers, cache):
            x, _ = layer(x, causal=True, cache=kv, at=position, int8=int8)
        return self.logits(x[:, -1], restricted=True, int8=int8), cache

    def encode_bidirectional(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The teacher's own forward pass (no causal mask, no prefix), mean-pooled and normalised:
        with warm-started, untrained weights it reproduces the teacher's sentence embedding."""
        x = self.embed(ids, 0)
        for layer in self.layers:
            x, _ = layer(x, causal=False, key_padding=attention.bool())
        mask = attention[..., None].to(x.dtype)
        return F.normalize((x * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Weights to save: everything except the frozen teacher embeddings (warm start) or all (scratch)."""
        state = self.state_dict()
        if self.config.init == "teacher":
            state = {k: v for k, v in state.items() if k not in FROZEN}
        return state


def load_teacher_weights(net: DecoderNet, model_dir: Path) -> None:
    """Copies the teacher's embeddings and layers (from its safetensors file) into the decoder; freezes the embeddings."""
    source = load_file(str(Path(model_dir) / "model.safetensors"))
    source = {k.removeprefix("bert."): v for k, v in source.items()}
    mapping = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value", "o": "attention.output.dense",
             "norm1": "attention.output.LayerNorm", "ff1": "intermediate.dense", "ff2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(net.config.layers):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                mapping[f"layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    state = {ours: source[theirs] for ours, theirs in mapping.items()}
    state["token_type"] = source["embeddings.token_type_embeddings.weight"][0]
    missing = set(state) ^ {k for k in net.state_dict() if k in state}
    if missing:
        raise BundleError(f"teacher weights do not fit the decoder: {sorted(missing)[:5]}")
    net.load_state_dict(state, strict=False)
    for name in ("word", "position"):
        getattr(net, name).weight.requires_grad_(False)
    net.token_type.requires_grad_(False)


def build_net(config: GenerativeConfig, vocab_size: int, teacher_dir: Path | None) -> DecoderNet:
    """A fresh decoder network: warm-started from the teacher's weights, or randomly initialised."""
    net = DecoderNet(config, vocab_size)
    if config.init == "teacher":
        if teacher_dir is None:
            raise BundleError("a warm-started decoder needs the teacher's model directory")
        load_teacher_weights(net, teacher_dir)
    return net

