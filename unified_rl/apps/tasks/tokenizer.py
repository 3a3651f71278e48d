"""A character-level tokenizer built locally with ``tokenizers`` and wrapped as a standard
Hugging Face fast tokenizer (``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work)."""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
ARITHMETIC_CHARS = "0123456789+-*=;#"


def char_tokenizer(chars: str = ARITHMETIC_CHARS) -> PreTrainedTokenizerFast:
    """One token per character of ``chars``; <pad>, <eos>, <bos>, <unk> are ids 0-3."""
    if len(set(chars)) != len(chars):
        raise ValueError(f"char_tokenizer: duplicate characters in {chars!r}")
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.padding_side = "left"
    return fast
