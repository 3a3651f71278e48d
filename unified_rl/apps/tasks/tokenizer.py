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


# ChatML, as Qwen2.5's template writes it (without tools): what an instruct model's tokenizer brings.
CHATML_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
                   "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
TEXT_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"


def chat_tokenizer(chars: str = TEXT_CHARS) -> PreTrainedTokenizerFast:
    """A character tokenizer for text (printable ASCII and newline) with ChatML's special tokens
    ``<|im_start|>`` / ``<|im_end|>`` (its eos) and a ChatML chat template: a stand-in, built
    locally, for an instruct model's tokenizer."""
    fast = char_tokenizer(chars)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.eos_token = "<|im_end|>"
    fast.chat_template = CHATML_TEMPLATE
    return fast
