"""Word n-gram LM, BPE lexicon and HLG decoding."""

import math

import pytest
import torch

from streamkd.data.tokenizer import Tokenizer
from streamkd.decode.ctc import CtcOneBestDecoder, StreamingCtcSearch
from streamkd.lang.hlg import WordGraph, compile_hlg
from streamkd.lang.lexicon import build_lexicon
from streamkd.lang.ngram import KneserNeyLM, read_arpa_vocabulary, train_ngram_lm

from helpers import train_tiny_bpe

SENTENCES = [
    "THE CAT SAT ON THE MAT",
    "THE DOG SAT ON THE LOG",
    "A CAT AND A DOG",
    "THE CATALOGUE OF THE DOG",
    "DOGMA IS NOT A DOG",
    "ON THE MAT THE CAT SLEPT",
]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    """A tiny BPE model, a trigram LM over the sentences and the HLG built from both."""
    directory = tmp_path_factory.mktemp("lang")
    bpe = train_tiny_bpe(directory, SENTENCES * 20, vocab_size=30)
    arpa = directory / "lm.arpa"
    train_ngram_lm(SENTENCES, arpa, order=3)
    graph = compile_hlg(bpe, arpa, order=3)
    path = directory / "HLG.pt"
    graph.save(path)
    return Tokenizer(bpe), WordGraph.load(path)


def spelled_posteriors(token_ids, vocab_size, frames_per_token=2, blanks_between=1):
    """CTC log-posteriors that spell ``token_ids``: each token for a few frames, blanks around."""
    frames = [0]
    for token in token_ids:
        frames += [token] * frames_per_token + [0] * blanks_between
    logits = torch.full((len(frames), vocab_size), -10.0)
    for t, token in enumerate(frames):
        logits[t, token] = 10.0
    return logits.log_softmax(-1).unsqueeze(0), torch.tensor([len(frames)])


def test_kneser_ney_distributions_sum_to_one():
    lm = KneserNeyLM((s.split() for s in SENTENCES), order=3)
    contexts = {g[:-1] for n in (2, 3) for g in lm.counts[n]} | {(), ("UNSEEN",), ("THE", "UNSEEN")}
    for context in contexts:
        total = sum(lm.prob(context + (w,)) for w in lm.vocab)
        assert math.isclose(total, 1.0, rel_tol=1e-9), (context, total)
    # Seen continuations beat unseen ones.
    assert lm.prob(("SAT", "ON", "THE")) > lm.prob(("SAT", "ON", "DOGMA"))


def test_arpa_round_trip(tmp_path):
    arpa = tmp_path / "lm.arpa"
    lm = train_ngram_lm(SENTENCES, arpa, order=2)
    text = arpa.read_text()
    assert text.startswith("\\data\\\nngram 1=") and text.rstrip().endswith("\\end\\")
    assert sorted(read_arpa_vocabulary(arpa)) == sorted(w for w in lm.vocab if w != "</s>")
    with pytest.raises(ValueError, match="no sentences"):
        train_ngram_lm(["", "  "], tmp_path / "empty.arpa")


def test_lexicon_disambiguates_prefix_pronunciations(lang):
    tokenizer, _ = lang
    lexicon = build_lexicon(["CAT", "CATALOGUE", "DOG", "DOGMA"], tokenizer)
    prons = dict(zip(lexicon.words, lexicon.prons))
    for word in lexicon.words:
        spelled = tokenizer.encode([word])[0]
        is_prefix = any(
            other != word and tokenizer.encode([other])[0][: len(spelled)] == spelled for other in lexicon.words
        )
        assert prons[word][: len(spelled)] == spelled
        assert (len(prons[word]) > len(spelled)) == is_prefix, word
        assert all(t >= tokenizer.vocab_size for t in prons[word][len(spelled) :])


@pytest.mark.parametrize("word", ["CAT", "CATALOGUE", "DOGMA", "SLEPT"])
def test_hlg_decodes_posteriors_that_spell_a_word(lang, word):
    tokenizer, graph = lang
    log_probs, lengths = spelled_posteriors(tokenizer.encode([word])[0], tokenizer.vocab_size)
    word_ids = CtcOneBestDecoder(graph.fsa)(log_probs, lengths)
    assert graph.to_text(word_ids[0]) == word


def test_hlg_decodes_a_sentence_and_streams_the_same(lang):
    tokenizer, graph = lang
    sentence = "THE DOG SAT ON THE MAT"
    log_probs, lengths = spelled_posteriors(tokenizer.encode([sentence])[0], tokenizer.vocab_size)
    assert graph.to_text(CtcOneBestDecoder(graph.fsa)(log_probs, lengths)[0]) == sentence
    search = StreamingCtcSearch(graph.fsa, batch_size=1)
    for start in range(0, log_probs.size(1), 4):
        piece = log_probs[:, start : start + 4]
        search.advance(piece, torch.tensor([piece.size(1)]))
    assert graph.to_text(search.finish()[0]) == sentence


def test_all_blank_posteriors_give_an_empty_hypothesis(lang):
    tokenizer, graph = lang
    log_probs, lengths = spelled_posteriors([], tokenizer.vocab_size)
    log_probs = log_probs.expand(2, -1, -1).contiguous()
    assert CtcOneBestDecoder(graph.fsa)(log_probs, lengths.expand(2)) == [[], []]
    assert graph.to_text([]) == ""


def test_word_graph_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        WordGraph.load(tmp_path / "nowhere.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        WordGraph.load(bad)


def ambiguous_posteriors(tokenizer, words, ambiguous):
    """Posteriors that spell ``words`` except at the word ``None``, where the single-token
    words in ``ambiguous`` are exactly equally likely."""
    frames = [{0}]
    for word in words:
        pieces = (
            [{t} for t in tokenizer.encode([word])[0]] if word else [{tokenizer.encode([w])[0][0] for w in ambiguous}]
        )
        for tokens in pieces:
            frames += [tokens, tokens, {0}]
    logits = torch.full((len(frames), tokenizer.vocab_size), -10.0)
    for t, tokens in enumerate(frames):
        logits[t, list(tokens)] = 10.0
    return logits.log_softmax(-1).unsqueeze(0), torch.tensor([len(frames)])


@pytest.mark.parametrize(
    "words, expected",
    [
        (["ON", "THE", "MAT", "THE", None, "SLEPT"], "CAT"),  # "MAT THE CAT" is in the LM's text
        (["THE", "CATALOGUE", "OF", "THE", None], "DOG"),  # "OF THE DOG" is, "OF THE CAT" is not
    ],
)
def test_the_word_lm_decides_between_equally_likely_words(lang, words, expected):
    tokenizer, graph = lang
    ambiguous = ("CAT", "DOG")
    assert all(len(tokenizer.encode([w])[0]) == 1 for w in ambiguous)  # one token each: a true tie
    log_probs, lengths = ambiguous_posteriors(tokenizer, words, ambiguous)
    decoded = graph.to_text(CtcOneBestDecoder(graph.fsa)(log_probs, lengths)[0])
    assert decoded == " ".join(expected if w is None else w for w in words)
