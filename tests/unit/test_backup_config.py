"""ctbackup's config: defaults, the example in its docstring, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctmanager.backupnode import config
from ctmanager.errors import InputError


def _example() -> str:
    doc = config.__doc__ or ""
    lines = doc.split("default /etc/ctmanager/ctbackup.toml):", 1)[1].split("Unknown keys", 1)[0]
    return "\n".join(line[4:] for line in lines.splitlines())


def test_the_documented_example_loads_as_documented(tmp_path: Path) -> None:
    p = tmp_path / "ctbackup.toml"
    p.write_text(_example())
    c = config.load(p)
    assert (c.data, c.node, c.rpo) == ("/export/data", "storage-101-4", 60)
    assert c.repo.location == "ssh://ctbackup@10.101.1.9/./eu-west/storage-101-4"
    assert c.repo.base_dir == "/var/lib/ctbackup/borg" and c.repo.key_file == "/etc/ctmanager/backup_ed25519"
    assert c.limits == config.Limits(20 << 20, 10, 7, 40.0, 4.0, 20.0)


@pytest.mark.parametrize("change, says", [
    (('node = "storage-101-4"', 'node = "a b"'), "node"),
    (("rpo = 60", "rpo = 1"), "rpo: must be between 5"),
    (('location = "ssh://ctbackup@10.101.1.9/./eu-west/storage-101-4"', 'location = "ssh://x@h/../etc"'),
     "location: must be ssh://"),
    (('location = "ssh://ctbackup@10.101.1.9/./eu-west/storage-101-4"', 'location = "rm -rf /; x"'), "location"),
    (('upload = "20M"', 'upload = "fast"'), "upload"),
    (("nice = 10", "nice = 40"), "nice: must be between 0 and 19"),
    (("max_hold = 20", "max_hld = 20"), "unknown key (did you mean 'max_hold'?)"),
])
def test_bad_values_are_refused_in_one_line_naming_the_field(tmp_path: Path, change: tuple[str, str],
                                                             says: str) -> None:
    text = _example()
    assert change[0] in text
    p = tmp_path / "ctbackup.toml"
    p.write_text(text.replace(change[0], change[1]))
    with pytest.raises(InputError) as e:
        config.load(p)
    assert says in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_a_local_repository_needs_no_ssh_settings(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('node = "backup-101-9"\n[repository]\nlocation = "/srv/ctbackup/eu-west/storage-101-4"\n')
    c = config.load(p)
    assert c.repo.key_file == "" and c.repo.location.startswith("/srv/")
