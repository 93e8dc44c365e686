import bz2
import json

import pandas as pd
import pytest

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, HttpClient, SourceError, download_images, records_frame
from geopak.data.sources.flickr import RESULT_CAP, FlickrCrawler, photo_record
from geopak.data.sources.places import PlacesCrawler


def test_bbox_parse_contains_quadrants():
    b = BBox.parse("60,20,70,30")
    assert b.contains([25, 35], [65, 65]).tolist() == [True, False]
    q = b.quadrants()
    assert len(q) == 4 and q[0] == BBox(60, 20, 65, 25)
    with pytest.raises(ValueError, match="west,south,east,north"):
        BBox.parse("1,2,3")
    with pytest.raises(ValueError, match="invalid bounding box"):
        BBox(70, 20, 60, 30)


def _client() -> HttpClient:
    return HttpClient(retries=1, backoff_s=0.01)


def test_flickr_subdivides_capped_boxes_and_dedups(fake_server):
    calls = []

    def search(q, body):
        bbox = BBox.parse(q["bbox"][0])
        calls.append((bbox, q["page"][0]))
        assert q["has_geo"] == ["1"] and q["api_key"] == ["k"]
        # The whole box reports too many results; its quadrants fit.
        total = RESULT_CAP + 1 if bbox.size_deg > 10 else 3
        photos = [
            {"id": f"{bbox.west:.0f}{bbox.south:.0f}{i}", "owner": "u1", "latitude": str(bbox.south + 0.1),
             "longitude": str(bbox.west + 0.1), "accuracy": "16", "license": "4", "ownername": "Ali",
             "datetaken": "2020-01-01 10:00:00", "url_l": f"{fake_server.url}/img/{i}.jpg"}
            for i in range(3)
        ] + [{"id": "nogeo", "latitude": "0", "longitude": "0"}]
        return {"stat": "ok", "photos": {"page": 1, "pages": 1, "total": total, "photo": photos}}

    fake_server.json_route("/rest", search)
    crawler = FlickrCrawler("k", client=_client(), api_url=f"{fake_server.url}/rest")
    df = crawler.crawl(PAKISTAN_BBOX)
    assert len(df) == 12  # 4 quadrants x 3 photos; the zero-coordinate photo is skipped
    assert df["id"].is_unique and (df["source"] == "flickr").all()
    assert set(df["licence"]) == {"CC BY 2.0"} and (df["accuracy_m"] == 50).all()


def test_flickr_api_error_is_clear(fake_server):
    fake_server.json_route("/rest", lambda q, b: {"stat": "fail", "code": 100, "message": "Invalid API Key"})
    crawler = FlickrCrawler("bad", client=_client(), api_url=f"{fake_server.url}/rest")
    with pytest.raises(SourceError, match="Invalid API Key"):
        crawler.crawl()
    with pytest.raises(ValueError, match="API key"):
        FlickrCrawler("")


def test_photo_record_builds_static_url():
    r = photo_record({"id": "5", "server": "65", "secret": "ab", "latitude": "30", "longitude": "70", "license": "9"})
    assert r["url"] == "https://live.staticflickr.com/65/5_ab_b.jpg" and r["licence"] == "CC0 1.0"


def test_download_accounts_for_every_row(fake_server, tmp_path):
    fake_server.image_route("/ok.jpg")
    fake_server.image_route("/html", data=b"<html>" * 400, ctype="text/html")
    fake_server.image_route("/tiny.jpg", data=b"\xff\xd8\xff")
    recs = records_frame([
        {"id": "a", "url": f"{fake_server.url}/ok.jpg", "lat": 30, "lon": 70, "source": "t"},
        {"id": "b", "url": f"{fake_server.url}/missing.jpg", "lat": 30, "lon": 70, "source": "t"},
        {"id": "c", "url": f"{fake_server.url}/html", "lat": 30, "lon": 70, "source": "t"},
        {"id": "d", "url": f"{fake_server.url}/tiny.jpg", "lat": 30, "lon": 70, "source": "t"},
        {"id": "e", "url": None, "lat": 30, "lon": 70, "source": "t"},
    ])
    res = download_images(recs, tmp_path, client=_client(), workers=2)
    assert len(res.records) + len(res.rejects) == len(recs)
    assert res.records["id"].tolist() == ["a"]
    assert dict(zip(res.rejects["id"], res.rejects["reason"])) == {
        "b": "download_failed", "c": "not_an_image", "d": "too_small", "e": "no_url"}
    n_before = len(fake_server.requests)
    res2 = download_images(recs.iloc[:1], tmp_path, client=_client())  # resumable: no new request
    assert len(fake_server.requests) == n_before and len(res2.records) == 1
    m, r = res.write(tmp_path)
    df = pd.read_parquet(m)
    assert not df["path"].iloc[0].startswith("/") and (tmp_path / df["path"].iloc[0]).exists()


def test_places_keeps_key_out_of_manifest(fake_server):
    def search(q, body):
        req = json.loads(body)
        assert req["textQuery"] == "fort"
        return {"places": [{"id": "P1", "displayName": {"text": "Lahore Fort"},
                            "location": {"latitude": 31.588, "longitude": 74.315},
                            "photos": [{"name": "places/P1/photos/R1",
                                        "authorAttributions": [{"displayName": "Sara"}]}]}]}

    fake_server.json_route("/v1/places:searchText", search)
    crawler = PlacesCrawler("SECRET", client=HttpClient(retries=0, headers={"X-Goog-Api-Key": "SECRET"}),
                            api_url=f"{fake_server.url}/v1")
    df = crawler.crawl(["fort"])
    assert len(df) == 1 and "Sara" in df["attribution"].iloc[0]
    assert "SECRET" not in df.to_json()
    assert fake_server.requests[0]["headers"]["X-Goog-Api-Key"] == "SECRET"


def test_yfcc_filters_box_and_videos(tmp_path):
    from geopak.data.sources import yfcc

    def line(n, pid, lat, lon, marker):
        f = {k: "" for k in yfcc.FIELDS_25}
        f.update(line=str(n), photo_id=pid, hash="abcdef123", user_nsid="u@N0", user_nickname="nick",
                 latitude=str(lat), longitude=str(lon), accuracy="16", page_url="http://p", licence_name="CC BY 2.0",
                 download_url="http://d/x.jpg", marker=str(marker))
        return "\t".join(f[k] for k in yfcc.FIELDS_25)

    rows = [line(0, "1", 31.5, 74.3, 0), line(1, "2", 48.8, 2.3, 0), line(2, "3", 24.9, 67.0, 1), line(3, "4", "", "", 0)]
    path = tmp_path / "yfcc100m_dataset.bz2"
    path.write_bytes(bz2.compress(("\n".join(rows) + "\n").encode()))
    df = yfcc.load(path, mirror="multimedia-commons")
    assert df["id"].tolist() == ["yfcc:1"]
    assert df["url"].iloc[0].endswith("/abc/def/abcdef123.jpg")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(ValueError, match="25"):
        yfcc.load(bad)


def test_gldv2_joins_landmark_coordinates(tmp_path):
    from geopak.data.sources import gldv2

    (tmp_path / "train.csv").write_text("id,url,landmark_id\nx1,http://a/1.jpg,7\nx2,http://a/2.jpg,8\n")
    (tmp_path / "marks.csv").write_text("landmark_id,lat,lon\n7,31.59,74.31\n8,48.85,2.35\n")
    (tmp_path / "attr.csv").write_text("id,author,license\nx1,Ahmed,CC BY-SA 4.0\n")
    df = gldv2.load(tmp_path / "train.csv", tmp_path / "marks.csv", tmp_path / "attr.csv")
    assert df["id"].tolist() == ["gldv2:x1"] and df["licence"].iloc[0] == "CC BY-SA 4.0"
    with pytest.raises(ValueError, match="lacks columns"):
        gldv2.load(tmp_path / "train.csv", tmp_path / "attr.csv")


def test_crawl_cli_imports_gldv2_and_downloads_into_a_manifest(tmp_path, fake_server):
    from typer.testing import CliRunner

    from geopak.cli import app

    fake_server.image_route("/a.jpg")
    (tmp_path / "train.csv").write_text(
        f"id,url,landmark_id\nx1,{fake_server.url}/a.jpg,7\nx2,{fake_server.url}/gone.jpg,7\nx3,http://a/3.jpg,8\n"
    )
    (tmp_path / "marks.csv").write_text("landmark_id,lat,lon\n7,31.59,74.31\n8,48.85,2.35\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["crawl", "gldv2", str(tmp_path / "train.csv"), "--landmarks",
                                   str(tmp_path / "marks.csv"), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "manifest.parquet")
    rej = pd.read_csv(out / "rejects.csv")
    assert df["id"].tolist() == ["gldv2:x1"] and (out / df["path"].iloc[0]).exists()
    assert rej["id"].tolist() == ["gldv2:x2"] and rej["reason"].tolist() == ["download_failed"]
    assert "1 rows" in res.output and "1 rejected" in res.output
