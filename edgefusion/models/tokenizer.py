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


def _tokenize_quietly(tokenizer, text: str) -> list[str]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "sequence length is longer than ..." log line: we explain it ourselves
    try:
        return tokenizer.tokenize(text)
    finally:
        hf_logging.set_verbosity(level)


def prompt_fit(tokenizer, prompt: str) -> dict:
    """How ``tokenizer`` reads ``prompt``: the words it splits into several pieces (not in its vocabulary), the
    token count, the model's capacity (``model_max_length`` minus start/end tokens) and the text truncation cuts."""
    tokens = _tokenize_quietly(tokenizer, prompt)
    words, piece = [], []
    for tok in tokens:
        piece.append(tok)
        if tok.endswith("</w>"):
            words.append(piece)
            piece = []
    if piece:
        words.append(piece)

    def text(pieces: list[str]) -> str:
        return " ".join(tokenizer.convert_tokens_to_string(pieces).replace("</w>", " ").split())

    split = {text(w): len(w) for w in words if len(w) > 1}
    capacity = int(tokenizer.model_max_length) - 2
    cut = text(tokens[capacity:]) if len(tokens) > capacity else ""
    return {"tokens": len(tokens), "capacity": capacity, "split": split, "cut": cut}


def prompt_fit_warning(tokenizer, prompt: str) -> str | None:
    """One line saying what the tokenizer does to ``prompt`` that the user may not expect, or None."""
    fit = prompt_fit(tokenizer, prompt)
    parts = []
    if fit["split"]:
        shown = ", ".join(f"'{w}' -> {n}" for w, n in list(fit["split"].items())[:4])
        more = "" if len(fit["split"]) <= 4 else f", and {len(fit['split']) - 4} more"
        parts.append(f"{len(fit['split'])} word(s) outside the tokenizer's vocabulary are split into "
                     f"{sum(fit['split'].values())} pieces ({shown}{more})")
    if fit["cut"]:
        parts.append(f"it is {fit['tokens']} tokens long and the model reads {fit['capacity']}, so "
                     f"'{fit['cut'][:80]}{'...' if len(fit['cut']) > 80 else ''}' is cut")
    if not parts:
        return None
    short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return f"prompt '{short}': " + "; ".join(parts)


def warn_prompt_fit(tokenizer, prompts: list[str], what: str = "prompts") -> list[str]:
    """One warning (:mod:`edgefusion.diagnostics`) when the tokenizer splits or cuts any of ``prompts``: how
    many, and the first one's details. Returns the per-prompt lines."""
    from edgefusion import diagnostics

    lines = [w for w in (prompt_fit_warning(tokenizer, p) for p in prompts) if w]
    if len(lines) == 1 and len(prompts) == 1:
        diagnostics.warn(lines[0], "rephrase it with the model's own words, or shorten it")
    elif lines:
        diagnostics.warn(f"{len(lines)} of {len(prompts)} {what} are not read as written; the first: {lines[0]}",
                         "use prompts in the model's vocabulary (--prompts-file), or shorter ones")
    return lines
