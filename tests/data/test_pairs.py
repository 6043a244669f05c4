"""gcl_hf.data.load_image_text_pairs: local folders, JSON lists, Hub names, Datasets; errors."""

from __future__ import annotations

import json
import logging
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from gcl_hf.data import DataFormatError, DataSourceError, LoadReport, load_image_text_pairs
from gcl_hf.data.images import ImageLoadError


def _png(path, value: int = 0, size=(6, 5)) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return str(path)


def _llava(i: int, caption: str | None = None, image: str | None = None) -> dict:
    return {
        "id": f"{i:09d}",
        "image": image if image is not None else f"{i // 2:05d}/{i:09d}.png",
        "conversations": [
            {"from": "human", "value": "<image>\nGive a brief description of the image."},
            {"from": "gpt", "value": caption if caption is not None else f"caption {i}"},
        ],
    }


@pytest.fixture
def llava_dir(tmp_path):
    """A miniature LCS-558K: blip_laion_cc_sbu_558k.json + images/<shard>/<id>.png."""
    records = [_llava(i) for i in range(4)]
    for i, r in enumerate(records):
        _png(tmp_path / "images" / r["image"], value=40 * i)
    (tmp_path / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    return tmp_path


def _write_json(tmp_path, records, name="data.json") -> str:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return str(path)


# ----------------------------------------------------------------------------- imagefolder


def test_imagefolder_with_metadata_jsonl(tmp_path):
    for i in range(3):
        _png(tmp_path / "pics" / f"{i}.png", value=i)
    (tmp_path / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"pics/{i}.png", "caption": f"a picture {i}", "extra": i}) + "\n"
                for i in range(3)))
    ds = load_image_text_pairs(tmp_path, caption_column="caption")
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["image", "text"]
    assert ds.features["image"] == datasets.Value("string")  # lazy: a path, decoded by the collator
    assert ds["text"] == ["a picture 0", "a picture 1", "a picture 2"]
    assert ds["image"] == [str(tmp_path / "pics" / f"{i}.png") for i in range(3)]


def test_imagefolder_csv_split_folder_and_nested_metadata(tmp_path):
    train = tmp_path / "train"
    _png(train / "a" / "x.png")
    _png(train / "b" / "y.png")
    (train / "a" / "metadata.csv").write_text('file_name,text\nx.png,"a cat, sitting"\n')
    (train / "b" / "metadata.csv").write_text("file_name,text\ny.png,a dog\n")
    _png(tmp_path / "test" / "z.png")
    (tmp_path / "test" / "metadata.csv").write_text("file_name,text\nz.png,not in train\n")
    ds = load_image_text_pairs(tmp_path, split="train")
    # each metadata file's names are relative to its own folder
    assert ds["image"] == [str(train / "a" / "x.png"), str(train / "b" / "y.png")]
    assert ds["text"] == ["a cat, sitting", "a dog"]
    with pytest.raises(DataSourceError, match=r"no 'validation' split folder \(found \['test', 'train'\]\)"):
        load_image_text_pairs(tmp_path, split="validation")


def test_imagefolder_without_metadata_is_a_clear_error(tmp_path):
    _png(tmp_path / "x.png")
    with pytest.raises(DataSourceError, match=r"metadata\.jsonl or metadata\.csv"):
        load_image_text_pairs(tmp_path)


def test_imagefolder_csv_empty_caption_names_file_line_and_field(tmp_path):
    _png(tmp_path / "x.png")
    (tmp_path / "metadata.csv").write_text("file_name,text\nx.png,fine\nx.png,   \n")
    with pytest.raises(DataFormatError) as info:
        load_image_text_pairs(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "metadata.csv") in message and "line 3" in message
    assert "'text'" in message and "empty caption" in message


# ----------------------------------------------------------------------------- LLaVA / JSON lists


def test_llava_json_caption_from_conversations(llava_dir):
    ds = load_image_text_pairs(llava_dir / "blip_laion_cc_sbu_558k.json", image_root=llava_dir / "images")
    assert ds.column_names == ["image", "text"]
    assert ds["text"] == [f"caption {i}" for i in range(4)]
    assert ds[1]["image"] == str(llava_dir / "images" / "00000" / "000000001.png")
    assert all(os.path.isfile(p) for p in ds["image"])


def test_llava_defaults_root_to_json_folder_and_keeps_ids(tmp_path):
    path = _write_json(tmp_path, [_llava(0), _llava(1, image="/abs/x.png")])
    ds = load_image_text_pairs(path, id_column="id")
    assert ds.column_names == ["image", "text", "id"]
    assert ds["image"] == [str(tmp_path / "00000" / "000000000.png"), "/abs/x.png"]  # absolute stays
    assert ds["id"] == ["000000000", "000000001"]


def test_llava_caption_turn_and_image_token_removed(tmp_path):
    path = _write_json(tmp_path, [_llava(0)])
    ds = load_image_text_pairs(path, caption_turn=0)
    assert ds["text"] == ["Give a brief description of the image."]


def test_plain_jsonl_with_column_renaming(tmp_path):
    records = [{"img": f"i{i}.png", "caption": f"text {i}", "other": 1} for i in range(3)]
    path = _write_json(tmp_path, records, name="pairs.jsonl")
    ds = load_image_text_pairs(path, image_column="img", caption_column="caption", image_root="/data")
    assert ds.column_names == ["image", "text"]
    assert ds["image"] == ["/data/i0.png", "/data/i1.png", "/data/i2.png"]
    assert ds["text"] == ["text 0", "text 1", "text 2"]


BAD_LLAVA = [
    ({"id": "b", "image": "x.png"}, "'conversations'", "missing"),
    ({"id": "b", "image": "x.png", "conversations": [{"from": "human", "value": "hi"}]},
     "'conversations[1]'", "caption turn 1 missing"),
    (_llava(2, caption="  <image>\n "), "'conversations[1].value'", "empty caption"),
    ({"id": "b", "conversations": _llava(2)["conversations"]}, "'image'", "missing image path"),
    (_llava(2, image=""), "'image'", "empty image path"),
    ({"id": "b", "image": "x.png", "conversations": [{}, {"from": "gpt", "value": 7}]},
     "'conversations[1].value'", "must be a string"),
    ({"id": "b", "image": "x.png", "conversations": "text"}, "'conversations'", "expected a list"),
    ("just a string", "", "expected a JSON object"),
]


@pytest.mark.parametrize("bad,field,reason", BAD_LLAVA)
def test_bad_llava_record_names_file_record_and_field(tmp_path, bad, field, reason):
    path = _write_json(tmp_path, [_llava(0), _llava(1), bad, _llava(3)])
    with pytest.raises(DataFormatError) as info:
        load_image_text_pairs(path)
    message = str(info.value)
    assert path in message and "record 2" in message
    assert field in message and reason in message
    if isinstance(bad, dict):
        assert "id 'b'" in message or "id '000000002'" in message


def test_skip_counts_reports_and_logs(tmp_path, caplog):
    records = [_llava(0), {"image": "x.png"}, _llava(2, caption=""), _llava(3), _llava(4, image="")]
    path = _write_json(tmp_path, records, name="lcs.jsonl")
    with caplog.at_level(logging.WARNING, logger="gcl_hf.data"):
        ds, report = load_image_text_pairs(path, errors="skip", return_report=True, id_column="id")
    assert ds["id"] == ["000000000", "000000003"]
    assert isinstance(report, LoadReport)
    assert (report.num_records, report.num_skipped, report.num_kept) == (5, 3, 2)
    assert [r.index for r in report.skipped] == [1, 2, 4]
    assert [r.field for r in report.skipped] == ["conversations", "conversations[1].value", "image"]
    assert report.skipped[0].location == f"{path}: line 2"
    assert "skipped 3 of 5 malformed record(s)" in caplog.text


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_llava(0)) + "\n\n" + json.dumps(_llava(1))[:-3] + "\n")
    with pytest.raises(DataFormatError, match=r"broken\.jsonl: line 3: invalid JSON"):
        load_image_text_pairs(path)
    path = tmp_path / "broken.json"
    path.write_text('[\n{"image": "a.png",\n "text": }\n]')
    with pytest.raises(DataFormatError, match=r"broken\.json: line 3: invalid JSON"):
        load_image_text_pairs(path)
    path = tmp_path / "object.json"
    path.write_text('{"image": "a.png"}')
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_image_text_pairs(path)


def test_check_images_exists_and_open(llava_dir, tmp_path):
    json_path = llava_dir / "blip_laion_cc_sbu_558k.json"
    records = json.loads(json_path.read_text())
    os.remove(llava_dir / "images" / records[1]["image"])
    (llava_dir / "images" / records[3]["image"]).write_bytes(b"not a png at all")
    root = llava_dir / "images"
    # without checks, the lazy dataset keeps every row
    assert len(load_image_text_pairs(json_path, image_root=root)) == 4
    with pytest.raises(ImageLoadError) as info:
        load_image_text_pairs(json_path, image_root=root, check_images=True)
    message = str(info.value)
    assert "record 1" in message and "000000001.png" in message and "file not found" in message
    assert info.value.path == str(root / records[1]["image"])
    ds, report = load_image_text_pairs(json_path, image_root=root, check_images=True, errors="skip",
                                       return_report=True)
    assert len(ds) == 3 and report.num_skipped == 1  # "exists" does not decode: the corrupt file passes
    ds, report = load_image_text_pairs(json_path, image_root=root, check_images="open", errors="skip",
                                       return_report=True)
    assert len(ds) == 2 and [r.index for r in report.skipped] == [1, 3]
    assert "not a readable image" in report.skipped[1].reason


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataSourceError, match="no such file"):
        load_image_text_pairs(tmp_path / "nope.json")


def test_streaming_local_source(llava_dir):
    ds = load_image_text_pairs(llava_dir / "blip_laion_cc_sbu_558k.json", streaming=True)
    assert isinstance(ds, datasets.IterableDataset)
    assert [row["text"] for row in ds] == [f"caption {i}" for i in range(4)]


# ----------------------------------------------------------------------------- Datasets and the Hub


def _image_dataset(tmp_path, captions):
    paths = [_png(tmp_path / f"{i}.png", value=i) for i in range(len(captions))]
    features = datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                  "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"picture": paths, "caption": captions, "label": list(range(len(captions)))},
                                      features=features)


def test_dataset_passthrough_renames_and_keeps_images_lazy(tmp_path):
    source = _image_dataset(tmp_path, ["one", "two", "three"])
    ds = load_image_text_pairs(source, image_column="picture", caption_column="caption")
    assert ds.column_names == ["image", "text"]
    assert ds.features["image"] == datasets.Image(decode=False)
    row = ds[1]
    assert row["text"] == "two" and isinstance(row["image"], dict)
    assert row["image"]["bytes"] is not None or row["image"]["path"] == str(tmp_path / "1.png")


def test_dataset_passthrough_string_paths_joined_to_root(tmp_path):
    source = datasets.Dataset.from_dict({"image": ["a.png", "/abs/b.png"], "text": ["a", "b"]})
    ds = load_image_text_pairs(source, image_root=tmp_path)
    assert ds["image"] == [str(tmp_path / "a.png"), "/abs/b.png"]


def test_dataset_passthrough_errors_and_skips(tmp_path):
    source = _image_dataset(tmp_path, ["one", " ", "three", None])
    with pytest.raises(DataFormatError, match=r"dataset row 1, field 'caption': empty caption"):
        load_image_text_pairs(source, image_column="picture", caption_column="caption")
    ds, report = load_image_text_pairs(source, image_column="picture", caption_column="caption", errors="skip",
                                       return_report=True)
    assert ds["text"] == ["one", "three"] and report.num_skipped == 2
    with pytest.raises(DataFormatError, match=r"'nope'.*column not found"):
        load_image_text_pairs(source, image_column="nope", caption_column="caption")
    with pytest.raises(DataFormatError, match=r"'label'.*captions must be strings"):
        load_image_text_pairs(source, image_column="picture", caption_column="label")


def test_dataset_passthrough_missing_image_and_check(tmp_path):
    source = datasets.Dataset.from_dict({"image": [str(_png(tmp_path / "a.png")), None, str(tmp_path / "gone.png")],
                                         "text": ["a", "b", "c"]})
    with pytest.raises(DataFormatError, match=r"dataset row 1, field 'image': missing image"):
        load_image_text_pairs(source)
    with pytest.raises(ImageLoadError, match=r"dataset row 1.*gone\.png.*file not found"):
        load_image_text_pairs(source.select([0, 2]), check_images=True)  # rows after an indices mapping
    ds, report = load_image_text_pairs(source, check_images=True, errors="skip", return_report=True)
    assert ds["text"] == ["a"] and report.num_skipped == 2


def test_hub_offline_failure_names_the_dataset():
    with pytest.raises(DataSourceError) as info:
        load_image_text_pairs("gcl-hf-tests/no-such-captions", split="train", revision="v1.0")
    message = str(info.value)
    assert "'gcl-hf-tests/no-such-captions'" in message and "revision 'v1.0'" in message
    assert "offline" in message.lower()


def test_iterable_dataset_validated_while_streaming():
    source = datasets.Dataset.from_dict({"image": ["/a.png", "/b.png", "/c.png"], "text": ["a", "", "c"]})
    stream, report = load_image_text_pairs(source.to_iterable_dataset(), errors="skip", return_report=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert [row["text"] for row in stream] == ["a", "c"]
    assert (report.num_records, report.num_skipped) == (3, 1)
    assert report.skipped[0].location == "dataset row 1"
    with pytest.raises(DataFormatError, match="dataset row 1, field 'text': empty caption"):
        list(load_image_text_pairs(source.to_iterable_dataset()))


def test_parquet_file_with_relative_paths(tmp_path):
    datasets.Dataset.from_dict({"path": ["x.png"], "caption": ["an x"]}).to_parquet(str(tmp_path / "p.parquet"))
    ds = load_image_text_pairs(tmp_path / "p.parquet", image_column="path", caption_column="caption")
    assert ds[0] == {"image": str(tmp_path / "x.png"), "text": "an x"}
