"""Custom data from the command line: COCO json and CrowdHuman odgt round trips, and the
one-line errors for bad input."""

import json
import os
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from common.data import DatasetError, load_crowdhuman_odgt
from common.engine import default_argument_parser, setup
from common.projects import REPO
from harness.testing import run_module, run_script

CONFIG = "common/configs/retinanet_R-18-FPN_toy.yaml"


def _write_coco(folder, names=("cat", "dog", "bird")):
    os.makedirs(os.path.join(folder, "imgs"), exist_ok=True)
    images, annos = [], []
    for i, (w, h) in enumerate([(64, 48), (50, 70)]):
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(os.path.join(folder, "imgs", f"{i}.jpg"))
        images.append({"id": i + 7, "file_name": f"{i}.jpg", "width": w, "height": h})
        annos.append({"id": i + 1, "image_id": i + 7, "category_id": 10 * (i + 1),
                      "bbox": [2.0, 3.0, 20.0, 10.0 + i], "area": 200.0, "iscrowd": 0})
    cats = [{"id": 10 * (k + 1), "name": n} for k, n in enumerate(names)]
    path = os.path.join(folder, "train.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annos, "categories": cats}, f)
    return path


def _args(*argv):
    return default_argument_parser().parse_args(list(argv))


def test_custom_coco_round_trip_and_num_classes(tmp_path):
    js = _write_coco(str(tmp_path))
    args = _args("--config-file", CONFIG, "--register-coco", "my_train", js, str(tmp_path / "imgs"),
                 "DATASETS.TRAIN", "('my_train',)", "DATASETS.TEST", "('my_train',)",
                 "OUTPUT_DIR", str(tmp_path / "out"))
    cfg = setup(args)
    assert MetadataCatalog.get("my_train").thing_classes == ["cat", "dog", "bird"]
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 3
    assert cfg.MODEL.FCOS.NUM_CLASSES == 3 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    dicts = DatasetCatalog.get("my_train")
    assert [d["image_id"] for d in dicts] == [7, 8]
    assert [d["annotations"][0]["bbox"] for d in dicts] == [[2.0, 3.0, 20.0, 10.0], [2.0, 3.0, 20.0, 11.0]]
    # COCO category ids 10, 20 map to contiguous 0, 1.
    assert [d["annotations"][0]["category_id"] for d in dicts] == [0, 1]
    assert (dicts[1]["height"], dicts[1]["width"]) == (70, 50)


@pytest.mark.parametrize("fmt", ["polygon", "rle"])
def test_a_custom_coco_json_with_masks_trains_and_evaluates_mask_rcnn(tmp_path, fmt):
    """``--register-coco`` data with segmentation (COCO's polygons, or RLE as the toy data)
    trains the toy Mask R-CNN and is evaluated with box and mask AP, with no code edit: the
    config picks INPUT.MASK_FORMAT ("polygon" is detectron2's default, RLE needs "bitmask")."""
    import pycocotools.mask as mask_util

    js = _write_coco(str(tmp_path))
    data = json.load(open(js))
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        if fmt == "polygon":
            a["segmentation"] = [poly]
        else:
            im = next(i for i in data["images"] if i["id"] == a["image_id"])
            rle = mask_util.merge(mask_util.frPyObjects([poly], im["height"], im["width"]))
            a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    json.dump(data, open(js, "w"))
    out = tmp_path / "out"
    r = run_module("common.train_net", "--config-file", "common/configs/mask_rcnn_R-18-FPN_toy.yaml",
                   "--register-coco", "masks_train", js, str(tmp_path / "imgs"),
                   "DATASETS.TRAIN", "('masks_train',)", "DATASETS.TEST", "('masks_train',)",
                   "INPUT.MASK_FORMAT", "polygon" if fmt == "polygon" else "bitmask",
                   "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    final = [json.loads(line) for line in open(out / "metrics.json")][-1]
    assert "bbox/AP" in final and "segm/AP" in final


def test_crowdhuman_odgt_round_trip(tmp_path):
    os.makedirs(tmp_path / "imgs")
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    rec = {"ID": "a", "gtboxes": [
        {"tag": "person", "fbox": [1, 2, 10, 30], "vbox": [1, 2, 10, 15], "hbox": [3, 2, 5, 5],
         "extra": {"ignore": 0}},
        {"tag": "mask", "fbox": [30, 0, 10, 10], "vbox": [30, 0, 10, 10], "extra": {"ignore": 1}},
    ]}
    (tmp_path / "a.odgt").write_text(json.dumps(rec) + "\n")
    args = _args("--config-file", CONFIG,
                 "--register-crowdhuman", "my_crowd", str(tmp_path / "a.odgt"), str(tmp_path / "imgs"),
                 "DATASETS.TRAIN", "('my_crowd',)", "DATASETS.TEST", "()",
                 "OUTPUT_DIR", str(tmp_path / "out"))
    cfg = setup(args)
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 1
    (d,) = DatasetCatalog.get("my_crowd")
    assert (d["height"], d["width"]) == (40, 60)
    person, ignore = d["annotations"]
    assert person["bbox"] == [1, 2, 10, 30] and person["vis_bbox"] == [1, 2, 10, 15]
    assert person["head_bbox"] == [3, 2, 5, 5] and person["iscrowd"] == 0
    assert ignore["iscrowd"] == 1
    assert MetadataCatalog.get("my_crowd").evaluator_type == "crowdhuman"


def test_crowdhuman_images_are_found_by_extension(tmp_path):
    """CrowdHuman ships .jpg images, the toy data .png: the extension comes from the files."""
    os.makedirs(tmp_path / "imgs")
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(tmp_path / "imgs" / "273271,1a02900084ed5ae.jpg")
    (tmp_path / "a.odgt").write_text(json.dumps({"ID": "273271,1a02900084ed5ae", "gtboxes": []}) + "\n")
    (d,) = load_crowdhuman_odgt(str(tmp_path / "a.odgt"), str(tmp_path / "imgs"))
    assert d["file_name"].endswith(".jpg") and (d["height"], d["width"]) == (30, 20)
    with pytest.raises(DatasetError, match="no image 273271,1a02900084ed5ae.jpg/.png/.jpeg in"):
        load_crowdhuman_odgt(str(tmp_path / "a.odgt"), str(tmp_path))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--register-coco", "x1", "/no/such.json", "/tmp"], "annotation file not found: /no/such.json"),
        (["DATASETS.TRAIN", "('no_such_dataset',)"], "dataset 'no_such_dataset' is not registered"),
        (["MODEL.NO_SUCH_KEY", "1"], "unknown config key"),
        (["SOLVER.MAX_ITER", "abc"], "bad config"),
        (["SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "global"], "CLIP_TYPE must be one of value, norm, full_model"),
        (["--eval-only", "MODEL.WEIGHTS", "/no/such/model.pth"], "checkpoint not found: /no/such/model.pth"),
        # evaluating a randomly initialised model exited 0 with AP nan
        (["--eval-only", "MODEL.WEIGHTS", ""], "MODEL.WEIGHTS is empty: evaluating needs a trained"),
        (["DATASETS.TRAIN", "()"], "DATASETS.TRAIN is empty: nothing to train on"),
        (["--eval-only", "DATASETS.TEST", "()"], "DATASETS.TEST is empty"),
        # a node without internet access (.invalid never resolves)
        (["MODEL.WEIGHTS", "https://weights.invalid/R-50.pkl"], "could not be downloaded"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, argv, message):
    args = _args("--config-file", CONFIG, *argv, "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        setup(args)
    assert str(e.value).startswith("error: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="error: bad config.*does not exist"):
        setup(_args("--config-file", str(tmp_path / "nope.yaml")))


def test_train_net_without_arguments_is_one_line(tmp_path):
    """It died with ``AssertionError: ()`` deep inside detectron2's data loading."""
    r = run_script(os.path.join(REPO, "projects", "GFL", "train_net.py"), cwd=str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: DATASETS.TRAIN is empty")


def test_cli_errors_print_one_line_not_a_traceback(tmp_path):
    r = run_module("common.train_net", "--config-file", CONFIG, "MODEL.NO_SUCH_KEY", "1",
                   "OUTPUT_DIR", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown config key")
    assert "Traceback" not in r.stderr
    # A malformed dataset argument (two values instead of three) is argparse's usage error.
    r = run_module("common.train_net", "--config-file", CONFIG, "--register-coco", "a", "b.json")
    assert r.returncode == 2 and "--register-coco: expected 3 arguments" in r.stderr


def _json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def test_coco_categories_are_read_from_the_end_of_a_big_json(tmp_path, monkeypatch):
    from common.data.datasets import coco_categories

    cats = [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640} for i in range(40000)]
    path = _json(tmp_path / "big.json", {"images": images, "annotations": [], "categories": cats})
    assert os.path.getsize(path) > 2 << 20  # larger than the tail that is read

    def no_full_parse(*a, **k):
        raise AssertionError("parsed the whole file")

    monkeypatch.setattr(json, "load", no_full_parse)
    assert coco_categories(path) == [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]


def test_coco_categories_of_other_layouts_are_parsed_whole(tmp_path):
    from common.data.datasets import coco_categories

    real = [{"id": 1, "name": "a"}]
    fake = [{"id": 9, "name": "not a category"}]
    # categories first, and a nested "categories" key last: the nested one is not taken
    path = _json(tmp_path / "a.json",
                 {"categories": real, "images": [], "annotations": [{"categories": fake}]})
    assert coco_categories(path) == real
    with pytest.raises(DatasetError, match="not a COCO json with 'categories'"):
        coco_categories(_json(tmp_path / "b.json", {"images": []}))
    with pytest.raises(DatasetError, match="must be a list of"):
        coco_categories(_json(tmp_path / "c.json", {"categories": [{"name": "no id"}]}))


def test_builtin_coco_json_with_other_categories_is_one_line(tmp_path):
    """detectron2's coco_2017_* metadata is fixed: a json with other categories under that name
    failed deep inside loading; now setup says so in one line."""
    from common.data.stand_in import write_coco_tree

    write_coco_tree(str(tmp_path))
    path = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["categories"][3]["name"] = "moped"
    path.write_text(json.dumps(data))
    r = run_module("common.train_net", "--config-file", CONFIG, "--eval-only",
                   "DATASETS.TEST", "('coco_2017_val',)", "OUTPUT_DIR", str(tmp_path / "out"),
                   env={"DETECTRON2_DATASETS": str(tmp_path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset 'coco_2017_val': the 80 categories of ")
    assert "(4, 'moped') instead of (4, 'motorcycle')" in last


def test_eval_only_needs_only_the_test_datasets(tmp_path):
    """The PBM README's eval-only command registers only crowdhuman_val."""
    argv = ["--config-file", CONFIG, "DATASETS.TRAIN", "('crowdhuman_train',)", "OUTPUT_DIR", str(tmp_path)]
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    cfg = setup(_args("--eval-only", *argv, "MODEL.WEIGHTS", str(weights)))
    assert cfg.DATASETS.TRAIN == ("crowdhuman_train",)
    with pytest.raises(SystemExit, match="dataset 'crowdhuman_train' is not registered"):
        setup(_args(*argv))


def test_registering_the_same_files_twice_is_a_no_op_and_other_files_an_error(tmp_path):
    from common.data import register_coco

    (tmp_path / "img").mkdir()
    a = _json(tmp_path / "a.json", {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]})
    b = _json(tmp_path / "b.json", {"images": [], "annotations": [], "categories": [{"id": 1, "name": "y"}]})
    register_coco("twice_registered", a, str(tmp_path / "img"))
    register_coco("twice_registered", a, str(tmp_path / "img"))  # the demo calls setup() again
    with pytest.raises(DatasetError, match="dataset 'twice_registered' is already registered, with other"):
        register_coco("twice_registered", b, str(tmp_path / "img"))
    assert MetadataCatalog.get("twice_registered").thing_classes == ["x"]


def _user_dataset(tmp_path, images=None, annotations=None, categories=None):
    """A small COCO json of one's own (2 images on disk) for the registration checks."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for n in ("a.png", "b.png"):
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "img" / n)
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
                             {"id": 2, "file_name": "b.png", "height": 40, "width": 60}],
        "annotations": annotations or [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0}],
        "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    return _json(tmp_path / "mine.json", data), str(tmp_path / "img")


@pytest.mark.parametrize("images, annotations, message", [
    ([{"id": 1, "file_name": "a.png"}], None, "1 images have no height/width, e.g. image id 1"),
    ([{"id": 1, "file_name": "gone.png", "height": 4, "width": 4}], None,
     "1 of 1 image files are not under"),
    (None, [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]}],
     "annotations with category ids not in 'categories': [5]"),
])
def test_a_bad_coco_json_is_refused_at_registration_in_one_line(tmp_path, images, annotations, message):
    from common.data import register_coco

    json_file, image_root = _user_dataset(tmp_path, images, annotations)
    with pytest.raises(DatasetError, match=re.escape(message)) as e:
        register_coco(f"bad_{tmp_path.name}", json_file, image_root)
    assert "\n" not in str(e.value)


def test_non_positive_boxes_are_dropped_and_missing_coco_fields_filled(tmp_path, monkeypatch):
    from common.data import register_coco

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10]},  # no iscrowd, no area
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [9, 9, 4, -1], "area": 0, "iscrowd": 0},
    ]
    json_file, image_root = _user_dataset(tmp_path, annotations=annotations)
    register_coco("repaired_mine", json_file, image_root)
    meta = MetadataCatalog.get("repaired_mine")
    assert meta.source_json == json_file and meta.json_file.startswith(str(tmp_path / "cache"))
    repaired = json.load(open(meta.json_file))
    assert repaired["annotations"] == [dict(annotations[0], iscrowd=0, area=200)]
    dicts = DatasetCatalog.get("repaired_mine")
    assert [len(d["annotations"]) for d in dicts] == [1, 0]
    # A json that needs nothing is used as it is.
    (tmp_path / "clean").mkdir()
    clean, clean_images = _user_dataset(tmp_path / "clean")
    register_coco("clean_mine", clean, clean_images)
    assert MetadataCatalog.get("clean_mine").json_file == clean


def test_an_unreadable_image_stops_training_with_its_name_or_is_skipped(tmp_path):
    from common.engine import Trainer

    annotations = [{"id": i, "image_id": i, "category_id": 3, "bbox": [5, 5, 20, 10], "area": 200,
                    "iscrowd": 0} for i in (1, 2)]
    json_file, image_root = _user_dataset(tmp_path, annotations=annotations)
    (tmp_path / "img" / "b.png").write_bytes(b"not a png")  # exists, so registration accepts it
    name = f"unreadable_{tmp_path.name}"

    def trainer(out, *opts):
        cfg = setup(_args("--config-file", CONFIG, "--register-coco", name, json_file, image_root,
                          "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2",
                          "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                          "OUTPUT_DIR", str(tmp_path / out), *opts))
        return Trainer(cfg)

    with pytest.raises(DatasetError, match=r"unreadable image .*b\.png .*SKIP_BAD_IMAGES True skips"):
        trainer("stop").train()
    t = trainer("skip", "DATALOADER.SKIP_BAD_IMAGES", "True")
    t.train()
    assert t.iter == 2  # both iterations ran, on the readable image
    skipped = (tmp_path / "skip" / "skipped_images.txt").read_text().split()
    assert set(skipped) == {str(tmp_path / "img" / "b.png")}
