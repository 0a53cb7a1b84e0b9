"""--cache_dir: a second start loads compiled models from OpenVINO's cache; "auto" models only with allow_cache."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
from conftest import RunningServer


def _from_cache(server: RunningServer) -> dict[str, bool]:
    """Whether OpenVINO loaded each served model's compiled blob from the cache instead of compiling it."""
    found = {}
    for name, entry in server.server.manager.models.items():
        servable = entry.versions[1].servable
        assert servable is not None, name
        found[name] = bool(servable.compiled.get_property("LOADED_FROM_CACHE"))
    return found


def test_a_second_start_compiles_nothing_but_auto_models(repository: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    names = {"fixed": {}, "auto": {"batch_size": "auto"}, "auto_cached": {"batch_size": "auto", "allow_cache": True}}
    for add, name in enumerate(names):  # different networks: one could not load from another's blob
        models.save(models.add_mul(shape=(1, 4), add=add), repository, name)
    document = {
        "model_config_list": [
            {"config": {"name": name, "base_path": name, "plugin_config": models.F32, **settings}}
            for name, settings in names.items()
        ]
    }
    config = models.write_config(repository, document)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    first = RunningServer(config, cache_dir=cache)
    try:
        assert _from_cache(first) == {"fixed": False, "auto": False, "auto_cached": False}
        assert len(list(cache.iterdir())) == 2  # a blob for "fixed" and "auto_cached"
        np.testing.assert_array_equal(first.predict("auto_cached", {"x": x})["y"], (x + 2) * 2)  # batch 3: cached
        np.testing.assert_array_equal(first.predict("auto", {"x": x})["y"], (x + 1) * 2)  # batch 3: not cached
        assert len(list(cache.iterdir())) == 3
    finally:
        first.stop()

    second = RunningServer(config, cache_dir=cache)
    try:
        assert _from_cache(second) == {"fixed": True, "auto": False, "auto_cached": True}
        np.testing.assert_array_equal(second.predict("fixed", {"x": x[:1]})["y"], x[:1] * 2)
        np.testing.assert_array_equal(second.predict("auto_cached", {"x": x})["y"], (x + 2) * 2)
        assert _from_cache(second)["auto_cached"]  # reloaded for batch 3 from the blob of the first run
        assert len(list(cache.iterdir())) == 3
    finally:
        second.stop()
