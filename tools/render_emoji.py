"""Render the seven emotion emoji PNGs from Google's Noto Color Emoji font.

The runtime overlays one emoji per emotion class on the video frame. This
script reproduces those images from the Debian package
``fonts-noto-color-emoji`` (font: SIL OFL 1.1; emoji images: Apache-2.0, see
``runtime/assets/emoji/NOTICE``).

Noto Color Emoji is a bitmap (CBDT/CBLC) font whose only strike is 109 px, so
each glyph is drawn at its native resolution (about 136 x 128 px) onto a
transparent RGBA canvas, cropped to its alpha bounding box, padded to a square
with a small transparent margin, and saved as PNG. Nothing is upscaled.

Usage:
    python tools/render_emoji.py [--font PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Where Debian's fonts-noto-color-emoji package installs the font.
DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")

# Output directory, relative to the current working directory (the repo root).
DEFAULT_OUT = Path("runtime/assets/emoji")

# The only pixel size the font's embedded bitmap strike supports.
FONT_SIZE = 109

# Transparent margin, in pixels, kept around the glyph after cropping.
PAD = 2

# Side of the scratch canvas; twice the font size leaves room for any glyph.
CANVAS = 2 * FONT_SIZE

# One-line hint printed when the font file cannot be found.
INSTALL_HINT = "apt-get update && apt-get install -y fonts-noto-color-emoji"

# Exit status for a missing font (the usual "usage/environment" error code).
EXIT_NO_FONT = 2

# Emotion class name -> emoji code point (names match the output file stems).
EMOJI: dict[str, int] = {
    "angry": 0x1F620,  # ANGRY FACE
    "disgust": 0x1F922,  # NAUSEATED FACE
    "fear": 0x1F628,  # FEARFUL FACE
    "happy": 0x1F604,  # SMILING FACE WITH OPEN MOUTH AND SMILING EYES
    "neutral": 0x1F610,  # NEUTRAL FACE
    "sad": 0x1F622,  # CRYING FACE
    "surprise": 0x1F62E,  # FACE WITH OPEN MOUTH
}


def render(font: ImageFont.FreeTypeFont, codepoint: int) -> Image.Image:
    """Render one emoji as a square RGBA image with a transparent border.

    Args:
        font: Noto Color Emoji loaded at ``FONT_SIZE``.
        codepoint: Unicode code point of the emoji.

    Returns:
        The glyph cropped to its alpha bounding box and centred on a square
        transparent canvas ``PAD`` pixels larger on every side.

    Raises:
        ValueError: If the font draws nothing for ``codepoint``.
    """
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text(
        (PAD, PAD), chr(codepoint), font=font, embedded_color=True
    )
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError(f"font has no glyph for U+{codepoint:04X}")
    glyph = canvas.crop(bbox)
    side = max(glyph.size) + 2 * PAD
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square


def main(argv: list[str] | None = None) -> int:
    """Render every emoji in ``EMOJI`` into the output directory.

    Args:
        argv: Command-line arguments; ``None`` means ``sys.argv[1:]``.

    Returns:
        Process exit status: 0 on success, ``EXIT_NO_FONT`` if the font is
        missing.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--font", type=Path, default=DEFAULT_FONT, help="NotoColorEmoji.ttf path"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory"
    )
    args = parser.parse_args(argv)

    if not args.font.is_file():
        print(
            f"error: emoji font not found at {args.font}; install it with: "
            f"{INSTALL_HINT}",
            file=sys.stderr,
        )
        return EXIT_NO_FONT

    font = ImageFont.truetype(str(args.font), FONT_SIZE)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, codepoint in EMOJI.items():
        path = args.out / f"{name}.png"
        image = render(font, codepoint)
        image.save(path, optimize=True)
        print(f"{path}: U+{codepoint:04X} {image.width}x{image.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
