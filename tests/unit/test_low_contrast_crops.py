"""train_wml.sample_batch passes the low-contrast map's probability to randomise_ct: to every randomised crop, or with
``low_contrast_negatives`` only to crops without labelled lesion, with the crop's white-matter map."""
import numpy as np
import pytest

pytest.importorskip("torch")

from training import train_wml  # noqa: E402


def _stacks():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.1, (5, 160, 160)).astype(np.float16)
    wm = np.ones((5, 160, 160), np.float16)
    with_lesion = np.zeros((5, 160, 160), np.float16)
    with_lesion[:, 60:100, 60:100] = 1.0
    return [img, img], [with_lesion, np.zeros_like(with_lesion)], [wm, wm]


@pytest.mark.parametrize("negatives_only", [False, True])
def test_low_contrast_reaches_the_crops_it_is_meant_for(monkeypatch, negatives_only):
    seen = []

    def fake(a, rng, lesion=None, low_contrast=0.0, wm_map=None, **kw):
        seen.append((float(lesion.max()), low_contrast, wm_map is not None))
        return a

    monkeypatch.setattr(train_wml, "randomise_ct", fake)
    imgs, tgts, wms = _stacks()
    index = [(0, 2), (1, 2)]
    train_wml.sample_batch(imgs, tgts, index, [0], np.random.default_rng(1), 24, crop=64, randomise=1.0,
                           contrasts=[6.0, 6.0], wms=wms, spacings=[5.0, 5.0], low_contrast=0.4,
                           low_contrast_negatives=negatives_only)
    with_les = [p for m, p, _ in seen if m >= 0.02]
    without = [p for m, p, _ in seen if m < 0.02]
    assert with_les and without and all(w for _, _, w in seen)
    assert set(without) == {0.4}
    assert set(with_les) == ({0.0} if negatives_only else {0.4})
