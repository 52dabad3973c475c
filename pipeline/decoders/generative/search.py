"""Decoding with a trained DecoderNet: greedy and batched beam search with a KV cache, the real-word
constraint, repeat guards and reranking by the teacher's cosine to the target."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from pipeline.decoders.generative.int8 import int8_available
from pipeline.decoders.generative.network import DecoderNet, GenerativeConfig, Layer
from pipeline.decoders.words import RealWords

BEAM_ROWS = 256  # hypotheses one batched beam search holds at most (vectors x beam); larger batches go in chunks


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

    def __init__(self, net: DecoderNet, tokenizer, words: RealWords | None, *, embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.words = words
        if words is not None and words.seen:
            net.restrict_output([*words.seen, tokenizer.sep_token_id])
        for layer in net.layers:
            cast(Layer, layer).fuse()
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
        embedded = self.embed(flat) if flat and self.embed is not None else np.zeros((0, targets.shape[1]), dtype=np.float32)
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
            if word is not None and self.words is not None:
                mask &= self.words.next_mask(list(word), self.sep_id)
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
                next_beams: list[tuple[list[int], float]] = []
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

