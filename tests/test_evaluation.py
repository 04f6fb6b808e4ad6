"""--eval-images folders: a labels.csv that is malformed is one line naming the file and the row
(an InputError: exit 3 in the CLI), never a crash."""

from __future__ import annotations

import pytest
from conftest import shared_file

from rtvision.errors import InputError
from rtvision.evaluation import read_labelled_images


def test_a_labels_csv_reads_the_photos_and_their_classes(tmp_path):
    photos = shared_file("imagenet-sample/labels.csv").parent
    (tmp_path / "labels.csv").write_text(f"file,class_id\n{photos / '0000_n01440764.jpg'},0\n"
                                         f"{photos / '0002_n01484850.jpg'},2,extra,fields\n")
    data = read_labelled_images(tmp_path, num_classes=1000)
    assert list(data.class_ids) == [0, 2] and [img.ndim for img in data.images] == [3, 3]


@pytest.mark.parametrize("header, rows, says", [
    ("class_id,file", "0,{photo}\n5\n", ":3: a short row, with no file"),  # it crashed: TypeError, exit 1
    ("file,class_id", "{photo},0\n5\n", ":3: a short row, with no class_id"),
    ("file,class_id", "{photo},0\n,5\n", ":3: no file named"),
    ("file,class_id", "{photo},x\n", ":2: class_id 'x' is not an integer"),
    ("file,class_id", "{photo},\n", ":2: class_id '' is not an integer"),
    ("file,class_id", "{photo},1000\n", ":2: class_id 1000 is outside 0..999"),
    ("file,class_id", "{photo},0\nmissing.jpg,1\n", ":3: cannot read the photo missing.jpg"),
])
def test_a_malformed_labels_csv_is_one_line(tmp_path, header, rows, says):
    photo = shared_file("imagenet-sample/0000_n01440764.jpg")
    (tmp_path / "labels.csv").write_text(f"{header}\n" + rows.format(photo=photo))
    with pytest.raises(InputError) as err:
        read_labelled_images(tmp_path, num_classes=1000)
    assert says in str(err.value) and "\n" not in str(err.value)
