import pytest

from geopak.provinces import (
    NUM_PROVINCES,
    PROVINCE_NAMES,
    PROVINCES,
    UnknownProvinceError,
    normalize_province,
    province_by_id,
)

CASES = {
    "Sindh": ["sindh", "SINDH", " Sind ", "PK-SD", "Sindh Province"],
    "Punjab": ["Punjab", "punjab, pakistan", "PK-PB"],
    "Khyber Pakhtunkhwa": ["KPK", "KP", "NWFP", "N.W.F.P.", "F.A.T.A.", "Khyber Pakhtunkhwa", "khyber-pakhtunkhwa", "FATA",
                           "Federally Administered Tribal Areas", "PK-KP"],
    "Islamabad Capital Territory": ["ICT", "F.C.T.", "Islamabad", "Islamabad Capital Territory", "islamabad_capital_territory"],
    "Gilgit-Baltistan": ["GB", "Gilgit-Baltistan", "gilgit baltistan", "Northern Areas"],
    "Balochistan": ["Balochistan", "Baluchistan", "BALOCHISTAN"],
    "Azad Kashmir": ["AJK", "Azad Kashmir", "Azad Jammu and Kashmir", "Azad Jammu & Kashmir", "azad-kashmir"],
}


@pytest.mark.parametrize("canonical,alias", [(c, a) for c, al in CASES.items() for a in al])
def test_aliases(canonical, alias):
    assert normalize_province(alias).name == canonical


def test_canonical_order_and_codes():
    assert NUM_PROVINCES == 7
    assert [p.iso for p in PROVINCES] == ["PK-SD", "PK-PB", "PK-KP", "PK-IS", "PK-GB", "PK-BA", "PK-JK"]
    assert [p.id for p in PROVINCES] == list(range(7))
    assert normalize_province("kpk").iso == "PK-KP"
    assert province_by_id(3).name == PROVINCE_NAMES[3] == "Islamabad Capital Territory"
    assert sum(p.batch_quota for p in PROVINCES) == 64
    assert sum(p.seed_count for p in PROVINCES) == 90_515


@pytest.mark.parametrize("bad", ["Kashmir", "Jammu", "Delhi", "", "Punjab India", "Lahore"])
def test_unknown_is_a_clear_error(bad):
    with pytest.raises(UnknownProvinceError, match="unknown province"):
        normalize_province(bad)


def test_non_text_is_an_error():
    with pytest.raises(UnknownProvinceError):
        normalize_province(None)  # type: ignore[arg-type]
