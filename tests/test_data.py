import logging

import numpy as np
import pytest

from edge_runtime.preprocess import PreprocessConfig
from train import data as D


def test_patient_ids_from_known_file_names():
    assert D.patient_from_name("CHNCXR_0001_1.png") == "CHNCXR_0001"
    assert D.patient_from_name("MCUCXR_0104_0.png") == "MCUCXR_0104"
    assert D.patient_from_name("person1_bacteria_1.jpeg") == D.patient_from_name("person1_virus_6.jpeg")
    assert D.patient_from_name("IM-0115-0001.jpeg") == D.patient_from_name("IM-0115-0002.jpeg")
    assert D.patient_from_name("NORMAL2-IM-1427-0001.jpeg") != D.patient_from_name("IM-1427-0001.jpeg")
    assert D.patient_from_name("00001280_004.png") == D.patient_from_name("nih_dcn__00001280_000.png")
    assert D.patient_from_name("whatever.png") == "img_whatever"


def test_kermany_layout(tmp_path, make_png):
    for split in ("train", "test"):
        make_png(tmp_path / "chest_xray" / split / "NORMAL" / f"IM-00{split == 'test'}1-0001.jpeg")
        make_png(tmp_path / "chest_xray" / split / "PNEUMONIA" / f"person{len(split)}_bacteria_1.jpeg")
    s = D.scan(tmp_path, ("normal", "pneumonia"))
    assert {x.label for x in s} == {"normal", "pneumonia"} and len(s) == 4
    assert {x.source for x in s} == {"kermany"}


def test_shenzhen_and_montgomery_labels_from_name(tmp_path, make_png):
    make_png(tmp_path / "CXR_png" / "CHNCXR_0001_0.png")
    make_png(tmp_path / "CXR_png" / "CHNCXR_0002_1.png")
    make_png(tmp_path / "CXR_png" / "MCUCXR_0003_1.png")
    s = {x.path.split("/")[-1]: x for x in D.scan(tmp_path, ("normal", "tuberculosis"))}
    assert s["CHNCXR_0001_0.png"].label == "normal" and s["CHNCXR_0002_1.png"].label == "tuberculosis"
    assert s["CHNCXR_0001_0.png"].source == "shenzhen" and s["MCUCXR_0003_1.png"].source == "montgomery"


def test_tb_database_and_tbx11k_layouts(tmp_path, make_png, caplog):
    make_png(tmp_path / "db" / "Normal" / "Normal-1.png")
    make_png(tmp_path / "db" / "Tuberculosis" / "Tuberculosis-1.png")
    make_png(tmp_path / "tbx" / "imgs" / "health" / "h1.png")
    make_png(tmp_path / "tbx" / "imgs" / "tb" / "tb1.png")
    make_png(tmp_path / "tbx" / "imgs" / "sick" / "s1.png")
    with caplog.at_level(logging.INFO):
        s = D.scan(tmp_path, ("normal", "tuberculosis"))
    assert len(s) == 4  # "sick" (non-TB disease) is left out, with a log line
    assert "left out 1 images" in caplog.text
    by_src = {x.source for x in s if "/db/" in x.path}, {x.source for x in s if "/tbx/" in x.path}
    assert by_src == ({"tb_cxr_database"}, {"tbx11k"})


def test_manifest_with_groups(tmp_path, make_png):
    for i in range(4):
        make_png(tmp_path / f"x{i}.png")
    (tmp_path / "manifest.csv").write_text(
        "file,class,source,patient_id,tbx_pseudo_patient_group\n"
        "x0.png,normal,siteA,p0,\nx1.png,Pneumonia,siteA,p1,\nx2.png,TB,siteB,,g1\nx3.png,tb,siteB,,g1\n")
    s = D.scan(tmp_path)
    assert [x.label for x in s] == ["normal", "pneumonia", "tuberculosis", "tuberculosis"]
    assert s[2].split_key == s[3].split_key == "group_g1"
    assert s[0].source == "siteA"


def test_a_manifest_from_excel_keeps_its_patient_column(tmp_path, make_png, caplog):
    """A UTF-8 byte-order mark and another spelling of the header (``Patient_ID``) must not drop the patient
    column (review27b #1: every film then counted as its own patient and patients leaked across the split)."""
    for i in range(4):
        make_png(tmp_path / f"x{i}.png")
    rows = "x0.png,p7,normal\r\nx1.png,p7,normal\r\nx2.png,p8,pneumonia\r\nx3.png,p9,tuberculosis\r\n"
    (tmp_path / "manifest.csv").write_bytes(("\ufeffPatient_ID,File,Class\r\n".replace("Patient_ID,File", "File,Patient_ID")
                                             + rows).encode("utf-8"))
    s = D.scan(tmp_path)
    assert [x.patient_id for x in s] == ["p7", "p7", "p8", "p9"] and s[0].split_key == s[1].split_key
    (tmp_path / "manifest.csv").write_bytes(("\ufeffpatient id,file,class\r\n" + "p7,x0.png,normal\r\n").encode())
    assert D._from_manifest(tmp_path / "manifest.csv")[0].patient_id == "p7"  # BOM on the first column's name
    (tmp_path / "manifest.csv").write_text("file,class\nx0.png,normal\n")
    with caplog.at_level("WARNING"):
        D._from_manifest(tmp_path / "manifest.csv")
    assert "no patient_id column" in caplog.text


def test_a_patient_and_a_group_are_one_unit_of_the_split():
    """Films that share a patient or a group stay on one side, however the links chain (review27b #2: a group
    replaced the patient as the key, so a patient with some films in a group leaked)."""
    S = D.Sample
    samples = [S("a1", "normal", "x", "pA", "group_g1"), S("a2", "normal", "x", "pA", ""),  # pA partly in g1
               S("b1", "normal", "x", "pB", "group_g1"),  # g1 also holds pB
               S("c1", "normal", "x", "pC", ""), S("d1", "normal", "x", "pD", "group_g2"),
               S("d2", "normal", "x", "pD", "group_g2")]
    linked = {s.path: s.split_key for s in D.link_patients_and_groups(samples)}
    assert linked["a1"] == linked["a2"] == linked["b1"]
    assert linked["c1"] == "pC" and linked["d1"] == linked["d2"] == "group_g2"  # unlinked films keep their key
    many = [S(f"{p}-{k}", "normal", "x", f"p{p}", f"group_s{p}" if k < 2 else "") for p in range(40) for k in range(3)]
    parts = D.split_samples(D.link_patients_and_groups(many), seed=0)
    sides = {}
    for side, xs in parts.items():
        for x in xs:
            sides.setdefault(x.patient_id, set()).add(side)
    assert all(len(v) == 1 for v in sides.values())


@pytest.mark.parametrize("manifest,match", [
    ("file,class\nx0.png,cancer\n", r"labels \['cancer'\] are not among"),
    ("file,class\nx0.png,normal\n", r"no images for class\(es\) \['pneumonia', 'tuberculosis'\]"),
    ("name,what\nx0.png,normal\n", "needs a 'path'"),
])
def test_label_errors_are_clear(tmp_path, make_png, manifest, match):
    make_png(tmp_path / "x0.png")
    (tmp_path / "manifest.csv").write_text(manifest)
    with pytest.raises(D.DataError, match=match):
        D.scan(tmp_path)


def test_empty_folder_and_single_class(tmp_path, make_png):
    with pytest.raises(D.DataError, match="no images found"):
        D.scan(tmp_path)
    with pytest.raises(D.DataError, match="at least 2 classes"):
        D.check_labels([], ("normal",))


def test_split_keeps_patients_together_and_is_stratified():
    rng = np.random.default_rng(0)
    samples = []
    for label, src in [("normal", "a"), ("pneumonia", "a"), ("tuberculosis", "b")]:
        for p in range(40):
            for k in range(int(rng.integers(1, 4))):
                samples.append(D.Sample(f"/x/{label}_{p}_{k}.png", label, src, f"{label}{p}"))
    parts = D.split_samples(samples, 0.2, 0.2, seed=3)
    keys = {side: {s.split_key for s in v} for side, v in parts.items()}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    assert sum(len(v) for v in parts.values()) == len(samples)
    for side in ("val", "test"):
        per_label = {lab: len({s.patient_id for s in parts[side] if s.label == lab}) for lab in D.DEFAULT_CLASSES}
        assert all(n == 8 for n in per_label.values()), per_label  # 20% of 40 patients per class
    again = D.split_samples(samples, 0.2, 0.2, seed=3)
    assert [s.path for s in again["test"]] == [s.path for s in parts["test"]]


def test_split_round_trips_through_csv(tmp_path):
    samples = [D.Sample(f"/x/{i}.png", "normal" if i % 2 else "pneumonia", "s", f"p{i}", "g" if i < 2 else "")
               for i in range(20)]
    parts = D.split_samples(samples, seed=0)
    back = D.load_split(D.save_split(parts, tmp_path / "split.csv"))
    assert back == parts


def test_unreadable_files_are_skipped_listed_and_cached(tmp_path, make_png, caplog):
    good = [D.Sample(str(make_png(tmp_path / f"g{i}.png")), "normal", "s", f"p{i}") for i in range(3)]
    bad_path = tmp_path / "broken.png"
    bad_path.write_bytes(b"\x89PNG garbage")
    samples = good[:1] + [D.Sample(str(bad_path), "pneumonia", "s", "pb")] + good[1:]
    cfg = PreprocessConfig(16)
    with caplog.at_level(logging.WARNING):
        a = D.load_arrays(samples, D.DEFAULT_CLASSES, cfg, tmp_path / "cache")
    assert a.images.shape == (3, 16, 16) and list(a.labels) == [0, 0, 0]
    assert len(a.failed) == 1 and "broken.png" in a.failed[0][1]
    assert "skipped 1 unreadable file(s) of 4" in caplog.text
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    b = D.load_arrays(samples, D.DEFAULT_CLASSES, cfg, tmp_path / "cache")  # from the cache
    assert np.array_equal(a.images, b.images) and b.failed == a.failed


def test_real_data_manifest_and_split(real_data):
    s = D.scan(real_data)
    assert len(s) == 1396
    assert {x.source for x in s} == {"nih_dcn", "tbx11k"}
    parts = D.split_samples(s, seed=0)
    keys = {side: {x.split_key for x in v} for side, v in parts.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"])
    # TBX11K pseudo-patient groups stay on one side
    groups = {}
    for side, v in parts.items():
        for x in v:
            if x.group:
                groups.setdefault(x.group, set()).add(side)
    assert groups and all(len(sides) == 1 for sides in groups.values())


def test_a_copy_of_the_training_films_is_not_new_data(tmp_path, make_png):
    """review27b #6: `benchmarks --data COPY` scored the model on copies of its own training films, and
    `benchmarks.validate` never checked; films are matched by content as well as by path."""
    import json
    import shutil

    from pathlib import Path

    from benchmarks.validate import _unseen

    for i, c in enumerate(("normal", "pneumonia", "tuberculosis") * 2):
        make_png(tmp_path / "data" / c / f"f{i}.png")  # random pixels: every film differs
    parts = D.split_samples(D.scan(tmp_path / "data"), 0.3, 0.3, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    D.save_split(parts, run / "split.csv")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    copy = D.scan(tmp_path / "copy")
    seen = D.seen_by(run, copy)
    trained = {Path(s.path).name for side in ("train", "val") for s in parts[side]}
    assert {Path(s.path).name for s in seen} == trained and len(seen) < len(copy)
    from tests.fake_bundle import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "bundle.json").write_text(json.dumps({"run_dir": str(run)}))
    kept, left, checked = _unseen(bundle, copy)
    assert checked and len(left) == len(trained) and {Path(s.path).name for s in kept}.isdisjoint(trained)
    (bundle / "bundle.json").write_text(json.dumps({"run_dir": str(tmp_path / "gone")}))
    assert _unseen(bundle, copy) == (copy, [], False)


def test_class_folders_are_one_source_not_one_per_class(tmp_path, make_png):
    """review27b #7: a plain ImageFolder got one source per class folder (so normal vs pneumonia was never
    within one source), Kermany given as chest_xray/ got sources train/test/val, and TBX11K given as imgs/ got
    health/tb."""
    for c in ("NORMAL", "pneumonia", "TB"):
        make_png(tmp_path / "clinic" / c / f"{c}1.png")
    assert {x.source for x in D.scan(tmp_path / "clinic")} == {"clinic"}
    for side in ("train", "test", "val"):
        for c in ("NORMAL", "PNEUMONIA"):
            make_png(tmp_path / "chest_xray" / side / c / f"person{side}{c}_bacteria_1.png")
    assert {x.source for x in D.scan(tmp_path / "chest_xray", ("normal", "pneumonia"))} == {"kermany"}
    make_png(tmp_path / "imgs" / "health" / "h1.png")
    make_png(tmp_path / "imgs" / "tb" / "t1.png")
    assert {x.source for x in D.scan(tmp_path / "imgs", ("normal", "tuberculosis"))} == {"tbx11k"}
