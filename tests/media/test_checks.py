"""Untrusted image/audio/base64 decoding: every refusal is an InvalidRequest naming the parameter."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from wanflash.errors import InvalidRequest
from wanflash.media import checks as mc

P = "inputs.frameImages[0].image"


def err(exc: pytest.ExceptionInfo[InvalidRequest]) -> tuple[str, str]:
    (e,) = exc.value.errors
    assert e.parameter in (P, "inputs.audio")
    return e.code, e.message


def png(im: Image.Image, **kw: object) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def jpeg(im: Image.Image, **kw: object) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    return Image.fromarray(np.stack([x, x[::-1, ::-1], np.full_like(x, 90)], -1), "RGB")


# ----------------------------------------------------------------------------- base64


def test_base64_raw_data_uri_wrapped_and_urlsafe() -> None:
    data = bytes(range(256)) * 3
    b64 = base64.b64encode(data).decode()
    assert mc.decode_base64_input(b64, parameter=P, max_bytes=10_000) == data
    assert mc.decode_base64_input(f"data:image/png;base64,{b64}", parameter=P, max_bytes=10_000) == data
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    assert mc.decode_base64_input(wrapped, parameter=P, max_bytes=10_000) == data
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert mc.decode_base64_input(urlsafe, parameter=P, max_bytes=10_000) == data


@pytest.mark.parametrize("value", ["123e4567-e89b-12d3-a456-426614174000", "https://example.com/a.png", "short"])
def test_base64_not_base64_returns_none(value: str) -> None:
    assert mc.decode_base64_input(value, parameter=P, max_bytes=1000) is None


@pytest.mark.parametrize(
    "value",
    [
        "aGVsbG8gd29ybGQh!!aGVsbG8gd29ybGQh",  # junk: lenient decoding would drop it silently
        "aGk=aGVsbG8gd29ybGQhIGhlbGxvIHdvcmxk",  # data after padding: lenient decoding truncates
        "data:image/png,%89PNG%0D%0A%1A%0A0000",  # percent-encoded data URI
        "data:image/png;base64",  # no comma
        "aGVsbG8gd29ybGQhIGhlbGxv+-_x",  # mixed alphabets
        "aGVsbG8gd29ybGQhIGhlbGxvA",  # impossible length
    ],
)
def test_base64_abuse_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_base64_input(value, parameter=P, max_bytes=1000)
    assert err(ei)[0] == "invalidBase64"


def test_base64_length_cap_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> bytes:
        raise AssertionError("decoded despite length cap")

    monkeypatch.setattr(mc.base64, "b64decode", boom)
    huge = "A" * 20_000_000
    for v in (huge, "data:image/png;base64," + huge, "A" * 1368 + "\n" * 30):
        with pytest.raises(InvalidRequest) as ei:
            mc.decode_base64_input(v, parameter=P, max_bytes=1000)
        assert err(ei)[0] == "inputTooLarge"


def test_base64_cap_exact_boundary() -> None:
    assert mc.decode_base64_input(base64.b64encode(b"x" * 1000).decode(), parameter=P, max_bytes=1000)
    with pytest.raises(InvalidRequest):
        mc.decode_base64_input(base64.b64encode(b"x" * 1001).decode(), parameter=P, max_bytes=1000)


# ----------------------------------------------------------------------------- images


def test_png_behind_wrong_mime_decodes_as_png() -> None:
    data = mc.decode_base64_input("data:image/jpeg;base64," + base64.b64encode(png(gradient())).decode(),
                                  parameter=P, max_bytes=10**6)
    im = mc.decode_image(data or b"", parameter=P, max_pixels=10**6)
    assert im.mode == "RGB" and im.size == (64, 48)
    assert np.array_equal(np.asarray(im), np.asarray(gradient()))


def test_decompression_bomb_refused_at_header() -> None:
    bomb = png(Image.new("1", (10000, 10000)))  # ~12 kB declaring 100 MP
    assert len(bomb) < 50_000
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_image(bomb, parameter=P, max_pixels=40_000_000)
    assert err(ei)[0] == "imageTooLarge"
    # Also below Pillow's own threshold: our cap is what refuses.
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_image(png(Image.new("L", (300, 300))), parameter=P, max_pixels=50_000)
    assert err(ei)[0] == "imageTooLarge"


def test_decompression_bomb_warning_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40=1600 > 1000 warns in Pillow
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_image(png(Image.new("RGB", (40, 40))), parameter=P, max_pixels=10**6)
    assert err(ei)[0] == "imageTooLarge"


@pytest.mark.parametrize("kind", ["svg", "fits", "tiff", "ico", "text", "empty"])
def test_formats_outside_allow_list_refused(kind: str) -> None:
    if kind == "svg":
        data = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    elif kind == "fits":
        data = b"SIMPLE  =                    T" + b" " * 50
    elif kind in ("tiff", "ico"):
        b = io.BytesIO()
        gradient(16, 16).save(b, kind.upper())
        data = b.getvalue()
    elif kind == "text":
        data = b"hello world, not an image"
    else:
        data = b""
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_image(data, parameter=P, max_pixels=10**6)
    assert err(ei)[0] == "invalidImage"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_images_refused(fmt: str) -> None:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    full = jpeg(im) if fmt == "jpeg" else png(im)
    mc.decode_image(full, parameter=P, max_pixels=10**6)
    for cut in (len(full) // 3, len(full) // 2, len(full) - 20, len(full) - 2):
        with pytest.raises(InvalidRequest) as ei:
            mc.decode_image(full[:cut], parameter=P, max_pixels=10**6)
        assert err(ei)[0] == "invalidImage"


def test_png_missing_tail_refused_though_load_tolerates_it() -> None:
    data = png(gradient())[:-20]
    Image.open(io.BytesIO(data)).load()  # Pillow's load() alone accepts it: verify() is what refuses
    with pytest.raises(InvalidRequest):
        mc.decode_image(data, parameter=P, max_pixels=10**6)


def test_corrupt_png_crc_refused() -> None:
    data = bytearray(png(gradient()))
    i = data.index(b"IDAT") + 10
    data[i] ^= 0xFF
    with pytest.raises(InvalidRequest) as ei:
        mc.decode_image(bytes(data), parameter=P, max_pixels=10**6)
    assert err(ei)[0] == "invalidImage"


def test_exif_orientation_6_applied() -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # left quarter blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = mc.decode_image(jpeg(im, exif=exif.tobytes(), quality=95), parameter=P, max_pixels=10**6)
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue band ends up on top


def test_cmyk_jpeg_to_rgb() -> None:
    out = mc.decode_image(jpeg(Image.new("CMYK", (16, 16), (0, 255, 255, 0))), parameter=P, max_pixels=10**6)
    r, g, b = np.asarray(out)[8, 8]
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_rgba_composited_on_white() -> None:
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    out = np.asarray(mc.decode_image(png(im), parameter=P, max_pixels=10**6))
    assert tuple(out[4, 4]) == (255, 255, 255) and tuple(out[0, 0]) == (255, 0, 0)


def test_palette_with_transparency_composited() -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    out = np.asarray(mc.decode_image(png(im, transparency=0), parameter=P, max_pixels=10**6))
    assert tuple(out[4, 4]) == (255, 255, 255) and tuple(out[1, 1]) == (0, 255, 0)


def test_16bit_grey_scaled_not_clipped() -> None:
    arr = np.array([[0, 40000, 65535, 257]], dtype=np.uint16).repeat(4, 0)
    out = np.asarray(mc.decode_image(png(Image.fromarray(arr)), parameter=P, max_pixels=10**6))
    assert list(out[0, :, 0]) == [0, 156, 255, 1]  # plain convert("RGB") would give 255 for 40000


def test_animated_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt in ("GIF", "WEBP"):
        b = io.BytesIO()
        frames[0].save(b, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
        out = np.asarray(mc.decode_image(b.getvalue(), parameter=P, max_pixels=10**6))
        r, g, bl = out[8, 8]
        assert r > 200 and g < 60 and bl < 60, fmt


def test_bmp_and_webp_allowed() -> None:
    for fmt in ("BMP", "WEBP"):
        b = io.BytesIO()
        gradient().save(b, fmt)
        assert mc.decode_image(b.getvalue(), parameter=P, max_pixels=10**6).size == (64, 48)


# ----------------------------------------------------------------------------- audio

A = "inputs.audio"


def wav(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
    inter = np.repeat(pcm[:, None], channels, 1).reshape(1, -1)
    buf = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(buf, "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout=layout)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(inter), format="s16", layout=layout)
        fr.rate = rate
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def encoded(fmt: str, codec: str, seconds: float = 1.0, rate: int = 48000, video: bool = False) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        if video:
            v = c.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        s = c.add_stream(codec, rate=rate, layout="mono")
        n = int(seconds * rate)
        pcm = (np.sin(np.arange(n) / 7) * 0.3).astype(np.float32)[None]
        fmt_name = s.codec_context.format.name
        data = pcm if fmt_name in ("flt", "fltp") else (pcm * 32000).astype(np.int16)
        fr = av.AudioFrame.from_ndarray(data, format=fmt_name if fmt_name in ("flt", "fltp", "s16", "s16p") else "fltp", layout="mono")
        fr.rate = rate
        if video:
            for i in range(int(seconds * 10)):
                vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                vf.pts = i
                for p in v.encode(vf):
                    c.mux(p)
            for p in v.encode(None):
                c.mux(p)
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def test_wav_probe_and_decode() -> None:
    data = wav(2.0, rate=8000, channels=2)
    info = mc.probe_audio(data, parameter=A, max_seconds=5)
    assert info == mc.AudioInfo(codec="pcm_s16le", rate=8000, channels=2, seconds=2.0)
    samples, rate = mc.decode_audio(data, parameter=A, max_seconds=5)
    assert rate == 8000 and samples.shape == (2, 16000) and samples.dtype == np.float32
    assert 0.3 < float(np.abs(samples).max()) < 0.4


@pytest.mark.parametrize(("fmt", "codec", "expect"), [("flac", "flac", "flac"), ("ogg", "libopus", "opus"),
                                                       ("mp4", "aac", "aac")])
def test_other_containers(fmt: str, codec: str, expect: str) -> None:
    data = encoded(fmt, codec)
    info = mc.probe_audio(data, parameter=A, max_seconds=5)
    assert info.codec == expect and info.channels == 1 and 0.9 < info.seconds < 1.2


def test_too_long_refused() -> None:
    with pytest.raises(InvalidRequest) as ei:
        mc.probe_audio(wav(6.0), parameter=A, max_seconds=5)
    assert err(ei)[0] == "audioTooLong"


def test_header_lying_about_duration_caught_by_decoded_count() -> None:
    """ADTS duration is estimated from the first frames' bitrate: 2 s of noise then 12 s of near-free
    silence declares ~2.5 s. Only counting decoded samples catches it."""
    rate = 48000
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        s.bit_rate = 128000
        noise = np.random.default_rng(0).uniform(-0.9, 0.9, 2 * rate)
        pcm = np.concatenate([noise, np.zeros(12 * rate)]).astype(np.float32)[None]
        fr = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        fr.rate = rate
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    data = buf.getvalue()
    with av.open(io.BytesIO(data), format="aac") as c:
        assert c.duration is not None and c.duration / 1e6 < 5  # the lie
    with pytest.raises(InvalidRequest) as ei:
        mc.probe_audio(data, parameter=A, max_seconds=5)
    assert err(ei)[0] == "audioTooLong" and "decoded" in err(ei)[1]
    assert mc.probe_audio(data, parameter=A, max_seconds=20).codec == "aac"


def test_video_file_as_audio_refused() -> None:
    with pytest.raises(InvalidRequest) as ei:
        mc.probe_audio(encoded("mp4", "aac", video=True), parameter=A, max_seconds=5)
    code, msg = err(ei)
    assert code == "invalidAudio" and "video" in msg


def test_m3u8_and_ffconcat_nested_files_refused(tmp_path: Path) -> None:
    seg = tmp_path / "secret.wav"
    seg.write_bytes(wav(1.0))
    m3u8 = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{seg}\n#EXT-X-ENDLIST\n".encode()
    concat = f"ffconcat version 1.0\nfile '{seg}'\n".encode()
    for data in (m3u8, concat, b"ID3" + m3u8, b"\xff\xfb" + concat):
        with pytest.raises(InvalidRequest) as ei:
            mc.probe_audio(data, parameter=A, max_seconds=5)
        assert err(ei)[0] == "invalidAudio"


def test_nested_open_hook_refuses() -> None:
    """The io_open hook used by the probe refuses any nested open even if a demuxer asks for one."""
    with pytest.raises(PermissionError):
        mc._refuse_nested_open("file:///etc/passwd", 0, {})


@pytest.mark.parametrize("data", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"OggS" + b"\x00" * 100, b"\x00" * 1000])
def test_garbage_audio_refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as ei:
        mc.probe_audio(data, parameter=A, max_seconds=5)
    assert err(ei)[0] == "invalidAudio"


def test_truncated_wav_refused_or_short() -> None:
    data = wav(1.0)
    with pytest.raises(InvalidRequest):
        mc.probe_audio(data[:50], parameter=A, max_seconds=5)


def test_wav_declared_length_is_capped() -> None:
    """A WAV whose header declares 7200 s but holds 2 s (FFmpeg reports the 2 s present) is refused
    by its declared length, as the README says."""
    data = bytearray(wav(2.0))
    at = data.index(b"data")
    data[at + 4:at + 8] = (7200 * 8000 * 2).to_bytes(4, "little")  # 8 kHz mono s16: 16000 bytes/s
    data[4:8] = (len(data) - 8 + 7198 * 16000).to_bytes(4, "little")
    with pytest.raises(InvalidRequest) as ei:
        mc.probe_audio(bytes(data), parameter=A, max_seconds=60)
    code, msg = err(ei)
    assert code == "audioTooLong" and "declares 7200.0 s" in msg
    assert mc.wav_declared_seconds(bytes(data)) == 7200
    assert mc.probe_audio(wav(2.0), parameter=A, max_seconds=60).seconds == 2.0  # honest headers pass


def test_large_images_are_scaled_to_max_side_keeping_aspect() -> None:
    """Stored images are at most ``max_side`` on the long side (Runware's 2048), aspect kept, for
    every path: greyscale PNG (shrunk before the RGB conversion), RGB JPEG (DCT draft), palette."""
    grey = Image.fromarray((np.arange(3000 * 1000) % 251).astype(np.uint8).reshape(1000, 3000), "L")
    for data, want in ((png(grey), (2048, 683)), (jpeg(gradient(1200, 3000)), (819, 2048)),
                       (png(gradient(2500, 500).convert("P")), (2048, 410)), (png(gradient(100, 80)), (100, 80))):
        out = mc.decode_image(data, parameter=P, max_pixels=10**8, max_side=2048)
        assert out.mode == "RGB" and out.size == want, (out.size, want)
    assert mc.decode_image(png(grey), parameter=P, max_pixels=10**8).size == (3000, 1000)  # no cap asked
