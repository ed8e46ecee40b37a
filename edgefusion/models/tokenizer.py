"""A CLIP tokenizer built locally (no download): byte-level characters plus optional merges."""

from transformers import CLIPTokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_clip_tokenizer(model_max_length: int = 77, merges: list[str] | None = None) -> CLIPTokenizer:
    """Return a ``CLIPTokenizer`` over the 256 byte symbols (with and without ``</w>``) and the given merges.

    Merges are BPE pairs such as ``"r ed</w>"``; each one adds its merged token to the vocabulary. With no merges the
    tokenizer splits every word into characters, which is enough for random-weight architecture presets.
    """
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for tok in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(tok, len(vocab))
    for pair in merges or []:
        a, b = pair.split()
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges or []],
                         model_max_length=model_max_length)
