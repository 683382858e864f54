#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/corpus/<target>/), generated: no dataset images.

  plan_manifest  the committed tiny plan's mien.json, and a detector plan's
  plan_file      a minimal plan (the tiny plan's manifest over a one-file graph), as a tar
  image_decode   small synthetic pictures as JPEG (baseline, progressive, EXIF-rotated), PNG (RGB, palette,
                 16-bit grey, grey+alpha), BMP, TIFF (LZW, palette)
  camera_frame   a 7-byte header (format, width, height, stride, matrix, range) and a frame for each
                 pixel format, MJPEG with and without its Huffman tables
  video_file     a kind byte (0 Y4M, 1 MJPEG, 2 raw YUYV 16x8) and a short video of that kind

Needs Pillow (tools/requirements.txt). Run: python tools/make_fuzz_corpus.py
"""
import io
import json
import os
import struct
import tarfile
import zlib

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def picture(width, height, mode="RGB"):
    """A gradient with a disc: edges and colours for the decoders, no content from anywhere."""
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    for y in range(height):
        for x in range(width):
            inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
            pixels[x, y] = (x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 200 if inside else 40)
    return image.convert(mode) if mode != "RGB" else image


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def manifest_from_plan(path):
    with tarfile.open(path) as tar:
        return tar.extractfile("mien.json").read()


def plans():
    tiny = manifest_from_plan(os.path.join(ROOT, "models", "tiny-vit", "tiny-vit-int8.mien"))
    detector = manifest_from_plan(os.path.join(ROOT, "models", "blazeface", "blazeface-short.mien"))
    write("plan_manifest", "tiny-vit.json", tiny)
    write("plan_manifest", "blazeface-short.json", detector)
    # A minimal plan: the tiny manifest listing one small graph file with its true size and CRC-32.
    graph = b"version 1.0;\ngraph g( input ) -> ( output ) {\n  output = input;\n}\n"
    manifest = json.loads(tiny)
    manifest["files"] = [{"path": "graph.nnef", "size": len(graph), "crc32": "%08x" % (zlib.crc32(graph) & 0xFFFFFFFF)}]
    text = json.dumps(manifest, indent=2).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in [("mien.json", text), ("graph.nnef", graph)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    write("plan_file", "minimal.mien", buffer.getvalue())


def images():
    rgb = picture(24, 16)
    write("image_decode", "baseline.jpg", encoded(rgb, "JPEG", quality=80))
    write("image_decode", "progressive.jpg", encoded(rgb, "JPEG", quality=80, progressive=True))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    write("image_decode", "exif-rotated.jpg", encoded(rgb, "JPEG", quality=80, exif=exif.tobytes()))
    write("image_decode", "rgb.png", encoded(rgb, "PNG"))
    write("image_decode", "palette.png", encoded(rgb.convert("P"), "PNG"))
    write("image_decode", "grey16.png", encoded(picture(12, 8, "L").convert("I;16"), "PNG"))
    write("image_decode", "grey-alpha.png", encoded(picture(12, 8, "LA"), "PNG"))
    write("image_decode", "rgb.bmp", encoded(rgb, "BMP"))
    write("image_decode", "lzw.tif", encoded(rgb, "TIFF", compression="tiff_lzw"))
    write("image_decode", "palette.tif", encoded(rgb.convert("P"), "TIFF"))


def header(fmt, width, height, stride, matrix=0, value_range=0):
    return bytes([fmt, width, height]) + struct.pack("<H", stride) + bytes([matrix, value_range])


def strip_huffman_tables(jpeg):
    """The JPEG without its DHT segments: many webcams send MJPEG frames like that."""
    out, i = bytearray(jpeg[:2]), 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if marker == 0xDA:
            out += jpeg[i:]
            break
        if marker != 0xC4:
            out += jpeg[i : i + 2 + length]
        i += 2 + length
    return bytes(out)


def camera_frames():
    width, height = 16, 8
    rgb = picture(width, height).tobytes()
    yuyv = bytes(128 if i % 2 else 90 for i in range(width * height * 2))
    planes = bytes(range(256)) * (width * height * 3 // 2 // 256 + 1)
    # Format indices as mien_fuzz::FORMATS orders them: YUYV, UYVY, NV12, GREY, RGB24, BGR24, I420, MJPEG.
    write("camera_frame", "yuyv", header(0, width, height, width * 2) + yuyv)
    write("camera_frame", "uyvy-bt709-full", header(1, width, height, width * 2, 1, 1) + yuyv)
    write("camera_frame", "nv12", header(2, width, height, width) + planes[: width * height * 3 // 2])
    write("camera_frame", "grey-padded-stride", header(3, width, height, width + 8) + bytes((width + 8) * height))
    write("camera_frame", "rgb24", header(4, width, height, width * 3) + rgb)
    write("camera_frame", "bgr24", header(5, width, height, width * 3) + rgb)
    write("camera_frame", "i420", header(6, width, height, width) + planes[: width * height * 3 // 2])
    jpeg = encoded(picture(width, height), "JPEG", quality=75)
    write("camera_frame", "mjpeg", header(7, width, height, 0) + jpeg)
    write("camera_frame", "mjpeg-no-huffman", header(7, width, height, 0) + strip_huffman_tables(jpeg))


def videos():
    width, height = 16, 8
    frame = bytes(range(width * height)) + bytes([128]) * (width * height // 2)
    y4m = b"YUV4MPEG2 W16 H8 F10:1 Ip A1:1 C420jpeg\n" + (b"FRAME\n" + frame) * 3
    write("video_file", "y4m", bytes([0]) + y4m)
    jpeg = encoded(picture(width, height), "JPEG", quality=75)
    write("video_file", "mjpeg", bytes([1]) + jpeg * 3)
    write("video_file", "raw-yuyv", bytes([2]) + bytes(width * height * 2) * 2)


def http_requests():
    """Requests to every endpoint, with and without the token (mien_serve::fuzzing::TOKEN)."""
    token = "fuzz-token"
    for name, path, headers in [
        ("page", "/", ""),
        ("health", "/api/v1/health", ""),
        ("latest-header", "/api/v1/latest", f"Authorization: Bearer {token}\r\n"),
        ("latest-no-token", "/api/v1/latest", ""),
        ("events-query", f"/api/v1/events?access_token={token}", "Accept: text/event-stream\r\n"),
        ("preview", f"/api/v1/preview.jpg?access_token={token}", ""),
        ("metrics", "/metrics", f"Authorization: Bearer {token}\r\n"),
        ("cors", "/api/v1/latest", f"Origin: http://kiosk.local\r\nAuthorization: Bearer {token}\r\n"),
        ("not-found", "/nothing/here?x=%zz", ""),
    ]:
        write("http_request", name, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{headers}\r\n".encode())
    write("http_request", "two-requests", b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n" * 2)
    write("http_request", "post-body", b"POST /api/v1/latest HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
    write("http_request", "foreign-host", b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")


def mqtt_messages():
    """A broker URL, a device id, a prefix, then frames (see mien_fuzz::mqtt_messages)."""
    def frame(faces, ended=0, clock=0, step=40):
        header = bytes([(clock << 6) | (ended << 3) | len(faces)]) + struct.pack("<Hxxxxxx", step)
        return header + b"".join(bytes([track, label]) + struct.pack("<f", score) for track, label, score in faces)
    run = (frame([(1, 0, 0.9)]) + frame([(1, 1, 0.7), (2, 0, 0.5)]) + frame([], ended=2)
           + frame([(3, 3, float("nan"))]))
    write("mqtt_messages", "run", b"mqtts://user:secret@broker.local:8883\0Lobby 1\0mien\0" + run)
    write("mqtt_messages", "plain", b"mqtt://broker\0kiosk\0home/mien\0" + frame([(7, 4, 1.0)]))
    # A clock that jumps to the end of time and back (a camera's timestamps are not to be trusted).
    def jump(value):
        return bytes([(1 << 6) | 1, *struct.pack("<d", value), 5, 1, *struct.pack("<f", 0.5)])
    write("mqtt_messages", "clock-jumps", b"mqtt://b\0k\0p\0" + jump(0.0) + jump(float("inf")) + jump(-1e308) + jump(1e308))


def config_files():
    """The shipped mien.toml, every kind of key set, and the mistakes the parser names."""
    with open(os.path.join(ROOT, "crates", "mien", "debian", "mien.toml"), "rb") as f:
        write("config_file", "shipped", f.read())
    write("config_file", "every-kind", b"""[models]
plan = "a.mien"
threads = 2
[source]
input = ["x.png", "y.png"]
loop = true
[tracking]
track = false
[http]
listen = "127.0.0.1:9000"
preview = true
label_names = { happy = "fr\xc3\xb6hlich" }
[mqtt]
url = "mqtt://broker"
ha_discovery = false
""")
    write("config_file", "mistakes", b"min_face = 30\n[detecter]\nmin_fase = 'x'\n[http]\nlisten = [1]\n")


if __name__ == "__main__":
    plans()
    images()
    camera_frames()
    videos()
    http_requests()
    mqtt_messages()
    config_files()
    for target in sorted(os.listdir(OUT)):
        print(target, len(os.listdir(os.path.join(OUT, target))), "seeds")
