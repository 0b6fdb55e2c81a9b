"""Evaluator metrics on tiny fixtures whose values are computed by hand, and one end-to-end run."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from workers.evaluate import (EaseConfig, PeerConfig, bucket_of, evaluate, hr_at_k, load_csv, main, ndcg_at_k,
                              peer_recommender, recall_at_k)


def test_recall_hand_computed():
    assert recall_at_k([1, 2, 3, 4], {2, 4, 9}, 2) == pytest.approx(1 / 3)  # only 2 is in the top 2
    assert recall_at_k([1, 2, 3, 4], {2, 4, 9}, 4) == pytest.approx(2 / 3)
    assert recall_at_k([5, 6], {1}, 2) == 0.0


def test_hr_hand_computed():
    assert hr_at_k([1, 2, 3], {3}, 2) == 0.0
    assert hr_at_k([1, 2, 3], {3}, 3) == 1.0


def test_ndcg_hand_computed():
    # hits at ranks 1 and 3 of 3; two relevant: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3)
    assert ndcg_at_k([7, 8, 9], {7, 9}, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k([7, 8, 9], {7}, 3) == pytest.approx(1.0)
    assert ndcg_at_k([8, 7], {7}, 2) == pytest.approx(1 / math.log2(3))


def test_buckets():
    assert [bucket_of(n) for n in (0, 1, 2, 3, 40)] == ["0", "1-2", "1-2", "3+", "3+"]


def _write_csvs(tmp_path):
    """Two taste groups of 8 items; each user likes 5 of their group's items, then a 6th."""
    train, test, t = [], [], 1_000_000
    rng = np.random.default_rng(0)
    for u in range(1, 61):
        items = list(range(1 + 10 * (u % 2), 9 + 10 * (u % 2)))
        rng.shuffle(items)
        for i in items[:5]:
            t += 60
            train.append((u, i, t, "like"))
        test.append((u, items[5]))
    # Noise: a long tail of items other users touched once, so guessing is hard.
    for n, item in enumerate(range(100, 180)):
        t += 60
        train.append((100 + n, item, t, "click"))
    rows = train + [(u, i, t + 60 * (k + 1), "like") for k, (u, i) in enumerate(test)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "type"]).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"item_id": list(range(1, 20)) + list(range(100, 180)),
                  "category": ["a"] * 99, "price": 100.0, "platform": "ozon", "geo_id": None}).to_csv(
        tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": range(1, 61), "gender": "f", "age_or_age_group": 30, "geo_id": 213}).to_csv(
        tmp_path / "users.csv", index=False)


def test_end_to_end_on_csv(tmp_path, monkeypatch):
    import shared.serving

    # Neighbours alone: in this fixture everyone shares one segment, so segment
    # popularity would mix the two groups and hide what the test is about.
    monkeypatch.setattr(shared.serving, "COLLABORATIVE_POPULARITY", 0.0)
    _write_csvs(tmp_path)
    ds = load_csv(tmp_path / "i.csv", tmp_path / "items.csv", tmp_path / "users.csv")
    assert set(ds.users["age_group"]) == {"25-34"}
    # 440 interactions; the last 60 (one per user) are the test part.
    result = evaluate(ds, quantile=380 / 440, progress=None)
    assert result["split"]["test_users"] == 60
    all_ = result["at_k"]["10"]["all"]
    assert set(all_) == {"users", "service", "toppop", "random", "peer"}
    for model in ("service", "toppop", "random", "peer"):
        assert 0.0 <= all_[model]["recall"] <= 1.0
    assert result["at_k"]["10"]["3+"]["users"] == 60
    # The service follows the taste groups; random and TopPop cannot.
    assert all_["service"]["recall"] >= 0.9
    assert all_["service"]["recall"] > all_["random"]["recall"]
    assert all_["service"]["recall"] > all_["toppop"]["recall"]
    assert 0 < result["coverage"]["service"] <= 1
    main(["--interactions", str(tmp_path / "i.csv"), "--items", str(tmp_path / "items.csv"),
          "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["k"] == 20 and "3+" in written["buckets"]
    assert (tmp_path / "out" / "metrics.png").stat().st_size > 0


def _pairs(rows):
    return pd.DataFrame([(u, i, True) for u, i in rows], columns=["user_id", "item_id", "liked"])


def test_ease_peer_follows_co_occurrence_and_skips_rare_items():
    # Items 1 and 2 go together (users 1-3); items 3 and 4 go together (users 4-5); item 9 has one user.
    pairs = _pairs([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (4, 3), (4, 4), (5, 3), (5, 4), (6, 1), (7, 3),
                    (8, 9)])
    recommend, known = peer_recommender(pairs, EaseConfig(l2=1.0, min_users=2))
    lists = recommend([6, 7], 3)
    assert lists[6][0] == 2 and lists[7][0] == 4  # the partner item first
    assert 1 not in lists[6] and 3 not in lists[7]  # liked items are excluded
    assert all(9 not in ids for ids in lists.values())  # below min_users: not in the model
    assert known == set(range(1, 9))


def test_als_peer_excludes_liked_items():
    pairs = _pairs([(u, i) for u in range(1, 30) for i in (1, 2, 3)] + [(30, 1)])
    recommend, _ = peer_recommender(pairs, PeerConfig(factors=4, iterations=3))
    assert recommend([30], 2)[30] and 1 not in recommend([30], 2)[30]


def test_bad_csv_type_is_refused(tmp_path):
    pd.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [3], "type": ["purchase"]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit, match="type must be like or click"):
        load_csv(tmp_path / "bad.csv", None, None)


def test_an_unreachable_main_db_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    from workers.evaluate import main

    # A database that does not exist on a port nothing listens on: refused at once.
    monkeypatch.setenv("MAIN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/missing")
    assert main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eval: cannot read the main DB") and "make seed" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
