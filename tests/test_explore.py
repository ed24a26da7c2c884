"""The model-level views (vit/explore): the bank of training photos and its neighbours, the explorer record and
`python -m vit.explore`; and the committed banks and checkpoints/explorer.json against the committed checkpoints."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, ROOT, SHARED_DATA, TINY_ARCH, make_image

from vit.explore import bank as banks
from vit.explore import cli, explorer
from vit.models import checkpoint, factory
from vit.models.factory import build, preprocessing
from vit.runtime.engines import TorchEngine, current_ort_engine
from vit.serve.predictor import Predictor

COMMITTED = ["scratch_vit", "timm_vit", "effnet"]
EXPLORER = ROOT / "checkpoints" / explorer.FILE
TINY_ARCH_WIDTH = 32  # vit_test_p8_32: one class token of width 32
TOY_PROBS = [0.7, 0.2, 0.1]  # the toy model's answer for every photo: its head reads nothing but its bias


def random_bank(n: int = 30, d: int = 16, seed: int = 0) -> tuple[banks.Bank, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3, (n, 1)).astype(np.float32)
    return banks.Bank.build(x, [f"set/train/c{i % 3}/{i}.jpg" for i in range(n)], [i % 3 for i in range(n)],
                            ["a", "b", "c"], weights_sha256="w"), x


def test_a_photo_is_its_own_nearest_neighbour_at_about_zero_after_a_save(tmp_path):
    bank, x = random_bank()
    loaded = banks.Bank.load(bank.save(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(loaded.features, bank.features)
    assert loaded.photos == bank.photos and loaded.meta["weights_sha256"] == "w"
    for i in range(len(x)):  # one query at a time, as a request (einsum)
        (hit, *_), = loaded.query(x[i:i + 1])
        assert hit.photo == bank.photos[i] and hit.distance < banks.SELF_TOLERANCE
    idx, dist = loaded.nearest(7.0 * x, 1)  # a batch (BLAS), scaled: cosine ignores the length
    assert (idx[:, 0] == np.arange(len(x))).all() and dist.max() < banks.SELF_TOLERANCE


def test_neighbours_come_nearest_first_with_their_percentile():
    bank, x = random_bank()
    bank.with_reference(x[:10] + 0.5)
    (hits,) = bank.query(x[4:5])
    assert [h.distance for h in hits] == sorted(h.distance for h in hits) and len(hits) == banks.K
    assert hits[0].label == "b" and hits[0].percentile == 0.0 and all(0 <= h.percentile <= 100 for h in hits)
    assert hits[0].to_dict().keys() == {"photo", "label", "distance", "percentile"}
    with pytest.raises(ValueError, match="16-dimensional"):
        bank.query(np.zeros((1, 8), np.float32))


def test_the_vote_is_the_majority_and_a_tie_goes_to_the_nearest_class():
    np.testing.assert_array_equal(banks.vote(np.array([[1, 0, 0, 1, 2], [2, 2, 0, 0, 1], [0, 1, 1, 1, 2]]), 3),
                                  [1, 2, 1])
    np.testing.assert_allclose(banks.percentile_of(np.array([0.05, 0.2, 0.35, 9]), np.array([.1, .2, .3, .4])),
                               [0, 50, 75, 100])


def test_a_bank_of_other_weights_or_a_damaged_one_is_refused_with_a_reason(tmp_path, tiny_checkpoints):
    ckpt = tmp_path / "effnet.safetensors"
    ckpt.write_bytes(tiny_checkpoints["effnet"].read_bytes())
    found, why = banks.load_bank(ckpt)  # why: a note in English (str) with a code for the page's language
    assert found is None and str(why) == "this model has no bank of training photos (python -m vit.explore adds one)"
    bank, _ = random_bank()
    bank.save(banks.bank_path(ckpt))
    found, why = banks.load_bank(ckpt)
    assert found is None and "stale" in str(why) and "python -m vit.explore" in str(why) and why.code == "bank.stale"
    banks.bank_path(ckpt).write_bytes(b"not a bank")
    found, why = banks.load_bank(ckpt)
    assert found is None and "damaged" in str(why) and why.code == "bank.damaged"


def test_a_checkpoint_without_a_bank_is_served_and_says_so(tiny_checkpoints):
    p = Predictor.from_checkpoint(tiny_checkpoints["scratch_vit"], engine="torch")
    for r in (p.answer(make_image(1)), p.explain(make_image(1), "attention")):
        assert r.neighbours == [] and "no bank of training photos" in str(r.neighbours_note)
        assert set(r.probs) == set(CLASSES)  # the answer itself is there


def test_the_confusion_matrix_has_the_truth_in_rows_and_mistakes_come_most_confident_first():
    truth, answer = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])
    assert explorer.confusion(truth, answer, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    probs = explorer.softmax(np.log(np.array([[.8, .1, .1], [.3, .6, .1], [.1, .8, .1], [.7, .1, .2]])))
    rows = explorer.mistakes(["p0", "p1", "p2", "p3"], "test", truth, probs, ["a", "b", "c"])
    assert rows == [{"photo": "p3", "split": "test", "truth": "c", "answer": "a", "probability": 0.7,
                     "truth_probability": 0.2},
                    {"photo": "p1", "split": "test", "truth": "a", "answer": "b", "probability": 0.6,
                     "truth_probability": 0.3}]


def test_the_pca_map_is_deterministic_and_in_the_unit_square():
    bank, _ = random_bank(60, 8)
    a, b = explorer.embed(bank.features, "pca"), explorer.embed(bank.features, "pca")
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 + 1e-9 and np.isclose(a.max(0).max(), 1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, image_folder) -> Path:
    """A tiny scratch ViT whose head reads nothing but its bias: every photo gets TOY_PROBS, so its answer is
    always the first class, and its confusion matrix and mistakes are known before it runs."""
    torch.manual_seed(0)
    built = build("scratch_vit", TINY_ARCH["scratch_vit"], num_classes=len(CLASSES))
    with torch.no_grad():
        built.model.head.weight.zero_()
        built.model.head.bias.copy_(torch.tensor(TOY_PROBS).log())
    meta = {"family": "scratch_vit", "arch": built.arch, "class_names": CLASSES, "init": built.init,
            "preprocessing": preprocessing(built.model, "scratch_vit"), "recipe": {"epochs": 0},
            "metrics": {"test": {"accuracy": 1 / 3, "n_images": 6}}}
    return checkpoint.save(tmp_path_factory.mktemp("toy") / "toy.safetensors", built.model, meta)


def run_cli(toy: Path, image_folder: Path, monkeypatch, *extra: str) -> tuple[int, dict]:
    monkeypatch.setattr(cli, "nonfood_images", lambda: (["texture.a", "texture.b"], [make_image(90), make_image(91)]))
    out = toy.parent / "explorer.json"
    status = cli.main([str(toy), "--data-dir", str(image_folder), "--test-dir", str(image_folder / "test"),
                       "--map", "pca", "--out", str(out), *extra])
    return status, explorer.Records.read(out).models


def test_a_toy_checkpoints_confusion_matrix_and_mistakes_are_known(toy, image_folder, monkeypatch):
    status, records = run_cli(toy, image_folder, monkeypatch)
    r = records["toy"]
    assert status == 0 and r["classes"] == CLASSES and r["temperature"] == 1.0  # no gate: T = 1
    # image_folder: 4 train and 2 test photos per class; the hash split holds 1 of the 4 out for validation
    assert r["test"]["confusion"] == [[2, 0, 0], [2, 0, 0], [2, 0, 0]] and r["test"]["accuracy"] == pytest.approx(1 / 3)
    assert r["val"]["confusion"] == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    root = image_folder.name
    expected = [{"photo": f"{root}/test/{c}/{c}_{i}.jpg", "split": "test", "truth": c, "answer": "pizza",
                 "probability": 0.7, "truth_probability": p} for c, p in (("steak", 0.2), ("sushi", 0.1))
                for i in range(2)]
    assert r["test"]["mistakes"] == sorted(expected, key=lambda m: m["photo"])
    assert [(m["split"], m["truth"], m["answer"]) for m in r["val"]["mistakes"]] == [("val", "steak", "pizza"),
                                                                                     ("val", "sushi", "pizza")]
    view = explorer.Records(records).view("toy")
    assert view["confusion"] == r["test"]["confusion"]
    assert view["mistakes"] == r["test"]["mistakes"] + r["val"]["mistakes"]
    splits = Counter(p["split"] for p in view["points"])
    assert splits == {"train": 9, "val": 3, "test": 6, "nonfood": 2}
    assert all(p["answer"] == "pizza" and 0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in view["points"])
    assert [p["label"] for p in view["points"] if p["split"] == "nonfood"] == [None, None]
    assert all((image_folder.parent / p["photo"]).is_file() for p in view["points"] if p["split"] != "nonfood")


def test_the_toy_bank_holds_its_training_photos_each_nearest_to_itself(toy, image_folder, monkeypatch):
    run_cli(toy, image_folder, monkeypatch, "--banks-only")
    bank, why = banks.load_bank(toy)
    assert why is None and len(bank.photos) == 9 and len(bank.meta["reference"]["nearest"]) == 3
    assert all(CLASSES[y] == Path(photo).parent.name for photo, y in zip(bank.photos, bank.labels))  # true labels
    model = factory.load(toy).model
    _, features = banks.features_of(TorchEngine(model), [image_folder.parent / p for p in bank.photos],
                                    preprocessing(model, "scratch_vit"))
    assert bank.dim == features.shape[1] == TINY_ARCH_WIDTH
    for i, f in enumerate(features):
        (hit, *_), = bank.query(f[None])
        assert hit.photo == bank.photos[i] and hit.distance < banks.SELF_TOLERANCE
    p = Predictor.from_checkpoint(toy, engine="torch")  # served with its bank: the request's own features
    r = p.explain(image_folder.parent / bank.photos[0], "attention")
    assert r.neighbours[0].photo == bank.photos[0] and r.neighbours[0].distance < banks.SELF_TOLERANCE


def test_a_record_whose_test_accuracy_is_not_the_recorded_one_is_refused(toy, image_folder, monkeypatch, tmp_path,
                                                                          capsys):
    meta = checkpoint.read_meta(toy)
    other = tmp_path / "other.safetensors"
    other.write_bytes(toy.read_bytes())
    checkpoint.rewrite(other, {**meta, "metrics": {"test": {"accuracy": 0.5, "n_images": 6}}}, {})
    status, records = run_cli(other, image_folder, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and "other" not in records and "test accuracy 0.3333 on" in err and "0.5000 recorded" in err


# ---------------------------------------------------------------- the committed banks and explorer.json


def committed_records() -> dict:
    return json.loads(EXPLORER.read_text())["models"]


def test_the_committed_explorer_file_covers_every_committed_checkpoint():
    records = committed_records()
    assert sorted(records) == sorted(COMMITTED)
    for name, r in records.items():
        meta = checkpoint.read_meta(ROOT / "checkpoints" / f"{name}.safetensors")
        test = meta["metrics"]["test"]
        trace = sum(r["test"]["confusion"][i][i] for i in range(len(r["classes"])))
        assert r["classes"] == meta["class_names"] and r["test"]["n"] == test["n_images"] == 75
        assert trace / 75 == pytest.approx(test["accuracy"], abs=0.5 / 75), name  # the recorded accuracy
        assert r["test"]["confusion"] == test["confusion_matrix"], name
        assert r["weights_sha256"] == checkpoint.weights_sha256(ROOT / "checkpoints" / f"{name}.safetensors")
        kept = r["map"]["trustworthiness"]  # the map's reason to be a t-SNE: it keeps more neighbourhoods than PCA
        assert r["map"]["method"] == "tsne" and 0 < kept["pca"] < kept["tsne"] <= 1, (name, kept)
        for split in ("test", "val"):  # the mistakes are the off-diagonal photos, cell by cell
            m, cells = r[split]["mistakes"], r[split]["confusion"]
            off = Counter({(t, a): cells[t][a] for t in range(3) for a in range(3) if t != a and cells[t][a]})
            idx = {c: i for i, c in enumerate(r["classes"])}
            assert Counter((idx[x["truth"]], idx[x["answer"]]) for x in m) == off, (name, split)
            assert len({x["photo"] for x in m}) == len(m) and all(x["split"] == split for x in m)
            assert all(f"/{split if split == 'test' else 'train'}/{x['truth']}/" in x["photo"] for x in m)


def test_the_committed_banks_are_the_models_own_features_of_the_gates_training_photos():
    for name in COMMITTED:
        path = ROOT / "checkpoints" / f"{name}.safetensors"
        bank, why = banks.load_bank(path, checkpoint.read_meta(path)["class_names"])
        assert why is None, why
        engine = current_ort_engine(factory.load(path, lazy=True))
        size = checkpoint.read_meta(path)["preprocessing"]["input_size"][-1]
        width = engine.forward_features(torch.zeros(1, 3, size, size))[1].shape[1]
        assert bank.dim == width, name  # the model's own penultimate width, not the gate's 1280-d ImageNet features
        meta = checkpoint.read_meta(path)["trust"]["fitted_on"]
        assert len(bank.photos) == meta["train"] == 409 and len(bank.meta["reference"]["nearest"]) == meta["val"]
        assert [bank.class_names[i] for i in bank.labels] == [Path(p).parent.name for p in bank.photos]
        train = [p for p in explorer.points(committed_records()[name]) if p["split"] == "train"]
        assert [p["photo"] for p in train] == bank.photos  # the map's training points are the bank's rows


def test_the_banks_and_the_explorer_file_add_at_most_5_mb():
    files = [EXPLORER, *(ROOT / "checkpoints" / banks.FOLDER).glob("*")]
    assert sum(f.stat().st_size for f in files) <= 5e6, [(f.name, f.stat().st_size) for f in files]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_every_point_of_the_committed_maps_is_a_dataset_file_or_a_named_non_food_image():
    for name, r in committed_records().items():
        for p in explorer.points(r):
            if p["split"] == "nonfood":
                assert p["label"] is None and p["photo"].split(".")[0] in ("skimage", "sklearn", "texture"), p
            else:
                assert (SHARED_DATA / p["photo"]).is_file(), (name, p)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("name", COMMITTED)
def test_a_training_photo_of_a_committed_bank_is_its_own_nearest_neighbour(name):
    path = ROOT / "checkpoints" / f"{name}.safetensors"
    bank, _ = banks.load_bank(path)
    engine = current_ort_engine(factory.load(path, lazy=True))
    chosen = list(range(0, len(bank.photos), 97))
    _, features = banks.features_of(engine, [SHARED_DATA / bank.photos[i] for i in chosen],
                                    checkpoint.read_meta(path)["preprocessing"])
    for i, f in zip(chosen, features):
        (hit, *_), = bank.query(f[None])
        assert hit.photo == bank.photos[i] and hit.distance < 2e-4, (name, bank.photos[i], hit)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_mistakes_are_exactly_the_photos_the_served_model_gets_wrong(name):
    """Every test and validation photo through the served engine and the gate's temperature: the photos it gets
    wrong, with their answers and calibrated probabilities, are the record's mistakes."""
    path = ROOT / "checkpoints" / f"{name}.safetensors"
    p = Predictor.from_checkpoint(path)
    r = committed_records()[name]
    for split in ("test", "val"):
        photos = [x["photo"] for x in explorer.points(r) if x["split"] == split]
        truth = [x["label"] for x in explorer.points(r) if x["split"] == split]
        logits, _ = banks.features_of(p.engine, [SHARED_DATA / x for x in photos], p.meta["preprocessing"])
        probs = explorer.softmax(logits, p.gate.temperature)
        wrong = {x: (p.class_names[a], float(q[a])) for x, t, a, q in zip(photos, truth, probs.argmax(1), probs)
                 if p.class_names[a] != t}
        recorded = {m["photo"]: (m["answer"], m["probability"]) for m in r[split]["mistakes"]}
        assert wrong.keys() == recorded.keys() and len(recorded) == len(r[split]["mistakes"]), split
        for photo, (answer, probability) in recorded.items():
            assert wrong[photo][0] == answer and wrong[photo][1] == pytest.approx(probability, abs=1e-3), photo
