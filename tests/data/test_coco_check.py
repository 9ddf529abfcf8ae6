"""Bad COCO data is refused before training starts, naming the file, the id and the field."""

import pytest

from minirc.cli import main
from minirc.data import COCODataset
from tests.coco_files import coco_dict, write_coco


def test_a_good_file_passes(tmp_path):
    COCODataset(write_coco(tmp_path)).check()


def test_a_missing_image_file_is_named(tmp_path):
    path = write_coco(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image id 12: field 'file_name': no file .*b\.png"):
        COCODataset(path).check()


@pytest.mark.parametrize("bbox", [[-5, 6, 18, 18], [4, 6, 70, 18], [4, 40, 18, 18]])
def test_a_box_outside_its_image_is_named(tmp_path, bbox):
    coco = coco_dict()
    coco["annotations"][0]["bbox"] = bbox
    with pytest.raises(ValueError, match=r"annotation id 1: field 'bbox'.*outside its image \(id 11, 64x48"):
        COCODataset(write_coco(tmp_path, coco)).check()


def test_a_box_off_by_rounding_is_accepted(tmp_path):
    coco = coco_dict()
    coco["annotations"][0]["bbox"] = [-0.4, 6, 18, 18]
    COCODataset(write_coco(tmp_path, coco)).check()


@pytest.mark.parametrize("field, value, words", [("image_id", 99, "field 'image_id': 99"),
                                                 ("category_id", 5, "field 'category_id': 5")])
def test_unknown_image_or_category_ids_are_named(tmp_path, field, value, words):
    coco = coco_dict()
    coco["annotations"][0][field] = value
    with pytest.raises(ValueError, match=f"annotation id 1: {words}"):
        COCODataset(coco)


def test_train_refuses_a_missing_image_before_the_first_iteration(tmp_path, capsys):
    path = write_coco(tmp_path)
    (tmp_path / "a.png").unlink()
    assert main(["train", "--coco", path, "--config", "tiny", "--iters", "2", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "image id 11: field 'file_name'" in err and not (tmp_path / "run" / "checkpoint.npz").exists()
