"""Every kind of upload either becomes an upright RGB image of bounded size or a clear ImageError."""
import io

import numpy as np
import pytest
from conftest import png_header_only
from PIL import Image

from vit.data.images import MAX_SIDE, ImageError, open_image


def save(tmp_path, im: Image.Image, name: str, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_no_image_is_a_message():
    with pytest.raises(ImageError, match="No image given"):
        open_image(None)


def test_text_renamed_jpg_and_empty_file(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo")
    with pytest.raises(ImageError, match="notes.jpg is not an image"):
        open_image(fake)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png is empty"):
        open_image(empty)


def test_each_message_carries_its_code_and_values(tmp_path):
    """What the app needs to say it in another language (vit.messages.Said): the kind, and what fills it."""
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo")
    with pytest.raises(ImageError) as e:
        open_image(fake)
    assert e.value.code == "image.not_image" and e.value.values == {"name": "notes.jpg"}
    with pytest.raises(ImageError) as e:
        open_image(None)
    assert e.value.code == "image.none" and e.value.values == {}


def test_truncated_jpeg(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(data, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg could not be decoded: it looks truncated"):
        open_image(cut)


def test_tiny_and_huge_jpeg(tmp_path):
    assert open_image(save(tmp_path, Image.new("RGB", (1, 1), "red"), "one.png")).size == (1, 1)
    big = save(tmp_path, Image.new("RGB", (10_000, 10_000), (200, 30, 30)), "big.jpg", quality=50)
    im = open_image(big)
    assert max(im.size) <= MAX_SIDE and im.mode == "RGB"
    assert np.asarray(im)[100, 100, 0] > 150


@pytest.mark.parametrize("side", [12_000, 30_000])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageError, match="megapixels"):
        open_image(bomb)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "I;16", "F"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = Image.new("RGB", (40, 30), (250, 250, 250))
    if mode == "I;16":
        im = Image.fromarray(np.full((30, 40), 64000, dtype=np.uint16))
        path = save(tmp_path, im, "deep.png")
    elif mode == "F":
        im = Image.fromarray(np.linspace(0, 1, 1200, dtype=np.float32).reshape(30, 40))
        path = save(tmp_path, im, "float.tiff")
    else:
        path = save(tmp_path, base.convert(mode), f"m.{'jpg' if mode == 'CMYK' else 'png'}")
    out = open_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode in ("I;16", "L", "RGBA", "P", "LA"):
        assert np.asarray(out).mean() > 230  # bright stays bright (16-bit scaled, not clipped or wrapped)


def test_transparent_pixels_become_white(tmp_path):
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert np.asarray(open_image(save(tmp_path, im, "clear.png")))[5, 5].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (60, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    path = save(tmp_path, im, "rot.jpg", exif=exif, quality=95)
    out = open_image(path)
    assert out.size == (20, 60)
    assert np.asarray(out)[2, 10, 0] > 200  # the left stripe is now on top


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert np.asarray(open_image(path))[10, 10].tolist()[0] > 200


def test_bytes_and_pil_inputs():
    buf = io.BytesIO()
    Image.new("L", (5, 5), 100).save(buf, "PNG")
    assert open_image(buf.getvalue()).mode == "RGB"
    assert open_image(Image.new("RGB", (2000, 1000))).size == (MAX_SIDE, MAX_SIDE // 2)
