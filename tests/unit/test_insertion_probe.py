"""training.insertion_probe: sites, spheres and the read share, on a synthetic label map."""
import numpy as np

from training import insertion_probe as ip

SP = (2.0, 1.0, 1.0)


def _labels():
    lab = np.full((40, 120, 120), ip.WM, np.uint8)
    lab[:, :, :6] = ip.CORTEX
    lab[:, :, -6:] = ip.CORTEX
    lab[15:25, 50:70, 50:70] = ip.VENTRICLES[0]
    return lab


def test_eligible_sites_sit_where_their_place_says():
    lab = _labels()
    from scipy import ndimage
    dv = ndimage.distance_transform_edt(lab != ip.VENTRICLES[0], sampling=SP)
    dist = ip.distances(lab, SP)
    pv = ip.eligible(lab, dist, "periventricular", 10)
    deep = ip.eligible(lab, dist, "deep", 10)
    assert pv.any() and deep.any()
    assert np.all(lab[pv] == ip.WM) and np.all(lab[deep] == ip.WM)
    assert dv[pv].min() > 2 and dv[pv].max() < 7 and dv[deep].min() > 20


def test_sites_are_apart_and_reproducible():
    lab = _labels()
    ok = ip.eligible(lab, ip.distances(lab, SP), "deep", 10)
    a = ip.pick_sites(ok, SP, 10, np.random.default_rng(5))
    b = ip.pick_sites(ok, SP, 10, np.random.default_rng(5))
    assert [tuple(x) for x in a] == [tuple(x) for x in b]
    for i in range(len(a)):
        for j in range(i):
            assert np.linalg.norm((a[i] - a[j]) * np.asarray(SP)) > 35


def test_sphere_volume_and_restriction():
    shape = (40, 80, 80)
    every = np.ones(shape, bool)
    box, occ = ip.sphere(shape, SP, (20, 40, 40), 20.0, every)
    vol_mm3 = occ.sum() * 2.0
    assert abs(vol_mm3 - 4 / 3 * np.pi * 10 ** 3) < 0.05 * 4 / 3 * np.pi * 10 ** 3
    half = every.copy()
    half[:, :, :40] = False
    box2, occ2 = ip.sphere(shape, SP, (20, 40, 40), 20.0, half)
    assert occ2.sum() < 0.6 * occ.sum() and occ2[..., : 40 - box2[2].start].max() == 0


def test_read_share_of_an_ideal_and_a_blind_reader():
    shape = (40, 80, 80)
    box, occ = ip.sphere(shape, SP, (20, 40, 40), 10.0, np.ones(shape, bool))
    base = np.zeros(shape, np.float32)
    ideal = base.copy()
    ideal[box] += occ
    ins, got = ip.site_read(base, ideal, box, occ, 0.002, 1.0)
    assert abs(got - ins) < 1e-6 and ins > 0
    assert ip.site_read(base, base, box, occ, 0.002, 1.0)[1] == 0.0
    rim = ideal.copy()  # a read spilling 2 mm beyond the sphere in-plane still counts, 6 mm beyond does not
    rim[box][occ == 0] = 0.0
    k = box[0].start + occ.shape[0] // 2
    rim[k, 40, 40 + 5 + 2] = 1.0
    rim[k, 40, 40 + 5 + 6] = 1.0
    assert abs(ip.site_read(base, rim, box, occ, 0.002, 1.0)[1] - got - 0.002) < 1e-6
    rows = [dict(place="deep", diameter_mm=10, drop_hu=5, inserted_ml=ins, read_ml=got),
            dict(place="deep", diameter_mm=10, drop_hu=5, inserted_ml=ins, read_ml=0.0)]
    s = ip.summary(rows)["deep 10 mm 5 HU"]
    assert s["sites"] == 2 and abs(s["read_share"] - 0.5) < 1e-9 and s["sites_below_0_1"] == 1
