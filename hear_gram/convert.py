"""Convert a reference GRAM-T or GRAM-M checkpoint into a hear_gram checkpoint folder.

python -m hear_gram.convert gram_binaural.ckpt exported/gram-binaural --variant gram-binaural
python -m hear_gram.convert gramm.ckpt exported/gram-m-binaural --variant gram-m-binaural
"""

from __future__ import annotations

import argparse
import sys

from hear_gram.checkpoint import encoder_from_reference, load_reference, save_checkpoint
from hear_gram.errors import CheckpointError
from hear_gram.variants import VARIANTS


def main(argv: list[str] | None = None) -> int:
    """``python -m hear_gram.convert SOURCE OUT``: a reference checkpoint as a hear_gram
    folder; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "source",
        help="reference checkpoint: .safetensors, or .ckpt/.pt (read with weights_only=True)",
    )
    parser.add_argument("out", help="output checkpoint folder (must not exist)")
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    args = parser.parse_args(argv)
    try:
        state = load_reference(args.source)
        encoder, config = encoder_from_reference(state, args.variant, args.source)
        save_checkpoint(args.out, encoder, args.variant, config["encoder"], config["metadata"])
    except (CheckpointError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.variant})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
