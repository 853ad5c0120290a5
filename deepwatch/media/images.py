"""Open still images with Pillow under the pixel limit, and apply their EXIF orientation.

:func:`load_image_pixels` is the loader image detectors use: the original file's pixels, decoded
once, turned upright by the EXIF orientation, as RGB ``uint8``. It decodes in this process, so call
it on files that :func:`deepwatch.media.normalize.normalize` has accepted: that check already
decoded them, under a time limit, in a child process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepwatch.media.errors import Corrupt, MediaError, TooLarge, Unsupported
from deepwatch.media.sniff import sniff

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from deepwatch.settings import Settings

# Pillow's format names for each sniffed image format: an image must decode as what it was sniffed as.
PIL_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": ("JPEG", "MPO"),  # MPO: a JPEG with further pictures (Ultra HDR gain maps, stereo pairs)
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "bmp": ("BMP",),
    "tiff": ("TIFF",),
    "avif": ("AVIF",),
    "heic": ("HEIF",),  # only where a HEIF plugin (pillow-heif) is registered
}
# Formats whose extra frames are an animation; an MPO's or a TIFF's extra frames are other pictures.
ANIMATED_FORMATS = frozenset({"gif", "png", "webp", "avif"})
ORIENTATION_TAG = 0x0112


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of ``image``; 1 when absent, unreadable or out of range."""
    try:
        value = image.getexif().get(ORIENTATION_TAG)
    except Exception:  # malformed EXIF must not make a decodable image undecodable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned the way EXIF ``orientation`` says it is displayed (a no-op for 1)."""
    from PIL import Image as PILImage

    transpose = PILImage.Transpose
    method = {
        2: transpose.FLIP_LEFT_RIGHT,
        3: transpose.ROTATE_180,
        4: transpose.FLIP_TOP_BOTTOM,
        5: transpose.TRANSPOSE,
        6: transpose.ROTATE_270,
        7: transpose.TRANSVERSE,
        8: transpose.ROTATE_90,
    }.get(orientation)
    return image if method is None else image.transpose(method)


PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}")


@contextmanager
def open_image(path: Path, fmt: str, max_pixels: int) -> Iterator[Any]:
    """Open ``path`` lazily as the sniffed ``fmt``, refusing it before decoding when it is over ``max_pixels``.

    Pillow's own decompression-bomb error becomes :class:`TooLarge`, every other decoding failure
    :class:`Corrupt`; a format Pillow has no decoder for is :class:`Unsupported`.
    """
    from PIL import Image

    Image.init()
    if Image.MAX_IMAGE_PIXELS is None:
        # videohash2 (the peer in tests and `bench fingerprint`) switches Pillow's own bomb check off
        # for the whole process on every call; this loader keeps it on (Pillow's default limit).
        Image.MAX_IMAGE_PIXELS = PILLOW_DEFAULT_MAX_PIXELS
    names = PIL_FORMATS.get(fmt, ())
    if not any(name in Image.OPEN for name in names):
        raise Unsupported(f"no decoder for {fmt.upper()} images is installed")
    try:
        with Image.open(path, formats=[n for n in names if n in Image.OPEN]) as image:
            check_pixels(*image.size, max_pixels)
            yield image
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning, where it is an error
        raise TooLarge(str(exc)) from None
    except MemoryError:
        raise TooLarge(f"decoding {path.name} ran out of memory") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise Corrupt(f"{path.name} does not decode as {fmt.upper()}: {type(exc).__name__}: {exc}") from None


def load_image_pixels(path: Path, settings: Settings) -> np.ndarray:
    """The image's pixels as upright RGB ``uint8`` (H, W, 3): EXIF orientation applied, pixel limit enforced.

    The first frame of an animated image. Raises only :class:`MediaError` subclasses.
    """
    import numpy as np

    sniffed = sniff(path)
    if sniffed.kind != "image":
        raise Unsupported(f"{path.name} is a {sniffed.format.upper()} video, not an image")
    with open_image(path, sniffed.format, settings.media_max_pixels) as image:
        orientation = exif_orientation(image)
        upright = apply_orientation(image.convert("RGB"), orientation)
        return np.asarray(upright, dtype=np.uint8)
