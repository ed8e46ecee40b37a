"""Architecture of the embedded model: the full Stable Diffusion structure (CLIP text encoder, KL autoencoder,
cross-attention UNet with softmax, GroupNorm, LayerNorm, SiLU, GELU) at a size that trains on 2 CPU cores."""

from __future__ import annotations

from edgefusion.embedded.shapes import IMAGE_SIZE, caption_words

MAX_TOKENS = 20

VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=[32, 64, 64],
           down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3, norm_num_groups=16,
           sample_size=IMAGE_SIZE, scaling_factor=1.0)  # scaling factor measured after VAE training
LATENT = IMAGE_SIZE // 4
UNET = dict(sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[64, 128],
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=64,
            attention_head_dim=4, norm_num_groups=16)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu", projection_dim=64)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 steps_offset=1)


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lowest rank first) until none applies."""
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def word_merges() -> list[str]:
    """BPE merges that make every caption word a single token.

    Each word is first split by the merges so far; merges joining what is left are appended (highest rank), so they
    fire after the existing ones and cannot change words already handled.
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in caption_words():
        parts = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(parts) > 1:
            ranks.setdefault((parts[0], parts[1]), len(ranks))
            parts = [parts[0] + parts[1]] + parts[2:]
    return [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
