"""Cost of the checkpoint checksums: hashing speed here, share of a save, 1.3B estimate.

    python scripts/bench_checksum.py [--mib 512] [--checkpoint DIR ...] [--world 8]

Prints the XXH3-64 rate over a file in the page cache (the state a just-written checkpoint
is in), for each ``--checkpoint`` folder the seconds to hash all its files against the
``save_seconds`` its manifest records, and the bytes per rank and seconds of hashing of a
``configs/llama1b_switch.toml`` checkpoint on ``--world`` ranks. Each rank hashes the files
it wrote (once) and its share of the folder on every resume; rank 0 reads the whole new
folder back before deleting an older one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.checkpoint.checksum import file_checksum  # noqa: E402
from trainer.model.args import ModelArgs, resolve_model_args  # noqa: E402


def hash_rate(mib: int, repeats: int = 3) -> float:
    """MB/s (10^6 bytes) of :func:`file_checksum` over a cached file of ``mib`` MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data"
        with open(path, "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(2**20))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            file_checksum(path)
            best = min(best, time.perf_counter() - start)
    return mib * 2**20 / best / 1e6


def switchlora_checkpoint_bytes(args: ModelArgs, rank: int) -> dict[str, int]:
    """Bytes of a SwitchLoRA (candidate_source 'pool') checkpoint, all tensors fp32.

    Model: frozen bases, lora_A [r, n] / lora_B [m, r], embeddings, norms, lm_head. Pools:
    min(m, n) candidate vectors of length n (for A) and m (for B) per projection. AdamW:
    two moments per trainable value (adapters, embeddings, norms, lm_head).
    """
    shapes = args.linear_shapes().values()
    base = sum(m * n for m, n in shapes) * args.n_layers
    adapters = sum(rank * (m + n) for m, n in shapes) * args.n_layers
    pools = sum(min(m, n) * (m + n) for m, n in shapes) * args.n_layers
    others = args.num_params() - base
    return {
        "model": 4 * (base + adapters + others),
        "candidate pools": 4 * pools,
        "optimizer moments": 4 * 2 * (adapters + others),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the timed file")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="step-<N> folders")
    parser.add_argument("--world", type=int, default=8, help="ranks of the 1.3B estimate")
    opts = parser.parse_args()

    rate = hash_rate(opts.mib)
    print(f"xxh3_64 over a cached {opts.mib} MiB file: {rate:,.0f} MB/s (one core)")
    for folder in map(Path, opts.checkpoint):
        manifest = json.loads((folder / "manifest.json").read_text())
        start = time.perf_counter()
        for name in manifest["checksums"]:
            file_checksum(folder / name)
        seconds = time.perf_counter() - start
        size = sum(manifest["files"].values())
        save = manifest["save_seconds"]
        print(
            f"{folder}: {size / 1e6:.2f} MB on {manifest['world_size']} ranks, hashing all "
            f"files {seconds * 1e3:.1f} ms, save {save * 1e3:.0f} ms -> hashing once "
            f"{seconds / save:.1%} of the save (twice, with the read-back: {2 * seconds / save:.1%})"
        )
    args = resolve_model_args("1b", vocab_size=32128, max_seq_len=512)
    parts = switchlora_checkpoint_bytes(args, rank=512)
    total = sum(parts.values())
    per_rank = total / opts.world
    print(
        "llama1b_switch checkpoint: "
        + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in parts.items())
        + f"; {total / 1e9:.2f} GB in all, {per_rank / 1e9:.2f} GB per rank on {opts.world}"
    )
    print(
        f"  per rank: hashing its files after writing {per_rank / rate / 1e6:.2f} s, its share "
        f"on resume {per_rank / rate / 1e6:.2f} s; rank 0 read-back of the whole folder "
        f"{total / rate / 1e6:.2f} s (at {rate:,.0f} MB/s, cached)"
    )


if __name__ == "__main__":
    main()
