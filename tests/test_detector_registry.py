"""Finding detectors: built-ins, entry points of an installed distribution, module:Class settings, bad paths.

The plug-in detectors here are tiny real classes whose predict is plain arithmetic: no weights, so they say
nothing about deepfakes and the tests assert only what the registry does with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepwatch.settings import load_settings
from serve.detectors.base import Detector
from serve.detectors.registry import BUILTINS, RegistryError, available, discover, load_class, select

PLUGIN = '''
import numpy as np
from serve.detectors.base import Detector


class Brightness(Detector):
    """Not a deepfake detector: the mean brightness of the crop, for registry tests."""

    name = "{name}"
    version = "0.1"
    license = "MIT"
    source_url = "https://example.invalid/brightness"
    modality = "image"
    input_size = 32

    def load(self, models_dir, cache_dir=None):
        self.loaded = True

    def predict(self, batch):
        return batch.reshape(len(batch), -1).mean(axis=1) / 255.0


class NotADetector:
    pass


class Unfinished(Detector):
    name = "unfinished"
'''


def write_plugin(root: Path, module: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / f"{module}.py").write_text(PLUGIN.format(name=name))
    monkeypatch.syspath_prepend(str(root))


def test_the_four_mesonet_detectors_are_built_in() -> None:
    found = discover()
    assert list(found)[:4] == ["meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"]
    assert all(found[n].origin == "builtin" for n in list(found)[:4]) and len(BUILTINS) == 4
    facts = found["mesoinception4_f2f"].cls.describe()
    assert facts["modality"] == "image" and facts["input_size"] == 256 and facts["license"] == "Apache-2.0"
    assert facts["weights"][0]["sha256"].startswith("d4533ac8")
    assert facts["model_version"].startswith("mesoinception4_f2f@")


def test_a_settings_path_adds_a_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "dw_plugin_a", "brightness", monkeypatch)
    monkeypatch.setenv("DEEPWATCH_DETECTOR_PLUGINS", "dw_plugin_a:Brightness")
    found = available(load_settings())
    assert found["brightness"].origin == "setting"
    detector = found["brightness"].cls()
    detector.load(tmp_path)
    batch = np.full((2, 32, 32, 3), 51, dtype=np.uint8)
    np.testing.assert_allclose(detector.predict(batch), [0.2, 0.2])


def test_an_entry_point_of_an_installed_distribution_adds_a_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "dw_plugin_b", "brightness_ep", monkeypatch)
    dist = tmp_path / "dw_plugin_b-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dw-plugin-b\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[deepwatch.detectors]\nbrightness = dw_plugin_b:Brightness\n")
    found = discover()
    assert found["brightness_ep"].origin == "entry point brightness"
    assert found["brightness_ep"].path == "dw_plugin_b:Brightness"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("dw_plugin_c.Brightness", "must look like 'package.module:ClassName'"),
        ("no_such_module_xyz:Thing", "cannot import 'no_such_module_xyz'"),
        ("dw_plugin_c:Missing", "has no attribute 'Missing'"),
        ("dw_plugin_c:NotADetector", "not a subclass"),
        ("dw_plugin_c:Unfinished", "does not implement load, predict"),
    ],
)
def test_bad_paths_say_what_is_wrong(path: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "dw_plugin_c", "brightness_c", monkeypatch)
    with pytest.raises(RegistryError) as caught:
        load_class(path)
    assert message in str(caught.value) and path in str(caught.value)


def test_a_bad_settings_path_fails_discovery_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistryError, match="setting detector_plugins"):
        available(load_settings(detector_plugins="serve.ensemble:sigmoid"))


def test_two_detectors_with_one_name_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "dw_plugin_d", "meso4_df", monkeypatch)
    with pytest.raises(RegistryError, match="two detectors are named 'meso4_df'"):
        discover(["dw_plugin_d:Brightness"])


def test_select_keeps_the_order_given_and_names_unknown_ones() -> None:
    found = discover()
    assert [r.cls.name for r in select(found, ["mesoinception4_df", "meso4_df"])] == ["mesoinception4_df", "meso4_df"]
    assert len(select(found, None)) == len(found)
    with pytest.raises(RegistryError, match=r"unknown detector.*nope.*registered: meso4_df"):
        select(found, ["nope"])


def test_a_detector_name_must_be_a_slug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "dw_plugin_e", "Bad Name", monkeypatch)
    with pytest.raises(RegistryError, match="has name 'Bad Name'"):
        load_class("dw_plugin_e:Brightness")


def test_the_base_class_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        Detector()  # type: ignore[abstract]
