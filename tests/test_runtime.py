"""The settings every shell shares, read once from an environment mapping (no monkeypatching)."""

from __future__ import annotations

import pytest

from mia_robustness.errors import OptionsError
from mia_robustness.runtime import ENV_SANDBOX_MEMORY_MB, ENV_TEMP_DIR, MB, RuntimeSettings
from mia_robustness.serving.settings import ServerSettings, TrainingSettings


def test_defaults_leave_every_limit_to_the_engine():
    settings = RuntimeSettings.from_env({})
    assert settings.audit_arguments() == {
        "limits": None,
        "workdir": None,
        "max_memory_mb": None,
        "sandbox_memory_mb": None,
        "cache": None,  # no reference cache unless MIA_CACHE_DIR names a folder
        "cluster": None,
    }
    assert settings.log_level == "info"


def test_the_cluster_setting_is_a_scheduler_address_parsed_once():
    assert (
        RuntimeSettings.from_env({"MIA_DASK_SCHEDULER": " tcp://10.0.0.5:8786 "}).cluster
        == "tcp://10.0.0.5:8786"
    )
    assert RuntimeSettings.from_env({"MIA_DASK_SCHEDULER": "tcp://algo-1:8786"}).audit_arguments()[
        "cluster"
    ] == ("tcp://algo-1:8786")
    for bad in ("10.0.0.5:8786", "tcp://host", "tcp://host:99999", "http://host:8786", "tcp://h:1/x"):
        with pytest.raises(OptionsError, match="MIA_DASK_SCHEDULER") as caught:
            RuntimeSettings.from_env({"MIA_DASK_SCHEDULER": bad})
        assert caught.value.code == "bad_setting"


def test_every_shell_reads_the_same_shared_settings(tmp_path):
    environ = {
        ENV_TEMP_DIR: str(tmp_path),
        ENV_SANDBOX_MEMORY_MB: "3000",
        "MIA_MAX_AUDIT_MEMORY_MB": "512",
        "MIA_MAX_ARCHIVE_MEMBERS": "20",
        "MIA_LOG_LEVEL": "debug",
    }
    shared = RuntimeSettings.from_env(environ)
    assert ServerSettings.from_env(environ, cpus=2).runtime == shared
    assert TrainingSettings.from_env(environ).runtime == shared
    arguments = shared.audit_arguments()
    assert arguments["workdir"] == tmp_path and arguments["sandbox_memory_mb"] == 3000
    assert arguments["max_memory_mb"] == 512 and arguments["limits"].max_members == 20
    assert shared.max_audit_memory_bytes == 512 * MB and shared.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (ENV_SANDBOX_MEMORY_MB, "12"),  # below what an interpreter with scikit-learn maps
        (ENV_SANDBOX_MEMORY_MB, "lots"),
        (ENV_TEMP_DIR, "/no/such/folder"),
        ("MIA_MAX_COMPRESSION_RATIO", "nan"),
        ("MIA_LOG_LEVEL", "chatty"),
    ],
)
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(OptionsError) as caught:
        RuntimeSettings.from_env({name: value})
    assert caught.value.code == "bad_setting" and name in caught.value.message
