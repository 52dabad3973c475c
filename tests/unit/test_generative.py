"""The generative decoder on tiny networks with the teacher's real tokenizer (no model weights loaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer

from pipeline import DecoderTrainConfig, GenerativeConfig, GenerativeDecoder
from pipeline.decoders.generative import Projection, build_net, int8_available, load_decoder_net, reorder, save_decoder
from pipeline.decoders.generative import search as beam_search_module
from pipeline.decoders.words import RealWords
from pipeline.encoder import default_model_dir
from pipeline.hardware import cpu_has_amx
from pipeline.training.decoder_trainer import OutputVocab, replan, resolve_precision, sequence_loss, train_decoder

TEXTS = [
    "the kenyan highlands are among the most successful agricultural production regions in africa.",
    "nairobi is the capital and largest city of kenya.",
    "the fort was built by the dutch west india company in 1625.",
    "photosynthesis converts light energy into chemical energy.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture(scope="module")
def words(tokenizer) -> RealWords:
    return RealWords(tokenizer, TEXTS)


def tiny(tokenizer, seed: int = 0, **options) -> GenerativeDecoder:
    torch.manual_seed(seed)
    options = {"beam": 1, "rerank": False, "min_length": 0.0, **options}  # greedy, no length floor, unless a test asks otherwise
    config = GenerativeConfig.scratch(dim=32, layers=2, heads=2, ffn=64, prefix=2, vector_dim=8, max_tokens=12, dropout=0.0, **options)
    return GenerativeDecoder(build_net(config, len(tokenizer), None), tokenizer, RealWords(tokenizer, TEXTS))


def vectors(n: int, seed: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_real_words_are_vocabulary_words_training_words_and_numbers(tokenizer, words) -> None:
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert words.real_word_share([ids("nairobi is the capital of kenya.")]) == 1.0
    assert words.real_word_share([ids("in 16251984 the highlands")]) == 1.0  # numbers count
    soup = [tokenizer.convert_tokens_to_ids(["reg", "##pl", "##gen", "##lor", "##gal"])]
    assert words.real_word_share(soup) == 0.0
    assert words.real_word_share([ids("photosynthesis")]) == 1.0 and len(ids("photosynthesis")) == 3  # a multi-piece training word
    assert words.real_word_share([ids("photos")[:1] + tokenizer.convert_tokens_to_ids(["##yn"])]) == 0.0  # only part of one


def test_the_mask_allows_only_continuations_on_a_real_words_path(tokenizer, words) -> None:
    photos, yn, thesis = tokenizer.convert_tokens_to_ids(["photos", "##yn", "##thesis"])
    mask = words.next_mask([photos], tokenizer.sep_token_id)
    assert mask[yn] and mask[tokenizer.sep_token_id]  # "photos" is a word, "photos ##yn" is on a path
    assert not mask[tokenizer.convert_tokens_to_ids("##pl")]
    inside = words.next_mask([photos, yn], tokenizer.sep_token_id)
    assert inside[thesis] and not inside[tokenizer.sep_token_id] and not inside[photos]  # must finish the word
    reg = tokenizer.convert_tokens_to_ids("reg")
    assert not words.next_mask([reg], tokenizer.sep_token_id)[tokenizer.convert_tokens_to_ids("##pl")]


def test_constrained_decoding_emits_only_real_words(tokenizer) -> None:
    free = tiny(tokenizer, constrain=False).decode(vectors(12))
    held = tiny(tokenizer, constrain=True).decode(vectors(12))
    words = tiny(tokenizer).words
    assert words.real_word_share([g.ids for g in held]) == 1.0
    assert words.real_word_share([g.ids for g in free]) < 1.0  # the untrained net does emit soup unconstrained


def test_generation_feeds_its_own_tokens_back(tokenizer) -> None:
    decoder = tiny(tokenizer, constrain=False, no_repeat_ngram=0)
    decoder.net.restrict_output(None)  # compare with teacher forcing over the whole vocabulary
    v = torch.as_tensor(vectors(1))
    generated = decoder.decode(vectors(1))[0].ids
    assert len(generated) >= 2
    # The cached, token-by-token path equals a full forward pass over the generated sequence...
    ids = torch.tensor([[tokenizer.cls_token_id, *generated, tokenizer.sep_token_id]])
    full = decoder.net(v, ids)[0]
    logits, cache = decoder.net.start(v, tokenizer.cls_token_id)
    torch.testing.assert_close(logits[0], full[0], atol=1e-4, rtol=1e-4)
    logits, cache = decoder.net.step(torch.tensor([generated[0]]), decoder.config.prefix + 1, cache)
    torch.testing.assert_close(logits[0], full[1], atol=1e-4, rtol=1e-4)
    # ... and the next distribution depends on which token was fed back.
    _, cache0 = decoder.net.start(v, tokenizer.cls_token_id)
    other, _ = decoder.net.step(torch.tensor([(generated[0] + 1) % len(tokenizer)]), decoder.config.prefix + 1, cache0)
    assert not torch.allclose(other[0], full[1])


def test_repetition_guard_and_length_cap(tokenizer) -> None:
    looping = tiny(tokenizer, constrain=False, no_repeat_ngram=0, no_repeat_piece=False, seed=3)
    looping.net.head_bias.data[tokenizer.convert_tokens_to_ids("the")] = 50.0  # a model that wants "the the the ..."
    looping.net.head_bias.data[tokenizer.sep_token_id] = -50.0
    looping.net.restrict_output([*looping.words.seen, tokenizer.sep_token_id])  # generation reads a copy of the bias
    out = looping.decode(vectors(2))
    assert all(len(g.ids) == looping.config.max_tokens for g in out)  # capped, not endless
    guarded = looping.with_options(no_repeat_ngram=2).decode(vectors(2))
    for g in guarded:
        bigrams = list(zip(g.ids, g.ids[1:]))
        assert len(bigrams) == len(set(bigrams)) and len(g.ids) <= looping.config.max_tokens
    for g in looping.with_options(no_repeat_piece=True).decode(vectors(2)) + looping.with_options(no_repeat_piece=True, beam=3).decode(vectors(1)):
        assert g.ids.count(tokenizer.convert_tokens_to_ids("the")) >= 2  # still its favourite piece...
        assert all(a != b for a, b in zip(g.ids, g.ids[1:]))  # ... but never twice in a row


def test_outputs_are_never_empty(tokenizer) -> None:
    eager = tiny(tokenizer, seed=4)
    eager.net.head_bias.data[tokenizer.sep_token_id] = 50.0  # wants to stop at once
    for g in eager.decode(vectors(3)) + eager.with_options(beam=3).decode(vectors(1)):
        assert g.ids and g.text


def test_reranking_picks_the_candidate_closest_to_the_target(tokenizer) -> None:
    decoder = tiny(tokenizer, beam=4, rerank=True)
    table: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        for t in texts:
            table.setdefault(t, vectors(1, seed=len(table) + 10)[0])
        return np.stack([table[t] for t in texts])

    decoder.embed = embed
    target = vectors(1)[0]
    hyps = decoder.beam_search(torch.as_tensor(target[None]), 4)
    chosen = decoder.choose(hyps, target[None])[0]
    cosines = {text: cos for text, cos in chosen.candidates}
    assert len(cosines) >= 2 and cosines[chosen.text] == max(cosines.values())


def test_beam_search_over_a_batch_finds_what_it_finds_for_each_vector_alone(tokenizer) -> None:
    decoder = tiny(tokenizer, beam=3, rerank=True, int8=False)  # int8 shares one activation scale across a batch's rows
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.stack([vectors(1, seed=sum(map(ord, t)))[0] for t in texts])

    decoder.embed = embed
    batch = vectors(5, seed=3)
    together = decoder.decode(batch)
    assert len(calls) == 1  # the batch's candidates are embedded in one call
    alone = [decoder.decode(batch[i : i + 1])[0] for i in range(5)]
    assert [g.ids for g in together] == [g.ids for g in alone]
    assert [g.candidates for g in together] == [g.candidates for g in alone]
    assert len({tuple(g.ids) for g in together}) > 1  # the vectors differ, so do their answers


def test_large_beam_batches_go_in_chunks_that_bound_the_cache(tokenizer, monkeypatch) -> None:
    decoder = tiny(tokenizer, beam=3, int8=False)
    batch = vectors(5, seed=4)
    whole = decoder.decode(batch)
    sizes: list[int] = []
    search = decoder.beam_search
    monkeypatch.setattr(decoder, "beam_search", lambda v, width: sizes.append(v.shape[0]) or search(v, width))
    monkeypatch.setattr(beam_search_module, "BEAM_ROWS", 6)  # 2 vectors of beam 3 a search
    assert [g.ids for g in decoder.decode(batch)] == [g.ids for g in whole] and sizes == [2, 2, 1]


@pytest.mark.parametrize("beam", [1, 3])
def test_an_empty_batch_decodes_to_nothing(tokenizer, beam) -> None:
    assert tiny(tokenizer, beam=beam).decode(np.zeros((0, 8), dtype=np.float32)) == []


def test_bundle_round_trip_keeps_the_outputs(tokenizer, tmp_path) -> None:
    decoder = tiny(tokenizer, int8=False)  # fp32 arithmetic: int8 activation scales would magnify the float16 rounding of a random net's flat logits
    save_decoder(decoder.net, tmp_path, {"note": "test"})
    net, record = load_decoder_net(tmp_path, len(tokenizer), None)
    again = GenerativeDecoder(net, tokenizer, decoder.words)
    assert record["note"] == "test" and not again.config.int8
    assert [g.ids for g in again.decode(vectors(4))] == [g.ids for g in decoder.decode(vectors(4))]  # float16 storage


@pytest.mark.slow  # a training run: 29-54 s each on 2 shared cores
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_tiny_training_run_lowers_the_held_out_loss(tokenizer, precision) -> None:
    decoder = tiny(tokenizer)
    texts = TEXTS * 10
    config = DecoderTrainConfig(
        minutes=5, max_epochs=20, batch_size=8, eval_every=10, patience=100, holdout=0.1, warmup_steps=2, noise=0.0, lr_new=3e-3, precision=precision
    )
    report = train_decoder(decoder.net, tokenizer, texts, np.repeat(vectors(4), 10, axis=0), config)
    losses = [h["val_loss"] for h in report.history]
    assert report.precision == precision and losses[-1] < losses[0] - 1.0


def test_replanning_fits_the_remaining_steps_into_the_remaining_time() -> None:
    assert replan(1000, 100, seconds_per_step=0.5, seconds_left=10.0) == 120
    assert replan(110, 100, seconds_per_step=0.5, seconds_left=10.0) == 110  # never past the epoch cap
    assert replan(1000, 100, seconds_per_step=0.5, seconds_left=-3.0) == 101  # over budget: one more step, then stop


@pytest.mark.slow  # a timed training run: 26 s on 2 shared cores
def test_the_budget_includes_the_held_out_evaluations(tokenizer) -> None:
    """Evaluations every few steps on a large held-out part cost most of the time; the run still keeps to its budget."""
    decoder = tiny(tokenizer)
    texts = TEXTS * 200
    config = DecoderTrainConfig(minutes=0.1, max_epochs=10_000, batch_size=4, eval_every=10, patience=10_000, holdout=0.45, warmup_steps=2, noise=0.0)
    report = train_decoder(decoder.net, tokenizer, texts, np.repeat(vectors(4), 200, axis=0), config)
    assert len(report.history) >= 2
    assert report.steps == report.planned_steps < config.max_epochs  # the budget, not the epoch cap (over a million steps), ended the run


def test_auto_precision_is_bf16_only_on_cpus_with_amx(tmp_path) -> None:
    amx, avx512 = tmp_path / "amx", tmp_path / "avx512"
    amx.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    avx512.write_text("flags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_amx(amx) and not cpu_has_amx(avx512) and not cpu_has_amx(tmp_path / "missing")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, amx=lambda: False) == "fp32"
    assert resolve_precision("auto", cpu, amx=lambda: True) == ("bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32")
    assert resolve_precision("bf16", cpu, amx=lambda: False) == "bf16"  # asked for explicitly


def test_the_training_loss_is_the_softmax_over_the_pieces_the_text_uses(tokenizer) -> None:
    net = tiny(tokenizer).net
    sequences = [[tokenizer.cls_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.sep_token_id] for t in TEXTS]
    vocab = OutputVocab.of(sequences, len(tokenizer))
    assert tokenizer.sep_token_id in vocab.ids.tolist() and tokenizer.cls_token_id not in vocab.ids.tolist()  # targets only
    width = max(map(len, sequences))
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in sequences])
    v = torch.as_tensor(vectors(4))
    logits = net(v, ids)  # the full vocabulary, with the unused pieces masked out by hand
    masked = torch.full_like(logits, -torch.inf)
    masked[..., vocab.ids] = logits[..., vocab.ids]
    targets = ids[:, 1:]
    expected = torch.nn.functional.cross_entropy(masked[targets != 0], targets[targets != 0])
    torch.testing.assert_close(sequence_loss(net, v, ids, vocab), expected)
    assert sequence_loss(net, v, ids) > expected  # the full softmax spreads mass over pieces the text never uses


def test_the_hybrid_threshold_maximises_e2e_without_raising_the_echo_rate() -> None:
    from pipeline.decoders.hybrid import choose_threshold

    bank_scores = np.array([0.2, 0.3, 0.6, 0.7])
    bank_e2e = np.array([0.1, 0.2, 0.6, 0.7])
    bank_echo = np.array([True, False, False, False])  # bank echo rate 0.25
    gen_e2e = np.array([0.5, 0.5, 0.5, 0.5])
    gen_echo = np.array([False, True, False, True])
    choice = choose_threshold(bank_scores, bank_e2e, bank_echo, gen_e2e, gen_echo, np.array([0.25, 0.5, 0.65, 0.8]))
    # 0.25 routes only the first question: e2e (0.5+0.2+0.6+0.7)/4 = 0.5, echo 0; 0.5 would reach 0.575 but echo 0.25 is
    # allowed too (equal to the bank's), so 0.5 wins; 0.65 routes a question the bank answers better.
    assert choice.threshold == 0.5 and choice.e2e_cos == pytest.approx(0.575) and choice.echo_rate == pytest.approx(0.25)
    assert choice.generative_share == 0.5 and len(choice.table) == 5
    strict = choose_threshold(bank_scores, bank_e2e, bank_echo, gen_e2e, np.ones(4, bool), np.array([0.35]))
    assert strict.threshold == -1.0  # every routing raises the echo rate: bank only


def test_generation_scores_only_the_pieces_the_training_text_uses(tokenizer) -> None:
    decoder = tiny(tokenizer)
    seen = sorted(decoder.words.seen | {tokenizer.sep_token_id})
    hidden = torch.randn(2, decoder.config.dim)
    restricted = decoder.net.logits(hidden, restricted=True)
    full = decoder.net.logits(hidden)
    assert decoder.net.output_ids.tolist() == seen and restricted.shape == (2, len(seen))
    torch.testing.assert_close(restricted, full[:, seen])
    assert all(set(g.ids) <= set(seen) for g in decoder.decode(vectors(6)))


def test_the_vocabulary_mapping_round_trips(tokenizer) -> None:
    decoder = tiny(tokenizer)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        spelled = decoder.text_of(ids)
        assert spelled == text  # lower-case training text is spelled back exactly
        assert tokenizer(spelled, add_special_tokens=False)["input_ids"] == ids


def test_answer_fragments_are_runs_of_consecutive_words() -> None:
    from pipeline.decoder_workflows import fragments

    long, short = TEXTS[0], "nairobi is the capital."
    pieces = fragments([long, short], 5, min_words=4, seed=1)
    assert len(pieces) == 5  # the four-word sentence is too short to cut
    for piece in pieces:
        n = len(piece.split())
        assert 4 <= n < len(long.split()) and f" {piece} " in f" {long} "
    assert pieces == fragments([long, short], 5, min_words=4, seed=1) and fragments([long], 0) == []


def test_fused_attention_projections_match_the_three_and_are_dropped_for_training(tokenizer) -> None:
    decoder = tiny(tokenizer)
    assert all(layer.fused is not None for layer in decoder.net.layers)  # fused when the decoder is built
    ids = torch.tensor([[tokenizer.cls_token_id, *tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]]])
    v = torch.as_tensor(vectors(1))
    fused = decoder.net(v, ids)
    for layer in decoder.net.layers:
        layer.fused = None
    torch.testing.assert_close(decoder.net(v, ids), fused)
    for layer in decoder.net.layers:
        layer.fuse()
    decoder.net.train()
    assert all(layer.fused is None for layer in decoder.net.layers)  # training would leave a copy stale


def pieces_to_the_cap(tokenizer, rows: int, cap: int) -> torch.Tensor:
    """[CLS] and `cap` pieces per row (two training sentences joined, cut at the cap)."""
    text = lambda i: f"{TEXTS[i % 4]} {TEXTS[(i + 1) % 4]}"  # noqa: E731
    return torch.tensor([[tokenizer.cls_token_id, *tokenizer(text(i), add_special_tokens=False)["input_ids"][:cap]] for i in range(rows)])


@pytest.mark.parametrize("rows", [1, 5])  # below and from SMALL_BATCH: F.linear, then the pre-transposed weights
def test_cached_generation_matches_teacher_forcing(tokenizer, rows) -> None:
    """Logits step by step through the preallocated cache, up to the length cap, equal one causal pass over the same pieces."""
    net = tiny(tokenizer).net
    ids = pieces_to_the_cap(tokenizer, rows, net.config.max_tokens)
    v = torch.as_tensor(vectors(rows))
    with torch.inference_mode():
        expected = net.logits(net.hidden(v, torch.cat([ids, ids[:, :1]], 1)), restricted=True)  # after [CLS] and every piece (the appended one is never read)
        logits, cache = net.start(v, tokenizer.cls_token_id)
        steps = [logits]
        for i in range(1, ids.shape[1]):  # the last one writes the cache's last position
            logits, cache = net.step(ids[:, i], net.config.prefix + i, cache)
            steps.append(logits)
    assert cache[0][0].shape[2] == net.config.prefix + ids.shape[1]  # the cache is exactly full
    torch.testing.assert_close(torch.stack(steps, 1), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not int8_available(), reason="this torch build has no int8 CPU engine")
@pytest.mark.parametrize("rows", [1, 5])
def test_int8_generation_stays_close_to_fp32(tokenizer, rows) -> None:
    """The same cached steps with int8 projections: each step's logits (centred) point the way the fp32 ones do
    (a random tiny net's logits are flat, so this is looser than on the trained decoder: see bench/decoder_modes.py)."""
    net = tiny(tokenizer).net
    ids = pieces_to_the_cap(tokenizer, rows, net.config.max_tokens)
    v = torch.as_tensor(vectors(rows))
    runs = {}
    with torch.inference_mode():
        for int8 in (False, True):
            logits, cache = net.start(v, tokenizer.cls_token_id, int8)
            steps = [logits]
            for i in range(1, ids.shape[1]):
                logits, cache = net.step(ids[:, i], net.config.prefix + i, cache, int8)
                steps.append(logits)
            runs[int8] = torch.stack(steps, 1)
    assert not torch.equal(runs[True], runs[False])  # the int8 path ran
    centred = {k: r - r.mean(-1, keepdim=True) for k, r in runs.items()}
    cosines = torch.nn.functional.cosine_similarity(centred[True], centred[False], dim=-1)
    assert cosines.mean() > 0.99 and cosines.min() > 0.95


@pytest.mark.skipif(not int8_available(), reason="this torch build has no int8 CPU engine")
@pytest.mark.parametrize("shape", [(5, 64), (2, 3, 64)])
def test_an_int8_projection_matches_the_fp32_layer(shape) -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 64) / 8, torch.randn(96)
    x = 2 * torch.randn(*shape)
    expected = F.linear(x, weight, bias)
    got = Projection(weight, bias)(x, int8=True)
    assert got.shape == expected.shape
    # every element: 8-bit weights with 8-bit activations overflow fbgemm's int16 pair sums on AVX2 (errors of 2 here);
    # a lost bias or a transposed weight is far off too
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_decoding_multiplies_in_the_precision_it_was_asked_for(tokenizer, monkeypatch) -> None:
    seen: list[bool] = []
    call = Projection.__call__
    monkeypatch.setattr(Projection, "__call__", lambda self, x, int8=False: seen.append(int8) or call(self, x, int8))
    decoder = tiny(tokenizer)
    for int8 in (True, False):
        seen.clear()
        decoder.with_options(int8=int8, beam=2).decode(vectors(1))
        decoder.with_options(int8=int8).decode(vectors(2))
        assert seen and set(seen) == {int8 and int8_available()}


def test_int8_is_used_only_where_torch_has_an_engine(tokenizer, monkeypatch) -> None:
    decoder = tiny(tokenizer)
    assert decoder.int8 == int8_available()
    assert not decoder.with_options(int8=False).int8
    monkeypatch.setattr(beam_search_module, "int8_available", lambda: False)
    fallback = decoder.with_options(int8=True)
    assert not fallback.int8
    assert [g.ids for g in fallback.decode(vectors(3))] == [g.ids for g in decoder.with_options(int8=False).decode(vectors(3))]


def test_a_reordered_cache_continues_the_rows_it_was_taken_from(tokenizer) -> None:
    """As beam search does: rows [1, 0, 1] of a two-row cache go on as those rows would have."""
    net = tiny(tokenizer).net
    ids = pieces_to_the_cap(tokenizer, 2, 8)
    v = torch.as_tensor(vectors(2))
    rows = [1, 0, 1]
    with torch.inference_mode():
        expected = net.logits(net.hidden(v[rows], ids[rows]), restricted=True)[:, 4:]  # predictions after pieces 4..7
        _, cache = net.start(v, tokenizer.cls_token_id)
        for i in range(1, 4):
            _, cache = net.step(ids[:, i], net.config.prefix + i, cache)
        cache = reorder(cache, rows, net.config.prefix + 4)
        steps = []
        for i in range(4, ids.shape[1] - 1):
            logits, cache = net.step(ids[rows, i], net.config.prefix + i, cache)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), expected[:, : len(steps)], rtol=1e-4, atol=1e-4)


def test_the_length_floor_holds_off_the_end_until_its_share_of_the_predicted_length(tokenizer) -> None:
    import math

    eager = tiny(tokenizer, seed=4)
    eager.net.head_bias.data[tokenizer.sep_token_id] = 50.0  # wants to stop at once
    eager.net.restrict_output([*eager.words.seen, tokenizer.sep_token_id])
    with torch.no_grad():
        eager.net.length.weight.zero_()
        eager.net.length.bias.fill_(math.log(10.0))  # predicts 10 pieces for every vector
    assert [len(g.ids) for g in eager.decode(vectors(3))] == [1, 1, 1]
    for mode in ({"min_length": 0.5}, {"min_length": 0.5, "beam": 3}):
        floored = eager.with_options(**mode).decode(vectors(2))
        assert all(len(g.ids) == 5 for g in floored)  # the end comes as soon as it is allowed


def test_the_length_head_is_fitted_to_log_piece_counts(tokenizer) -> None:
    from pipeline.training.decoder_trainer import fit_length

    net = tiny(tokenizer).net
    v = torch.as_tensor(vectors(40, seed=5))
    counts = np.exp(1.0 + v[:, :3].sum(1).numpy())  # lengths that depend on the vector
    sequences = [[0] * (int(round(c)) + 2) for c in counts]  # [CLS] + pieces + [SEP]
    fit_length(net, v.numpy(), sequences, ridge=1e-6)
    predicted = net.predicted_length(v).detach().numpy()
    assert np.corrcoef(predicted, counts)[0, 1] > 0.95


def test_an_unknown_decoding_option_is_refused_rather_than_dropped(tokenizer) -> None:
    decoder = tiny(tokenizer)
    with pytest.raises(ValueError, match="unknown decoding option.*beams.*known:.*beam"):
        decoder.with_options(beams=3)
    assert decoder.with_options(beam=3).config.beam == 3
