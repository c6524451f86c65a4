"""No secret is visible in any repr or str; each secret object has an explicit reveal."""

import json
import pathlib
from typing import Any

import castle


def test_talos_secrets_and_machine_configs_hide_their_keys() -> None:
    secrets = castle.talos.generate_secrets()
    yaml = secrets.reveal_yaml()
    assert "cluster:" in yaml and "key:" in yaml
    for shown in [repr(secrets), str(secrets)]:
        assert "<redacted>" in shown and secrets.cluster_id in shown
        assert "PRIVATE KEY" not in shown and "key:" not in shown

    again = castle.talos.TalosSecrets.from_yaml(yaml)
    assert again.cluster_id == secrets.cluster_id

    cfg = castle.talos.machine_config(
        secrets,
        "lab",
        "https://192.168.1.210:6443",
        "cp-1",
        "controlplane",
        "192.168.1.211/24",
        "192.168.1.1",
        nameservers=["1.1.1.1"],
        patches=["machine:\n  sysctls:\n    vm.nr_hugepages: '64'\n"],
    )
    text = cfg.reveal()
    assert "type: controlplane" in text and "vm.nr_hugepages" in text and "1.1.1.1" in text
    assert (cfg.hostname, cfg.role) == ("cp-1", "controlplane") and cfg.digest
    for shown in [repr(cfg), str(cfg)]:
        assert "<redacted>" in shown and "token" not in shown and "BEGIN" not in shown


def test_the_nic_is_selected_by_mac_and_the_default_route_has_no_destination() -> None:
    secrets = castle.talos.generate_secrets()
    args = ("lab", "https://192.168.1.211:6443", "w-1", "worker", "192.168.1.212/24", "192.168.1.1")
    text = castle.talos.machine_config(secrets, *args, mac="02:AA:bb:cc:dd:ee").reveal()
    assert 'mac(link.permanent_addr) == "02:aa:bb:cc:dd:ee"' in text
    assert "kind: LinkAliasConfig" in text and "0.0.0.0/0" not in text
    derived = castle.talos.machine_config(secrets, *args).reveal()
    assert 'mac(link.permanent_addr) == "02:' in derived


def test_a_bad_role_or_patch_is_a_config_error() -> None:
    secrets = castle.talos.generate_secrets()
    args = ("lab", "https://10.0.0.1:6443", "n", "boss", "10.0.0.2/24", "10.0.0.1")
    try:
        castle.talos.machine_config(secrets, *args)
    except castle.ConfigError as e:
        assert "controlplane" in str(e)
    else:
        raise AssertionError("a bad role was accepted")


def test_no_lab_secret_shows_in_anything_castle_returns(lab: pathlib.Path, lab_secrets: list[str]) -> None:
    config = castle.Config.load(lab)
    cluster = castle.Castle(config)
    events: list[dict[str, Any]] = []
    report = cluster.create(on_event=events.append)
    shown = "\n".join(
        [
            repr(config),
            str(config),
            repr(cluster),
            cluster.summary(),
            repr(report),
            report.table(),
            json.dumps(report.to_dict()),
            json.dumps(cluster.plan()),
            json.dumps(cluster.status()),
            json.dumps(events),
            (report.run_dir / "events.jsonl").read_text(),
        ]
    )
    assert len(lab_secrets) >= 5
    for value in lab_secrets:
        assert value not in shown
