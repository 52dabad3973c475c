"""Real words for the generative decoder: a prefix trie over word pieces.

A word is a word-start piece followed by any `##` continuation pieces. It is real when it
is a whole word of the teacher's vocabulary (one start piece), a multi-piece word seen in
the training text, or a number. Decoding under this constraint cannot emit word-piece soup
such as "reg ##pl ##gen ##lor ##gal"; `real_word_share` measures any output by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class RealWords:
    """The trie of multi-piece real words plus the per-token classes the constraint needs."""

    def __init__(self, tokenizer, texts: Iterable[str] = (), words: Iterable[Sequence[int]] = (), seen: Iterable[int] = ()) -> None:
        """From training texts (tokenised here) and/or already tokenised multi-piece words."""
        vocab = tokenizer.get_vocab()
        size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        self.size = size
        self.is_continuation = torch.zeros(size, dtype=torch.bool)
        self.is_start = torch.zeros(size, dtype=torch.bool)
        self.is_digits = torch.zeros(size, dtype=torch.bool)
        for token, index in vocab.items():
            if index in special or token.startswith("[unused"):
                continue
            body = token[2:] if token.startswith("##") else token
            if token.startswith("##") and len(token) > 2:
                self.is_continuation[index] = True
            elif not token.startswith("##"):
                self.is_start[index] = True
            self.is_digits[index] = body.isdigit()
        self.children: dict[tuple[int, ...], set[int]] = {}
        self.words: set[tuple[int, ...]] = set()
        texts = list(texts)
        sequences = self.token_ids(tokenizer, texts) if texts else []
        self.seen: set[int] = {token for seq in sequences for token in seq} | set(seen)  # pieces the training text uses
        for word in [*self.split_words(sequences), *(tuple(w) for w in words)]:
            if len(word) > 1:
                self.words.add(word)
                for cut in range(1, len(word)):
                    self.children.setdefault(word[:cut], set()).add(word[cut])

    def to_json(self) -> dict[str, list]:
        return {"words": sorted(map(list, self.words)), "seen": sorted(self.seen)}

    @classmethod
    def from_json(cls, tokenizer, data: dict[str, list]) -> RealWords:
        """Rebuilds the trie and the seen pieces from what a bundle stores."""
        return cls(tokenizer, words=data["words"], seen=data.get("seen", ()))

    @staticmethod
    def token_ids(tokenizer, texts: list[str], chunk: int = 2048) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(texts), chunk):
            out += tokenizer(texts[start : start + chunk], add_special_tokens=False)["input_ids"]
        return out

    def split_words(self, sequences: Iterable[Sequence[int]]) -> Iterable[tuple[int, ...]]:
        """Words (tuples of piece ids) of each id sequence."""
        for ids in sequences:
            word: list[int] = []
            for token in ids:
                if self.is_continuation[token] and word:
                    word.append(token)
                else:
                    if word:
                        yield tuple(word)
                    word = [token]
            if word:
                yield tuple(word)

    def current_word(self, history: Sequence[int]) -> tuple[int, ...]:
        """The word being built at the end of `history` (empty when nothing is generated yet)."""
        start = len(history)
        while start > 0:
            start -= 1
            if not self.is_continuation[history[start]]:
                break
        return tuple(history[start:])

    def is_real(self, word: tuple[int, ...]) -> bool:
        if len(word) == 1:
            return bool(self.is_start[word[0]])
        return word in self.words or all(bool(self.is_digits[t]) for t in word)

    def next_mask(self, history: Sequence[int], end_id: int) -> torch.Tensor:
        """Tokens that keep the output made of real words: a continuation that stays on a real word's
        path, or (when the current word is complete) any word start or the end token."""
        word = self.current_word(history)
        mask = self.child_mask(word)
        if not word or self.is_real(word):
            mask |= self.is_start
            mask[end_id] = True
        if word and all(bool(self.is_digits[t]) for t in word):
            mask |= self.is_continuation & self.is_digits
        return mask

    def child_mask(self, word: tuple[int, ...]) -> torch.Tensor:
        """A new mask of the pieces that continue `word` along the trie (uncached: the decoder caches whole masks)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        children = self.children.get(word)
        if children:
            mask[list(children)] = True
        return mask

    def real_word_share(self, sequences: Iterable[Sequence[int]]) -> float:
        """Share of words, over all sequences, that are real (1.0 for no words at all)."""
        total = real = 0
        for word in self.split_words(sequences):
            total += 1
            real += self.is_real(word)
        return real / total if total else 1.0
