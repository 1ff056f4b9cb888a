"""coco.py: the padded crop box, and one clear line for every kind of bad COCO input."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from symclr_ft.data.coco import (
    ANNOTATIONS_FILE,
    check_image_files,
    load_coco,
    load_export,
    open_image,
    padded_crop_box,
    to_rgb,
)
from symclr_ft.errors import UserError

# --------------------------------------------------------------------------- padded_crop_box


@pytest.mark.parametrize(
    "bbox, size, padding, expected",
    [
        # 10% of w=30 is 3 px left and right, 10% of h=40 is 4 px top and bottom.
        ([10, 20, 30, 40], (100, 100), 0.1, (7, 16, 43, 64)),
        ([10, 20, 30, 40], (100, 100), 0.0, (10, 20, 40, 60)),
        # 0.25 * 10 = 2.5 px: rounded outwards to whole pixels.
        ([10, 10, 10, 10], (100, 100), 0.25, (7, 7, 23, 23)),
        # padding crosses the image border: clipped.
        ([1, 2, 50, 20], (60, 40), 0.1, (0, 0, 56, 24)),
        ([40, 30, 20, 10], (60, 40), 0.5, (30, 25, 60, 40)),
        # float box: floor of the start, ceil of the end.
        ([10.4, 5.6, 9.2, 4.8], (100, 100), 0.0, (10, 5, 20, 11)),
        # the whole image
        ([0, 0, 64, 48], (64, 48), 0.1, (0, 0, 64, 48)),
    ],
)
def test_padded_crop_box_matches_hand_computed_values(bbox, size, padding, expected):
    assert padded_crop_box(bbox, *size, padding=padding) == expected


def test_padded_crop_box_never_empty_for_a_sliver_on_the_last_column():
    assert padded_crop_box([99.9999999, 0, 0.0000001, 5], 100, 10, 0.0) == (99, 0, 100, 5)


def test_padded_crop_box_refuses_negative_padding():
    with pytest.raises(ValueError):
        padded_crop_box([0, 0, 5, 5], 10, 10, padding=-0.1)


@settings(max_examples=150, deadline=None)
@given(
    w_img=st.integers(1, 300),
    h_img=st.integers(1, 300),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    fw=st.floats(0.001, 1),
    fh=st.floats(0.001, 1),
    padding=st.floats(0, 1),
)
def test_padded_crop_box_contains_the_box_and_stays_in_the_image(w_img, h_img, fx, fy, fw, fh, padding):
    x, y = fx * w_img * 0.99, fy * h_img * 0.99
    w, h = max(fw * (w_img - x), 1e-3), max(fh * (h_img - y), 1e-3)
    x0, y0, x1, y1 = padded_crop_box([x, y, w, h], w_img, h_img, padding)
    assert 0 <= x0 < x1 <= w_img and 0 <= y0 < y1 <= h_img
    assert x0 <= math.floor(x + 1e-6) and y0 <= math.floor(y + 1e-6)
    assert x1 >= min(w_img, math.ceil(x + w - 1e-6)) and y1 >= min(h_img, math.ceil(y + h - 1e-6))


# --------------------------------------------------------------------------- a valid export

WIDTH, HEIGHT = 40, 30


def _coco() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "b.png", "width": WIDTH, "height": HEIGHT},
            {"id": 3, "file_name": "a.png", "width": WIDTH, "height": HEIGHT},
        ],
        "annotations": [
            {"id": 17, "image_id": 7, "category_id": 2, "bbox": [5, 5, 10, 8]},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 3, "category_id": 2, "bbox": [20, 10, 15, 15]},
        ],
        "categories": [
            {"id": 0, "name": "parent"},
            {"id": 1, "name": "bell"},
            {"id": 2, "name": "horn"},
        ],
    }


def _write_split(folder: Path, coco: dict, images: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        for record in _coco()["images"]:
            Image.new("RGB", (WIDTH, HEIGHT), (10, 20, 30)).save(folder / record["file_name"])
    path = folder / ANNOTATIONS_FILE
    path.write_text(json.dumps(coco))
    return path


def test_valid_split_is_read_into_sorted_dataclasses(tmp_path):
    split = load_coco(_write_split(tmp_path, _coco()), "valid")
    assert split.name == "valid" and split.root == tmp_path
    assert set(split.images) == {3, 7} and split.images[3].file_name == "a.png"
    assert {c.id: c.name for c in split.categories.values()} == {0: "parent", 1: "bell", 2: "horn"}
    # by image file name (a.png before b.png), then annotation id
    assert [a.id for a in split.annotations] == [2, 4, 17]
    assert split.annotations[0].bbox == (20, 10, 15, 15)
    assert [(img.id, [a.id for a in anns]) for img, anns in split.annotations_by_image()] == [
        (3, [2, 4]),
        (7, [17]),
    ]


def test_box_within_one_pixel_of_the_border_is_clipped(tmp_path):
    coco = _coco()
    coco["annotations"][0]["bbox"] = [-0.6, 20.5, 10, 10.3]  # 0.6 left of and 0.8 below the image
    split = load_coco(_write_split(tmp_path, coco))
    (ann,) = [a for a in split.annotations if a.id == 17]
    assert ann.bbox == pytest.approx((0, 20.5, 9.4, 9.5))


def _set(path, value):
    """A mutation of the valid COCO dict: set ``coco[path...] = value`` (delete on ...)."""

    def mutate(coco):
        target = coco
        for step in path[:-1]:
            target = target[step]
        if value is ...:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


def _append(key, record):
    return lambda coco: coco[key].append(record)


BAD_RECORDS = [
    # (mutation, words the message must contain)
    (_set(["images"], ...), ["missing key 'images'"]),
    (_set(["annotations"], ...), ["missing key 'annotations'"]),
    (_set(["categories"], ...), ["missing key 'categories'"]),
    (_set(["images"], {"id": 1}), ["'images' must be a list"]),
    (_set(["annotations"], "none"), ["'annotations' must be a list"]),
    (_set(["images", 0, "width"], ...), ["image id 7", "missing key 'width'"]),
    (_set(["images", 0, "id"], "7"), ["images[0]", "'id' must be an integer"]),
    (_set(["images", 1, "height"], 0), ["image id 3", "'height' must be a positive integer"]),
    (_set(["images", 1, "file_name"], 5), ["image id 3", "'file_name' must be a string"]),
    (_set(["images", 1], "a.png"), ["images[1]", "expected an object"]),
    (_set(["annotations", 1, "bbox"], ...), ["annotation id 4", "missing key 'bbox'"]),
    (_set(["annotations", 1, "image_id"], 3.0), ["annotation id 4", "'image_id' must be an integer"]),
    (_set(["annotations", 1, "category_id"], True), ["annotation id 4", "'category_id' must be an integer"]),
    (_set(["categories", 1, "name"], ...), ["category id 1", "missing key 'name'"]),
    (_set(["categories", 1, "name"], 12), ["category id 1", "'name' must be a string"]),
    (_set(["annotations", 0, "image_id"], 99), ["annotation id 17", "image_id 99 is not in 'images'"]),
    (_set(["annotations", 0, "category_id"], 42), ["annotation id 17", "category_id 42 is not in 'categories'"]),
    (_set(["annotations", 0, "bbox"], [1, 2, 3]), ["annotation id 17", "bbox must be 4 numbers"]),
    (_set(["annotations", 0, "bbox"], [1, 2, "3", 4]), ["annotation id 17", "bbox must be 4 numbers"]),
    (_set(["annotations", 0, "bbox"], [1, 2, 3, True]), ["annotation id 17", "bbox must be 4 numbers"]),
    (_set(["annotations", 0, "bbox"], {"x": 1}), ["annotation id 17", "bbox must be 4 numbers"]),
    (_set(["annotations", 0, "bbox"], [1, 2, float("nan"), 4]), ["annotation id 17", "not a finite number"]),
    (_set(["annotations", 0, "bbox"], [1, float("inf"), 3, 4]), ["annotation id 17", "not a finite number"]),
    (_set(["annotations", 0, "bbox"], [1, 2, 0, 4]), ["annotation id 17", "zero or negative width or height"]),
    (_set(["annotations", 0, "bbox"], [1, 2, 3, -4]), ["annotation id 17", "zero or negative width or height"]),
    (_set(["annotations", 0, "bbox"], [35, 5, 7, 4]), ["annotation id 17", "outside its image b.png (40x30)"]),
    (_set(["annotations", 0, "bbox"], [-2, 5, 7, 4]), ["annotation id 17", "outside its image"]),
    (_set(["annotations", 0, "bbox"], [40.5, 5, 0.4, 4]), ["annotation id 17", "no area inside"]),
    (_append("images", {"id": 7, "file_name": "c.png", "width": 4, "height": 4}), ["image id 7", "duplicate image id"]),
    (_append("images", {"id": 8, "file_name": "a.png", "width": 4, "height": 4}), ["image id 8", "listed twice"]),
    (_append("annotations", {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]}), ["annotation id 4", "duplicate annotation id"]),
    (_append("categories", {"id": 2, "name": "other"}), ["category id 2", "duplicate category id"]),
    (_set(["images", 1, "file_name"], "/etc/passwd"), ["image id 3", "absolute path"]),
    (_set(["images", 1, "file_name"], "../a.png"), ["image id 3", "points outside its folder"]),
    (_set(["images", 1, "file_name"], "sub/../../a.png"), ["image id 3", "points outside its folder"]),
    (_set(["images", 1, "file_name"], ""), ["image id 3", "file_name is empty"]),
    (_set(["images", 1, "file_name"], "..\\a.png"), ["image id 3", "points outside its folder"]),
    (_set(["images", 1, "file_name"], "C:\\data\\a.png"), ["image id 3", "absolute path"]),
    (_set(["images", 1, "file_name"], "\\\\server\\share\\a.png"), ["image id 3", "absolute path"]),
    (_set(["images", 1, "file_name"], "a.png\x00.jpg"), ["image id 3", "not a valid path"]),
    # numbers beyond the float range must not crash the checks
    (_set(["images", 0, "width"], 10**400), ["image id 7", "'width' must be a positive integer"]),
    (_set(["annotations", 0, "bbox"], [1, 2, 10**400, 4]), ["annotation id 17", "not a finite number"]),
    # classes are reported by name: two categories with one name would be merged silently
    (_append("categories", {"id": 5, "name": "bell"}), ["category id 5", "'bell' is also the name of category id 1"]),
]  # fmt: skip


@pytest.mark.parametrize("mutate, words", BAD_RECORDS)
def test_bad_record_is_one_line_naming_file_record_and_problem(tmp_path, mutate, words):
    coco = copy.deepcopy(_coco())
    mutate(coco)
    path = _write_split(tmp_path, coco, images=False)
    with pytest.raises(UserError) as info:
        load_coco(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message


def test_file_name_in_a_subfolder_is_allowed(tmp_path):
    coco = _coco()
    coco["images"][1]["file_name"] = "sub/../a.png"  # stays inside the split folder
    assert load_coco(_write_split(tmp_path, coco)).images[3].file_name == "sub/../a.png"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"{not json", ["not valid JSON", "line 1"]),
        (b"\xff\xfe\x00garbage", ["not valid JSON"]),
        (b"[1, 2, 3]", ["expected a COCO object", "got a JSON list"]),
        (b"", ["not valid JSON"]),
        pytest.param(
            b'{"images": ' + b"1" * 5000 + b"}", ["not valid JSON", "4300 digits"],
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="no digit limit"),
        ),
        (b"[" * 100000, ["not valid JSON", "nested too deeply"]),
    ],
)
def test_unreadable_json_is_one_line(tmp_path, content, words):
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_coco(path)
    assert str(info.value).startswith(f"{path}: ")
    assert all(w in str(info.value) for w in words)


def test_missing_json_and_missing_export(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(UserError, match=r"nope: not found"):
        load_export(tmp_path / "nope")


def test_folder_without_split_folders_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="no train/, valid/ or test/ folder"):
        load_export(tmp_path)


def test_split_folder_without_its_json_is_refused(tmp_path):
    _write_split(tmp_path / "train", _coco())
    (tmp_path / "valid").mkdir()
    with pytest.raises(UserError) as info:
        load_export(tmp_path)
    assert str(tmp_path / "valid") in str(info.value) and ANNOTATIONS_FILE in str(info.value)


def test_export_with_a_subset_of_splits(tmp_path):
    _write_split(tmp_path / "test", _coco())
    _write_split(tmp_path / "train", _coco())
    export = load_export(tmp_path)
    assert [s.name for s in export.splits] == ["train", "test"]
    assert export.splits[1].root == tmp_path / "test"


def test_single_json_is_one_train_split_relative_to_its_folder(tmp_path):
    path = _write_split(tmp_path / "x", _coco())
    renamed = path.rename(tmp_path / "x" / "instances.json")
    export = load_export(renamed)
    assert [s.name for s in export.splits] == ["train"]
    assert export.splits[0].root == tmp_path / "x"
    check_image_files(export.splits[0])  # a.png and b.png are found beside the json


def test_categories_that_disagree_between_splits_name_both_files(tmp_path):
    _write_split(tmp_path / "train", _coco())
    other = _coco()
    other["categories"][2]["name"] = "siren"
    valid_json = _write_split(tmp_path / "valid", other)
    with pytest.raises(UserError) as info:
        load_export(tmp_path)
    message = str(info.value)
    assert str(valid_json) in message and str(tmp_path / "train" / ANNOTATIONS_FILE) in message
    assert "category id 2" in message and "'siren'" in message and "'horn'" in message


# --------------------------------------------------------------------------- image files


def _split_with_images(tmp_path):
    path = _write_split(tmp_path, _coco())
    split = load_coco(path)
    return path, split, split.images[3], tmp_path / "a.png"


def test_open_image_gives_rgb_pixels(tmp_path):
    _, split, image, file = _split_with_images(tmp_path)
    Image.new("L", (WIDTH, HEIGHT), 77).save(file)  # grey images become RGB
    pixels = open_image(split, image)
    assert pixels.mode == "RGB" and pixels.size == (WIDTH, HEIGHT)
    assert pixels.getpixel((0, 0)) == (77, 77, 77)


def test_missing_image_file(tmp_path):
    path, split, image, file = _split_with_images(tmp_path)
    file.unlink()
    for call in (lambda: check_image_files(split), lambda: open_image(split, image)):
        with pytest.raises(UserError) as info:
            call()
        assert str(info.value).startswith(f"{path}: image id 3: ")
        assert "a.png not found" in str(info.value)


def test_file_that_is_not_an_image(tmp_path):
    path, split, image, file = _split_with_images(tmp_path)
    file.write_text("hello")
    with pytest.raises(UserError) as info:
        open_image(split, image)
    assert str(info.value).startswith(f"{path}: image id 3: ") and "not an image" in str(info.value)


def test_truncated_image(tmp_path):
    path, split, image, file = _split_with_images(tmp_path)
    Image.effect_noise((WIDTH, HEIGHT), 50).convert("RGB").save(file, format="JPEG")
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(UserError) as info:
        open_image(split, image)
    assert str(info.value).startswith(f"{path}: image id 3: ") and "cannot" in str(info.value)


def test_unreadable_image_path(tmp_path):
    path, split, image, file = _split_with_images(tmp_path)
    file.unlink()
    file.mkdir()  # a folder where the image should be
    with pytest.raises(UserError) as info:
        open_image(split, image)
    assert str(info.value).startswith(f"{path}: image id 3: ") and "cannot read" in str(info.value)


def test_image_size_must_match_the_json(tmp_path):
    path, split, image, file = _split_with_images(tmp_path)
    Image.new("RGB", (WIDTH + 1, HEIGHT)).save(file)
    with pytest.raises(UserError) as info:
        open_image(split, image)
    assert str(info.value) == (
        f"{path}: image id 3: image file a.png is 41x30 but the json says 40x30"
    )


def test_a_file_name_too_long_for_the_file_system_is_one_line(tmp_path):
    coco = _coco()
    coco["images"][1]["file_name"] = "a" * 300 + ".png"  # ENAMETOOLONG on every common file system
    path = _write_split(tmp_path / "split", coco, images=False)
    with pytest.raises(UserError) as info:
        check_image_files(load_coco(path))
    message = str(info.value)
    assert message.startswith(f"{path}: image id 3: image file aaa") and "\n" not in message
    assert message.endswith("cannot be looked up (File name too long)")


# --------------------------------------------------------------------------- image modes

# A drawing: dark ink (a cross) on a light background.
INK = np.full((HEIGHT, WIDTH), 230, dtype=np.uint8)
INK[HEIGHT // 2, :] = INK[:, WIDTH // 2] = 20


def _saved(tmp_path, image: Image.Image, fmt: str = "PNG") -> Image.Image:
    """``image`` written to a file and read back, as open_image gets it."""
    file = tmp_path / f"drawing.{fmt.lower()}"
    image.save(file, format=fmt)
    reopened = Image.open(file)
    reopened.load()
    return reopened


def _grey(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    rgb = np.asarray(image).astype(int)
    assert (rgb == rgb[..., :1]).all()  # grey stays grey
    return rgb[..., 0]


def test_16_bit_drawing_is_scaled_not_clipped_to_white(tmp_path):
    sixteen = _saved(tmp_path, Image.fromarray(INK.astype(np.uint16) * 257))
    assert sixteen.mode == "I;16"
    assert np.array_equal(_grey(to_rgb(sixteen)), INK)


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_ink_only_in_the_alpha_channel_becomes_dark_ink_on_white(tmp_path, colour):
    # colour channels constant, the drawing is the alpha channel (opaque where the ink is)
    alpha = 255 - INK
    rgba = np.dstack([np.full_like(INK, colour)] * 3 + [alpha])
    drawing = _saved(tmp_path, Image.fromarray(rgba, mode="RGBA"))
    assert np.array_equal(_grey(to_rgb(drawing)), INK)  # 255 - alpha: dark ink on white


def test_alpha_is_composited_on_white(tmp_path):
    la = _saved(tmp_path, Image.fromarray(np.dstack([INK, np.full_like(INK, 128)]), mode="LA"))
    expected = np.rint(INK.astype(float) * 128 / 255 + 255 * 127 / 255)
    assert np.abs(_grey(to_rgb(la)) - expected).max() <= 1
    opaque = Image.fromarray(np.dstack([INK] * 3 + [np.full_like(INK, 255)]), mode="RGBA")
    assert to_rgb(opaque).tobytes() == opaque.convert("RGB").tobytes()
    # fully transparent, but the colours hold the drawing: the colours are kept
    clear = Image.fromarray(np.dstack([INK] * 3 + [np.zeros_like(INK)]), mode="RGBA")
    assert np.array_equal(_grey(to_rgb(clear)), INK)


def test_palette_with_a_transparent_colour(tmp_path):
    palette = Image.fromarray(INK).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))  # the paper colour is transparent
    grey = _grey(to_rgb(_saved(tmp_path, palette)))
    assert grey[0, 0] == 255 and grey[HEIGHT // 2, 1] == 20


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(INK).convert("1", dither=Image.Dither.NONE),
        Image.fromarray(INK).convert("CMYK"),
        Image.fromarray(INK).convert("P"),
        Image.fromarray(INK).convert("YCbCr"),
        Image.fromarray(INK.astype(np.int32), mode="I"),  # an I image of 8-bit values
        Image.fromarray(INK.astype(np.int32) * 257, mode="I"),  # 16-bit values in I
        Image.fromarray(INK.astype(np.float32), mode="F"),
        Image.fromarray(INK.astype(np.float32) / 255, mode="F"),  # 0..1 floats
    ],
    ids=["1", "CMYK", "P", "YCbCr", "I-8bit", "I-16bit", "F-0-255", "F-0-1"],
)
def test_other_modes_keep_the_drawing(image):
    grey = _grey(to_rgb(image))
    threshold = 128
    assert np.array_equal(grey < threshold, INK < threshold)  # the ink is where it was


@pytest.mark.parametrize(
    "values, words",
    [
        (np.full((4, 4), 70000, dtype=np.int32), "has values 70000..70000, outside 0..65535"),
        (np.full((4, 4), -3, dtype=np.int32), "outside 0..65535"),
        (np.full((4, 4), np.nan, dtype=np.float32), "not finite"),
    ],
)
def test_values_that_cannot_be_scaled_are_refused(values, words):
    with pytest.raises(UserError) as info:
        to_rgb(Image.fromarray(values), "drawing.tif")
    assert str(info.value).startswith("drawing.tif: image mode ") and words in str(info.value)


def test_open_image_and_make_shards_use_the_conversion(tmp_path):
    from symclr_ft.data.shards import make_shards

    from conftest import odd_images

    path, split, image, file = _split_with_images(tmp_path / "export" / "train")
    odd = odd_images(INK)
    odd["16-bit"].save(file)  # a.png: 16-bit
    odd["alpha-only"].save(file.with_name("b.png"))  # b.png: alpha-only ink
    assert np.array_equal(_grey(open_image(split, image)), INK)
    make_shards(tmp_path / "export", tmp_path / "shards", padding=0)
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    keys = sorted({name.split(".")[0] for name in members})
    assert len(keys) == 3
    for key in keys:  # every crop is the drawing's ink on its paper, in both files
        x0, y0, x1, y1 = json.loads(members[f"{key}.json"])["crop"]
        crop = Image.open(io.BytesIO(members[f"{key}.png"]))
        assert np.array_equal(_grey(crop), INK[y0:y1, x0:x1])
