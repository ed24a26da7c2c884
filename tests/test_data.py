import numpy as np
import pytest
import torch
from conftest import CLASSES, ROOT, SHARED_DATA, make_image, markdown_rows, tiny_checkpoint
from PIL import Image

from vit.data import datasets


def test_list_images_is_imagefolder_order(image_folder):
    samples, classes = datasets.list_images(image_folder / "train")
    assert classes == CLASSES
    assert len(samples) == 12 and [s.label for s in samples] == [0] * 4 + [1] * 4 + [2] * 4


def test_train_samples_pool_data_dirs_without_duplicates(image_folder, tmp_path):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(image_folder, other)
    (other / "train" / "pizza" / "pizza_0.jpg").rename(other / "train" / "pizza" / "extra.jpg")
    samples, classes = datasets.train_samples([image_folder, other])
    assert classes == CLASSES
    assert len(samples) == 13  # 12 shared by name, plus the renamed one


def test_split_is_stratified_disjoint_and_stable(image_folder):
    samples, _ = datasets.list_images(image_folder / "train")
    train, val = datasets.split_train_val(samples, 0.25)
    assert len(val) == 3 and sorted(s.label for s in val) == [0, 1, 2]
    assert not {s.key for s in train} & {s.key for s in val}
    assert datasets.split_train_val(list(reversed(samples)), 0.25)[1] == val
    assert datasets.split_train_val(samples, 0.0) == (samples, [])


@pytest.mark.skipif(not (SHARED_DATA / "pizza_steak_sushi").is_dir(), reason="needs ../shared/data")
def test_real_data_pools_to_480_unique_training_photos_and_no_test_photo():
    dirs = [SHARED_DATA / "pizza_steak_sushi_20_percent", SHARED_DATA / "pizza_steak_sushi"]
    samples, classes = datasets.train_samples(dirs)
    assert classes == CLASSES and len(samples) == 480
    test = {s.key for s in datasets.list_images(SHARED_DATA / "pizza_steak_sushi" / "test")[0]}
    assert not test & {s.key for s in samples}


def test_eval_transform_follows_the_config_and_splits_into_geometry_and_tensor():
    pp = {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.25] * 3,
          "crop_pct": 0.875, "crop_mode": "center"}
    from PIL import Image
    im = Image.new("RGB", (200, 100), (255, 128, 0))
    x = datasets.eval_transform(pp)(im)
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[:, 32, 32], torch.tensor([2.0, 128 / 255 * 4 - 2, -2.0]), atol=1e-2)
    view, to_tensor = datasets.split_eval_transform(pp)
    assert view(im).size == (64, 64)
    assert torch.equal(to_tensor(view(im)), x)


def test_train_transform_gives_unnormalised_crops(image_folder):
    samples, _ = datasets.list_images(image_folder / "train")
    ds = datasets.ImageDataset(samples, datasets.train_transform(48, "randaug"), cache_side=60, repeats=2)
    assert len(ds) == 24
    x, y = ds[13]
    assert x.shape == (3, 48, 48) and 0 <= x.min() and x.max() <= 1 and y == samples[1].label
    with pytest.raises(ValueError, match="unknown augmentation"):
        datasets.train_transform(48, "autoaugment")


def test_mixup_mixes_images_and_targets_with_the_same_weight():
    import numpy as np
    np.random.seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    x = torch.rand(8, 3, 16, 16)
    mixed, y = datasets.mix_transform(3, mixup=0.8, cutmix=0.0)(x.clone(), labels)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    lam = y[0, 0].item()  # image 0 (pizza) is mixed with image 7 (steak)
    assert 0.01 < lam < 0.99  # really mixed: not a one-hot target
    assert torch.allclose(y, lam * one_hot + (1 - lam) * one_hot.flip(0))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert datasets.mix_transform(3, 0, 0) is None


def test_cutmix_pastes_a_box_whose_area_is_the_target_weight():
    import numpy as np
    labels = torch.tensor([0, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    mix = datasets.mix_transform(3, mixup=0.0, cutmix=1.0, label_smoothing=0.1)
    areas = []
    for seed in range(5):
        np.random.seed(seed)
        x = torch.zeros(4, 1, 20, 20) + torch.arange(4.0).view(4, 1, 1, 1)  # image i is all i
        mixed, y = mix(x, labels)
        pasted = (mixed[0] == 3).float().mean().item()  # image 0 received a box from image 3
        lam = 1 - pasted
        expected = lam * one_hot + (1 - lam) * one_hot.flip(0)
        assert torch.allclose(y, expected * 0.9 + 0.1 / 3, atol=1e-6)  # label smoothing 0.1 on top
        areas.append(pasted)
    assert any(0 < a < 1 for a in areas)  # some boxes were pasted


def test_streaming_and_in_memory_datasets_give_the_same_images(image_folder):
    samples, _ = datasets.list_images(image_folder / "train")
    tf = datasets.eval_transform({"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3,
                              "std": [0.5] * 3, "crop_pct": 0.875, "crop_mode": "center"})
    memory = datasets.make_dataset(samples, tf, "memory", cache_side=40)
    stream = datasets.make_dataset(samples, tf, "stream", cache_side=40)
    assert isinstance(stream, datasets.StreamingImageDataset) and not hasattr(stream, "images")
    assert len(memory) == len(stream) == 12
    for i in (0, 5, 11):
        assert torch.equal(memory[i][0], stream[i][0]) and memory[i][1] == stream[i][1]
    assert isinstance(datasets.make_dataset(samples, tf, "auto"), datasets.ImageDataset)


def test_named_sources_offline_fail_at_once_saying_to_pass_data_dir(tmp_path, monkeypatch):
    import socket

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(socket, "create_connection", offline)
    for name in ("cifar10", "food101"):
        with pytest.raises(RuntimeError, match="unreachable.*--data-dir"):
            datasets.named_source(name, tmp_path)


def test_download_offline_says_to_pass_data_dir(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="--data-dir"):
        datasets.download("pizza_steak_sushi", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.download("hotdog", tmp_path)


def course_zip(folder, image_folder) -> str:
    """The course's zip as a local file (train/ and test/ at its top, as the course's are): its file:// URL template."""
    import zipfile
    with zipfile.ZipFile(folder / "pizza_steak_sushi.zip", "w") as z:
        for path in sorted(image_folder.rglob("*.jpg")):
            z.write(path, path.relative_to(image_folder).as_posix())
    return f"file://{folder}/{{variant}}.zip"


def test_the_course_zip_is_downloaded_in_the_background_and_its_photos_found(image_folder, tmp_path):
    from vit.data.course import Library
    url = course_zip(tmp_path, image_folder)
    library = Library([tmp_path / "nowhere"], cache=tmp_path / "cache", url=url)
    name = "pizza_steak_sushi/train/steak/steak_1.jpg"
    assert library.find(name) is None  # not on disk: its zip starts downloading, this answer does not wait
    library.wait(60)
    assert library.find(name).read_bytes() == (image_folder / "train" / "steak" / "steak_1.jpg").read_bytes()
    assert library.find("pizza_steak_sushi/test/sushi/sushi_0.jpg").is_file() and not library.failed
    assert library.find("../etc/passwd") is None and library.find("/etc/passwd") is None


def test_a_download_never_blocks_the_request_that_started_it(image_folder, tmp_path):
    import threading
    import time
    import urllib.request

    from vit.data.course import Library
    url, release = course_zip(tmp_path, image_folder), threading.Event()

    def slow_opener(source, timeout):  # a slow network: the bytes come when the test says so
        release.wait(30)
        return urllib.request.urlopen(source, timeout=timeout)
    library = Library([], cache=tmp_path / "cache", opener=slow_opener, url=url)
    start = time.monotonic()
    assert library.find("pizza_steak_sushi/train/pizza/pizza_0.jpg") is None
    assert library.find("pizza_steak_sushi/train/pizza/pizza_1.jpg") is None  # one download per data set
    assert time.monotonic() - start < 1 and library.downloading() == ["pizza_steak_sushi"]
    release.set()
    library.wait(60)
    assert library.find("pizza_steak_sushi/train/pizza/pizza_0.jpg") is not None and library.downloading() == []


def test_a_failed_download_is_said_once_and_not_retried(tmp_path):
    from vit.data.course import Library
    (tmp_path / "pizza_steak_sushi.zip").write_bytes(b"not a zip")
    library = Library([], cache=tmp_path / "cache", url=f"file://{tmp_path}/{{variant}}.zip")
    assert library.find("pizza_steak_sushi/train/pizza/a.jpg") is None
    library.wait(60)
    assert "could not download" in library.failed["pizza_steak_sushi"] and "--data-dir" in library.failed[
        "pizza_steak_sushi"]
    assert library.find("pizza_steak_sushi/train/pizza/a.jpg") is None and not library.downloading()
    assert not (tmp_path / "cache" / "pizza_steak_sushi").exists()  # nothing half-unpacked left behind
    assert Library([], cache=tmp_path / "c2", download=False).find("pizza_steak_sushi/x.jpg") is None


def test_examples_are_filled_from_the_test_split(image_folder, tmp_path):
    from vit.app.examples import fill
    copied = fill(image_folder, per_class=1, dest=tmp_path)
    assert sorted(p.name for p in copied) == ["pizza_pizza_0.jpg", "steak_steak_0.jpg", "sushi_sushi_0.jpg"]
    assert all(p.read_bytes() == (image_folder / "test" / p.name.split("_", 1)[0] / p.name.split("_", 1)[1]).read_bytes()
               for p in copied)


def test_examples_check_marks_wrong_answers_and_refuses_bad_input(tmp_path, capsys):
    from vit.app import examples
    for seed, name in enumerate(("pizza_1.jpg", "steak_2.jpg", "mine.png")):
        make_image(seed).save(tmp_path / name)
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", "scratch_vit")
    rows = examples.check([ckpt], folder=tmp_path)
    assert rows[0] == "| file | true class | Scratch ViT |" and len(rows) == 5
    table = markdown_rows(rows)
    assert table["mine.png"][0] == "?" and "✗" not in table["mine.png"][1]  # no class in the name: nothing to mark
    for name, truth in (("pizza_1.jpg", "pizza"), ("steak_2.jpg", "steak")):
        assert table[name][0] == truth and table[name][1].endswith("✗") == (not table[name][1].startswith(truth))
    assert examples.main(["--check", "--checkpoints", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        examples.main([])


def test_shrunk_copy_keeps_the_photos_the_split_and_the_pixels_the_trainer_caches(tmp_path):
    """scripts/shrink_data.py (the photos sent to a rented GPU): each photo shrunk to the cache side, file
    names kept, so the pooled train set and its validation split are the originals'; a train photo an
    earlier root already has is left out, as vit.data.datasets.train_samples would ignore it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("shrink_data", ROOT / "scripts" / "shrink_data.py")
    shrink = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shrink)
    roots = [tmp_path / "big", tmp_path / "small"]
    for r, (split, names) in zip(roots, (("train", range(6)), ("train", range(4, 8)))):
        for c in CLASSES:
            (r / split / c).mkdir(parents=True)
            for i in names:
                make_image(i, size=(120, 90)).save(r / split / c / f"{c}_{i}.jpg")
    (roots[1] / "test" / "pizza").mkdir(parents=True)
    make_image(9, size=(120, 90)).save(roots[1] / "test" / "pizza" / "p.jpg")
    assert shrink.main([*map(str, roots), "--out", str(tmp_path / "copy"), "--side", "30"]) == 0
    copies = [tmp_path / "copy" / r.name for r in roots]
    original, copied = datasets.train_samples(roots)[0], datasets.train_samples(copies)[0]
    assert [s.key for s in copied] == [s.key for s in original]
    val_keys = [[s.key for s in datasets.split_train_val(samples, 0.25)[1]] for samples in (copied, original)]
    assert val_keys[0] == val_keys[1]
    assert not (copies[1] / "train" / "pizza" / "pizza_4.jpg").exists()  # "big" has it: never read from "small"
    assert (copies[1] / "train" / "pizza" / "pizza_7.jpg").exists()
    assert (copies[1] / "test" / "pizza" / "p.jpg").exists()
    with Image.open(copies[0] / "train" / "steak" / "steak_0.jpg") as im:
        assert min(im.size) == 30
        small = np.asarray(im.convert("RGB"), dtype=float)
    cached = np.asarray(datasets._load_rgb(roots[0] / "train" / "steak" / "steak_0.jpg", 30), dtype=float)
    assert small.shape == cached.shape and np.abs(small - cached).mean() < 8  # only the JPEG re-encoding differs
