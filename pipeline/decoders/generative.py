"""GenerativeDecoder: an autoregressive transformer that turns a unit vector into a sentence.

Warm-started from the teacher itself: the teacher's six BERT layers run with a causal
mask (and a KV cache when generating), its word, position and token-type embeddings
are reused frozen, and the output layer is tied to the word embeddings. The vector
enters as `prefix` learned prefix positions in front of `[CLS] tokens… [SEP]`.
A from-scratch configuration (own, smaller embeddings and layers) is kept for comparison.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from pipeline.decoders.words import RealWords
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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GenerativeConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @classmethod
    def check_options(cls, options: dict[str, object]) -> None:
        """Raises ValueError naming any option that is not a field (from_dict would drop it without a word)."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown decoding option(s) {', '.join(unknown)}; known: {', '.join(sorted(cls.__dataclass_fields__))}")

    @classmethod
    def scratch(cls, **overrides: object) -> GenerativeConfig:
        """The from-scratch comparison: d 256, 4 layers, own embeddings."""
        return cls(**{"init": "scratch", "dim": 256, "layers": 4, "heads": 8, "ffn": 1024, **overrides})  # type: ignore[arg-type]


BEAM_ROWS = 256  # hypotheses one batched beam search holds at most (vectors x beam); larger batches go in chunks
SMALL_BATCH = 4  # rows from which a pre-transposed fp32 weight multiplies faster (oneDNN switches kernels: at 5 rows,
# six layers' projections 1.54 -> 1.16 ms and the 20k-piece output 1.33 -> 0.76 ms; below 4 rows F.linear wins)


@functools.cache
def int8_available() -> bool:
    """Whether this torch has a CPU int8 engine (fbgemm on x86) for dynamically quantised linear layers."""
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm"))


class Projection:
    """Inference copy of a linear layer's weights, multiplied the fastest way for the row count: int8
    (per-output-row weights, activations quantised per call by fbgemm) or fp32 in either layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """`weight` and `bias` are kept as given: pass copies, not live parameters, so that training cannot
        change the fp32 layout and leave the int8 one behind."""
        self.weight, self.bias = weight, bias
        self.weight_t: torch.Tensor | None = None  # the pre-transposed fp32 copy, made on first use (int8 decoding never needs it)
        self.packed = pack_int8(self.weight, self.bias) if int8_available() else None  # packed here, not per call: no race between threads

    def __call__(self, x: torch.Tensor, int8: bool = False) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if int8 and self.packed is not None:
            # 8-bit activations (reduce_range=False) with 7-bit weights (pack_int8): without VNNI, fbgemm's AVX2
            # kernel sums pairs of u8 x s8 products in int16, which 255 * 127 * 2 overflows and 255 * 63 * 2 does not.
            return torch.ops.quantized.linear_dynamic(rows, self.packed, reduce_range=False).view(*x.shape[:-1], -1)
        if rows.shape[0] < SMALL_BATCH:
            return F.linear(x, self.weight, self.bias)
        if self.weight_t is None:
            self.weight_t = self.weight.T.contiguous()  # two threads may both make it: the same values, no harm
        return torch.addmm(self.bias, rows, self.weight_t).view(*x.shape[:-1], -1)


INT8_WEIGHT_MAX = 63  # weights in [-63, 63]: see Projection. Activations keep their 8 bits, the coarser half (one
# scale per call, not per row); 7-bit activations with 8-bit weights lost fidelity in a scratch comparison.


def pack_int8(weight: torch.Tensor, bias: torch.Tensor) -> torch.ScriptObject:
    """The weights quantised per output row (scale = the row's largest magnitude / INT8_WEIGHT_MAX), packed for fbgemm."""
    scale = (weight.abs().amax(1) / INT8_WEIGHT_MAX).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantised tensors are deprecated after torch 2.13 (pinned), which has them
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        quantised = torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantised, bias)


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


@dataclass
class Generated:
    """One decoded answer: text, its word pieces, and (when reranked) the candidates considered."""

    text: str
    ids: list[int]
    logprob: float
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (text, cosine to target) when reranked


class GenerativeDecoder:
    """Vector -> sentence with the trained DecoderNet, a tokenizer, and the real-word constraint."""

    path = "generative"

    def __init__(self, net: DecoderNet, tokenizer, words: RealWords | None, *, embed: Callable[[list[str]], np.ndarray] | None = None) -> None:  # noqa: ANN001
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.words = words
        if words is not None and words.seen:
            net.restrict_output([*words.seen, tokenizer.sep_token_id])
        for layer in net.layers:
            layer.fuse()
        self.embed = embed  # the teacher's encode, for reranking
        self.config = net.config
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        vocab = len(tokenizer)
        banned = torch.zeros(vocab, dtype=torch.bool)
        for token_id in tokenizer.all_special_ids:
            banned[token_id] = True
        banned[self.sep_id] = False
        self.banned = banned
        self.column_of = {token: column for column, token in enumerate(net.output_tokens or range(vocab))}
        self.sep_column = self.column_of[self.sep_id]
        self.masks: dict[tuple[int, ...] | None, tuple[torch.Tensor, int]] = {}  # see word_columns

    def with_options(self, **options: object) -> GenerativeDecoder:
        """The same network with other decoding knobs (beam, rerank, constrain, ...)."""
        GenerativeConfig.check_options(options)
        clone = GenerativeDecoder.__new__(GenerativeDecoder)
        clone.__dict__.update(self.__dict__)
        clone.config = GenerativeConfig.from_dict({**self.config.to_dict(), **options})
        return clone

    @property
    def int8(self) -> bool:
        """Whether decoding multiplies in int8: asked for in the config and supported by this torch build."""
        return self.config.int8 and int8_available()

    def text_of(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()

    @torch.inference_mode()
    def decode(self, vectors: np.ndarray) -> list[Generated]:
        """One sentence per (N, D) vector: greedy (batched) or beam search, optionally reranked by the teacher."""
        vectors_t = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32))
        if vectors_t.shape[0] == 0:
            return []
        if self.config.beam <= 1:
            return [Generated(self.text_of(ids), ids, lp) for ids, lp in self.greedy(vectors_t)]
        targets = np.asarray(vectors, dtype=np.float32)
        chunk = max(1, BEAM_ROWS // self.config.beam)  # bounds the KV cache: 1 MB a row for the shipped decoder
        out: list[Generated] = []
        for start in range(0, vectors_t.shape[0], chunk):
            out += self.choose(self.beam_search(vectors_t[start : start + chunk], self.config.beam), targets[start : start + chunk])
        return out

    def choose(self, hyps: list[list[tuple[list[int], float]]], targets: np.ndarray) -> list[Generated]:
        """Per vector, the best beam hypothesis by score, or, with reranking, by teacher cosine to its target
        (the candidates of the whole batch embedded in one call)."""
        texts = [[self.text_of(ids) for ids, _ in row] for row in hyps]
        rerank = self.config.rerank and self.embed is not None
        usable = [[i for i, t in enumerate(row) if t.strip()] if rerank and len(row) > 1 else [] for row in texts]
        flat = [texts[r][i] for r, row in enumerate(usable) for i in row]
        embedded = self.embed(flat) if flat else np.zeros((0, targets.shape[1]), dtype=np.float32)  # type: ignore[misc]
        out, start = [], 0
        for r, row in enumerate(usable):
            if not row:
                ids, score = hyps[r][0]
                out.append(Generated(texts[r][0], ids, score))
                continue
            cos = embedded[start : start + len(row)] @ targets[r]
            start += len(row)
            best = row[int(np.argmax(cos))]
            out.append(Generated(texts[r][best], hyps[r][best][0], hyps[r][best][1], [(texts[r][i], float(c)) for i, c in zip(row, cos)]))
        return out

    def shortest(self, vectors: torch.Tensor) -> list[int]:
        """Per vector, the fewest pieces before the end may come: `min_length` of the predicted length (at least 1)."""
        if self.config.min_length <= 0:
            return [1] * vectors.shape[0]
        return [max(1, int(self.config.min_length * n)) for n in self.net.predicted_length(vectors).tolist()]

    def allowed(self, history: list[int], shortest: int = 1) -> torch.Tensor:
        """Boolean mask over the generated logits' columns (see DecoderNet.logits) of what may come next after
        `history`: the real-word constraint, the length floor and the repetition guards. It may be the cached
        mask itself: read it, do not modify it."""
        word = self.words.current_word(history) if self.config.constrain and self.words is not None else None
        base, count = self.word_columns(word)
        blocked = []
        if len(history) < shortest:
            blocked.append(self.sep_id)  # never an empty answer, nor one far shorter than the vector's sentence
        if self.config.no_repeat_piece and history:
            blocked.append(history[-1])
        n = self.config.no_repeat_ngram
        if n and len(history) >= n - 1:
            tail = tuple(history[len(history) - (n - 1) :]) if n > 1 else ()
            blocked += [history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i : i + n - 1]) == tail]
        columns = [self.column_of[token] for token in blocked if token in self.column_of]
        if not columns:
            return base
        mask = base.clone()
        mask[columns] = False
        if count <= len(columns) and not mask.any():  # only a mask this small can have been emptied
            mask[self.sep_column] = True  # nothing else fits: end here rather than emit an invalid word
        return mask

    def word_columns(self, word: tuple[int, ...] | None) -> tuple[torch.Tensor, int]:
        """The tokens that may follow the word being built (None: no constraint), as a mask over the generated
        columns, and how many; cached per word, as decoding asks for the same few often."""
        cached = self.masks.get(word)
        if cached is None:
            mask = ~self.banned
            if word is not None:
                mask &= self.words.next_mask(list(word), self.sep_id)  # type: ignore[union-attr]
            if self.net.output_ids is not None:
                mask = mask[self.net.output_ids]
            if not mask.any():
                mask[self.sep_column] = True
            if len(self.masks) >= 1024:  # bounds the memory of a long-running worker (20 kB a mask)
                self.masks.clear()
            cached = self.masks[word] = (mask, int(mask.sum()))
        return cached

    def token(self, column: int) -> int:
        return column if self.net.output_tokens is None else self.net.output_tokens[column]

    @torch.inference_mode()
    def greedy(self, vectors: torch.Tensor) -> list[tuple[list[int], float]]:
        """Batched greedy decoding; each row's own output is fed back until [SEP] or the cap."""
        logits, cache = self.net.start(vectors, self.cls_id, self.int8)
        b = vectors.shape[0]
        shortest = self.shortest(vectors)
        histories: list[list[int]] = [[] for _ in range(b)]
        scores = [0.0] * b
        done = [False] * b
        for position in range(self.config.prefix + 1, self.config.prefix + 1 + self.config.max_tokens):
            logp = torch.log_softmax(logits.float(), -1)
            chosen = torch.full((b,), self.sep_id, dtype=torch.long)
            for i in range(b):
                if done[i]:
                    continue
                masked = torch.where(self.allowed(histories[i], shortest[i]), logp[i], -math.inf)
                column = int(masked.argmax())
                token = self.token(column) if bool(torch.isfinite(masked[column])) else self.sep_id
                chosen[i] = token
                scores[i] += float(masked[column])
                if token == self.sep_id:
                    done[i] = True
                else:
                    histories[i].append(token)
            if all(done):
                break
            logits, cache = self.net.step(chosen, position, cache, self.int8)
        return list(zip(histories, scores))

    @torch.inference_mode()
    def beam_search(self, vectors: torch.Tensor, width: int) -> list[list[tuple[list[int], float]]]:
        """Beam search for a batch of vectors stepped together (their live hypotheses are the rows of one
        batch); per vector, the finished hypotheses best first by length-normalised log prob."""
        logits, cache = self.net.start(vectors, self.cls_id, self.int8)
        shortest = self.shortest(vectors)
        n = vectors.shape[0]
        beams: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in range(n)]
        finished: list[list[tuple[list[int], float]]] = [[] for _ in range(n)]
        live = list(range(n))  # vectors still searching; their beams fill the rows in this order
        for position in range(self.config.prefix + 1, self.config.prefix + 1 + self.config.max_tokens):
            logp = torch.log_softmax(logits.float(), -1)  # (rows, generated columns)
            allowed = torch.stack([self.allowed(history, shortest[v]) for v in live for history, _ in beams[v]])
            totals = torch.where(allowed, logp, -math.inf) + torch.tensor([score for v in live for _, score in beams[v]])[:, None]
            top = totals.topk(min(2 * width, totals.shape[1]), dim=1)  # per row, then per vector: faster than one flat top-k
            values, columns = top.values.tolist(), top.indices.tolist()
            rows, tokens, still, first = [], [], [], 0
            for v in live:
                own = range(first, first + len(beams[v]))
                first += len(beams[v])
                best = sorted(((value, row, column) for row in own for value, column in zip(values[row], columns[row])), reverse=True)[: 2 * width]
                next_beams = []
                for score, row, column in best:
                    if score == -math.inf:
                        break
                    token, history = self.token(column), beams[v][row - own.start][0]
                    if token == self.sep_id:
                        finished[v].append((history, score))
                    elif len(next_beams) < width:
                        next_beams.append((history + [token], score))
                        rows.append(row)
                        tokens.append(token)
                    if len(next_beams) == width and len(finished[v]) >= width:
                        break
                if next_beams and len(finished[v]) < width:
                    beams[v] = next_beams
                    still.append(v)
                else:
                    del rows[len(rows) - len(next_beams) :], tokens[len(tokens) - len(next_beams) :]
                    beams[v] = []
            live = still
            if not live:
                break
            if rows != list(range(cache[0][0].shape[0])):  # the cache follows the surviving hypotheses
                cache = reorder(cache, rows, position)
            logits, cache = self.net.step(torch.tensor(tokens), position, cache, self.int8)
        penalty = self.config.length_penalty
        out = []
        for v in range(n):
            done = finished[v] + (beams[v] if len(finished[v]) < width else [])
            out.append(sorted(done, key=lambda h: -h[1] / max(1, len(h[0]) + 1) ** penalty)[:width])
        return out


def reorder(cache: list[tuple[torch.Tensor, torch.Tensor]], rows: list[int], filled: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """New cache buffers whose row j continues row `rows[j]`; only the `filled` positions are copied."""
    index = torch.tensor(rows)
    out = []
    for k, v in cache:
        new_k, new_v = k.new_empty((len(rows), *k.shape[1:])), v.new_empty((len(rows), *v.shape[1:]))
        new_k[:, :, :filled], new_v[:, :, :filled] = k[:, :, :filled].index_select(0, index), v[:, :, :filled].index_select(0, index)
        out.append((new_k, new_v))
    return out


def build_net(config: GenerativeConfig, vocab_size: int, teacher_dir: Path | None) -> DecoderNet:
    """A fresh decoder network: warm-started from the teacher's weights, or randomly initialised."""
    net = DecoderNet(config, vocab_size)
    if config.init == "teacher":
        if teacher_dir is None:
            raise BundleError("a warm-started decoder needs the teacher's model directory")
        load_teacher_weights(net, teacher_dir)
    return net


DECODER_WEIGHTS = "decoder.safetensors"
DECODER_CONFIG = "decoder.json"
WORDS_FILE = "decoder_words.json"


def save_decoder(net: DecoderNet, directory: Path, extra: dict[str, object] | None = None) -> None:
    """Writes the trainable weights as float16 safetensors and the config (+ training record) as JSON."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.trainable_state().items()}
    save_file(state, str(directory / DECODER_WEIGHTS))
    (directory / DECODER_CONFIG).write_text(json.dumps({"config": net.config.to_dict(), **(extra or {})}, indent=2) + "\n", encoding="utf-8")


def load_decoder_net(directory: Path, vocab_size: int, teacher_dir: Path | None) -> tuple[DecoderNet, dict[str, object]]:
    """Rebuilds the network (teacher embeddings for a warm-started one) and loads the saved weights."""
    import json

    directory = Path(directory)
    try:
        record = json.loads((directory / DECODER_CONFIG).read_text(encoding="utf-8"))
        config = GenerativeConfig.from_dict(record["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read the decoder config {directory / DECODER_CONFIG}: {exc!r}") from exc
    net = build_net(config, vocab_size, teacher_dir)
    try:
        state = load_file(str(directory / DECODER_WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for truncated files
        raise BundleError(f"cannot read {directory / DECODER_WEIGHTS}: {exc}") from exc
    expected = set(net.trainable_state())
    if set(state) != expected:
        raise BundleError(f"{directory / DECODER_WEIGHTS} does not fit its config (missing {sorted(expected - set(state))[:3]}, extra {sorted(set(state) - expected)[:3]})")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return net.eval(), record


def has_decoder(bundle_dir: Path) -> bool:
    return (Path(bundle_dir) / DECODER_WEIGHTS).is_file()


def load_generative(bundle_dir: Path, encoder, **options: object) -> tuple[GenerativeDecoder, dict[str, object]]:  # noqa: ANN001 - TeacherEncoder
    """The bundle's trained decoder on the running teacher (its frozen embeddings), with decoding options,
    and the decoder's record (training report, chosen hybrid threshold)."""
    import json

    if not has_decoder(bundle_dir):
        raise BundleError(f"bundle {bundle_dir} has no generative decoder: train one with `cubeqa train-decoder`")
    net, record = load_decoder_net(bundle_dir, len(encoder.tokenizer), encoder.model_dir)
    try:
        words = RealWords.from_json(encoder.tokenizer, json.loads((Path(bundle_dir) / WORDS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read {Path(bundle_dir) / WORDS_FILE}: {exc!r}") from exc
    decoder = GenerativeDecoder(net, encoder.tokenizer, words, embed=lambda texts: encoder.encode(texts).vectors)
    return (decoder.with_options(**options) if options else decoder), record
