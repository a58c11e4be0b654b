"""Kafka TLS and SASL and the notification worker's secrets as the chart renders them:
what each pod mounts and reads from Secrets, and that each process's real settings class
accepts the environment and files a pod would have (the TLS files made by a test PKI)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Final

import helm_python
import kubernetes_validate
import pytest
from cryptography.hazmat.primitives import serialization

from api_gateway.settings import GatewaySettings
from billing_fleet.kafka_security import MECHANISMS, PROTOCOLS, kafka_security
from billing_fleet.settings import CoreSettings
from fleet.settings import DevSettings
from tests.chart.chart_support import (
    CHART,
    KUBE_VERSIONS,
    SCENARIOS,
    full_name,
    manifests,
    of_kind,
    pod_specs,
)
from tests.tls_certs import Pki, make_pki
from workers.notification.settings import NotificationSettings
from workers.notification.webhooks.endpoints import load_endpoints
from workers.registry import WORKERS

TLS_DIR: Final = "/etc/billing-fleet/kafka-tls"
KAFKA_SECURITY_ENV: Final = frozenset(
    {
        "BILLING_KAFKA_SSL_CAFILE",
        "BILLING_KAFKA_SSL_CERTFILE",
        "BILLING_KAFKA_SSL_KEYFILE",
        "BILLING_KAFKA_SSL_KEY_PASSWORD",
        "BILLING_KAFKA_SSL_CHECK_HOSTNAME",
        "BILLING_KAFKA_SASL_MECHANISM",
        "BILLING_KAFKA_SASL_USERNAME",
        "BILLING_KAFKA_SASL_PASSWORD",
    }
)
NOTIFICATION_ENV: Final = frozenset(
    {"BILLING_NOTIFICATION_SMTP_PASSWORD", "BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH"}
)
KEY_PASSWORD: Final = b"the-client-key-password"
ENDPOINTS_YAML: Final = (
    b"endpoints:\n"
    b"  - id: accounting\n"
    b"    url: https://accounting.internal/hooks/billing\n"
    b"    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n"
)
# What an operator's Secret holds for each of the chart's secret settings.
SECRET_SAMPLES: Final = {
    "databaseUrl": b"postgresql://billing@postgres:5432/billing",
    "stripeWebhookSecrets": b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "jwtHs256Secret": b"an-operator-secret-of-at-least-32-bytes",
    "notificationSmtpPassword": b"the-smtp-password",
    "notificationWebhookEndpoints": ENDPOINTS_YAML,
}
SASL_USERNAME: Final = b"billing-fleet"
SASL_PASSWORD: Final = b"the-sasl-password"


def kafka_clients(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Deployment/name`` -> pod spec of every process that talks to Kafka."""
    return {k: v for k, v in pod_specs(objects).items() if k.startswith("Deployment/")}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_files(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret, key) of every file a Secret volume puts there."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    files: dict[str, tuple[str, str]] = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def encrypted_client_key(pki: Pki) -> bytes:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD),
    )


def operator_secrets(values: dict[str, Any], pki: Pki) -> dict[tuple[str, str], bytes]:
    """(Secret, key) -> content of the existing Secrets a scenario's values name."""
    found: dict[tuple[str, str], bytes] = {}
    for setting, s in values.get("secrets", {}).items():
        if s.get("existingSecret"):
            found[(s["existingSecret"], s["key"])] = SECRET_SAMPLES[setting]
    tls = values.get("kafka", {}).get("tls", {})
    for key, content in (
        (tls.get("caKey"), pki.ca.read_bytes()),
        (tls.get("certKey"), pki.client_cert.read_bytes()),
        (tls.get("keyKey"), encrypted_client_key(pki)),
        (tls.get("keyPasswordKey"), KEY_PASSWORD),
    ):
        if key and tls.get("existingSecret"):
            found[(tls["existingSecret"], key)] = content
    sasl = values.get("kafka", {}).get("sasl", {})
    if sasl.get("existingSecret"):
        found[(sasl["existingSecret"], sasl["usernameKey"])] = SASL_USERNAME
        found[(sasl["existingSecret"], sasl["passwordKey"])] = SASL_PASSWORD
    return found


def chart_secrets(objects: list[dict[str, Any]]) -> dict[tuple[str, str], bytes]:
    """(Secret, key) -> content of the Secrets the chart creates itself (trial values)."""
    return {
        (name, key): base64.b64decode(value)
        for name, secret in of_kind(objects, "Secret").items()
        for key, value in secret["data"].items()
    }


def settings_class_of(container: dict[str, Any]) -> type[CoreSettings]:
    """What ``billing-fleet ARGS`` reads (as fleet/cli.py chooses it)."""
    match container["args"]:
        case ["gateway"]:
            return GatewaySettings
        case ["worker", name]:
            return WORKERS[name].settings_class()
        case ["migrate"]:
            return DevSettings
    raise AssertionError(container["args"])


def pod_environment(
    objects: list[dict[str, Any]],
    spec: dict[str, Any],
    secrets: dict[tuple[str, str], bytes],
    root: Path,
) -> dict[str, str]:
    """The container's environment as the kubelet would give it, its Secret and ConfigMap
    volumes written under ``root`` (paths in the env point there)."""
    (container,) = spec["containers"]
    config_maps = of_kind(objects, "ConfigMap")
    volumes = {v["name"]: v for v in spec["volumes"]}
    moved: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "secret" in volume:
            files = {
                item["path"]: secrets[(volume["secret"]["secretName"], item["key"])]
                for item in volume["secret"]["items"]
            }
        elif "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            files = {name: text.encode() for name, text in data.items()}
        else:
            continue
        target.mkdir(parents=True)
        for name, content in files.items():
            (target / name).write_bytes(content)
        moved[mount["mountPath"]] = str(target)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= config_maps[source["configMapRef"]["name"]]["data"]
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])].decode()
        else:
            env[entry["name"]] = entry["value"]
    for name, value in env.items():
        for mount_path, target in moved.items():
            if value.startswith(f"{mount_path}/"):
                env[name] = target + value.removeprefix(mount_path)
    return env


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_production_mounts_the_kafka_tls_files_into_every_kafka_client(kube_version: str) -> None:
    objects = manifests(SCENARIOS["production"])
    clients = kafka_clients(objects)
    assert set(clients) == {f"Deployment/{full_name('gateway')}"} | {
        f"Deployment/{full_name(f'worker-{w}')}" for w in WORKERS
    }
    for where, spec in clients.items():
        (c,) = spec["containers"]
        env = env_of(c)
        assert env["BILLING_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL", where
        assert env["BILLING_KAFKA_SSL_CHECK_HOSTNAME"]["value"] == "true", where
        files = secret_files(spec, c)
        ca_file = env["BILLING_KAFKA_SSL_CAFILE"]["value"]
        assert files[ca_file] == ("billing-fleet-kafka-tls", "ca.crt"), where
        [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == TLS_DIR]
        assert mount["readOnly"] is True and "subPath" not in mount, where
        # No client certificate in this scenario: nothing else from the TLS Secret.
        assert {f for f, (s, _) in files.items() if s == "billing-fleet-kafka-tls"} == {ca_file}
        assert "BILLING_KAFKA_SSL_CERTFILE" not in env and "BILLING_KAFKA_SSL_KEYFILE" not in env
        assert env["BILLING_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512", where
        for name, key in (("USERNAME", "username"), ("PASSWORD", "password")):
            assert env[f"BILLING_KAFKA_SASL_{name}"]["valueFrom"] == {
                "secretKeyRef": {"name": "billing-fleet-kafka-sasl", "key": key}
            }, where
    for deployment in of_kind(objects, "Deployment").values():
        kubernetes_validate.validate(deployment, kube_version, strict=True)


@pytest.mark.parametrize("scenario", ["production", "everything"])
def test_the_migrate_job_gets_no_kafka_security(scenario: str) -> None:
    """It never connects to Kafka; the protocol without the files would refuse to load."""
    objects = manifests(SCENARIOS[scenario])
    spec = of_kind(objects, "Job")[full_name("migrate")]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert not (KAFKA_SECURITY_ENV | {"BILLING_KAFKA_SECURITY_PROTOCOL"}) & set(env_of(c))
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]


@pytest.mark.parametrize("scenario", ["production", "everything"])
def test_the_notification_secrets_reach_only_the_notification_worker(scenario: str) -> None:
    objects = manifests(SCENARIOS[scenario])
    notification = f"Deployment/{full_name('worker-notification')}"
    for where, spec in pod_specs(objects).items():
        (c,) = spec["containers"]
        env = env_of(c)
        if where != notification:
            assert not NOTIFICATION_ENV & set(env), where
            assert "webhook-endpoints" not in {v["name"] for v in spec["volumes"]}, where
            continue
        assert "secretKeyRef" in env["BILLING_NOTIFICATION_SMTP_PASSWORD"]["valueFrom"]
        endpoints = SCENARIOS[scenario]["secrets"]["notificationWebhookEndpoints"]
        path = env["BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH"]["value"]
        assert secret_files(spec, c)[path] == (endpoints["existingSecret"], endpoints["key"])
        # A directory mount, never subPath: the kubelet updates it in place, and the worker
        # re-reads the file when it changes (an endpoint change needs no restart).
        [mount] = [m for m in c["volumeMounts"] if m["name"] == "webhook-endpoints"]
        assert mount["readOnly"] is True and "subPath" not in mount
        assert path.startswith(f"{mount['mountPath']}/")


@pytest.mark.parametrize("scenario", ["minimal", "default"])
def test_without_the_blocks_nothing_is_mounted_and_kafka_is_plaintext(scenario: str) -> None:
    for where, spec in pod_specs(manifests(SCENARIOS[scenario])).items():
        (c,) = spec["containers"]
        env = env_of(c)
        assert not (KAFKA_SECURITY_ENV | NOTIFICATION_ENV) & set(env), where
        assert not {"kafka-tls", "webhook-endpoints"} & {v["name"] for v in spec["volumes"]}
        if where.startswith("Deployment/"):
            assert env["BILLING_KAFKA_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT", where


def test_everything_mounts_mutual_tls_and_every_secret() -> None:
    objects = manifests(SCENARIOS["everything"])
    for where, spec in kafka_clients(objects).items():
        (c,) = spec["containers"]
        env = env_of(c)
        files = secret_files(spec, c)
        assert {
            name: files[env[name]["value"]]
            for name in (
                "BILLING_KAFKA_SSL_CAFILE",
                "BILLING_KAFKA_SSL_CERTFILE",
                "BILLING_KAFKA_SSL_KEYFILE",
            )
        } == {
            "BILLING_KAFKA_SSL_CAFILE": ("kafka-client-tls", "ca.crt"),
            "BILLING_KAFKA_SSL_CERTFILE": ("kafka-client-tls", "tls.crt"),
            "BILLING_KAFKA_SSL_KEYFILE": ("kafka-client-tls", "tls.key"),
        }, where
        assert env["BILLING_KAFKA_SSL_KEY_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "kafka-client-tls", "key": "key-password"}
        }, where
        assert env["BILLING_KAFKA_SSL_CHECK_HOSTNAME"]["value"] == "false", where
        assert env["BILLING_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-256", where
    # The SMTP password's trial value is in the chart's own Secret, and read from there.
    (c,) = kafka_clients(objects)[f"Deployment/{full_name('worker-notification')}"]["containers"]
    ref = env_of(c)["BILLING_NOTIFICATION_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert chart_secrets(objects)[(ref["name"], ref["key"])] == b"a-trial-smtp-password"


@pytest.mark.parametrize("scenario", ["production", "everything", "minimal"])
def test_each_process_accepts_the_settings_its_pod_gets(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each container's environment and mounted files, from Secrets holding real
    certificates, load in the settings class of the command it runs; the Kafka clients'
    security is what the scenario asks for, and the migrate Job's is plaintext."""
    values = SCENARIOS[scenario]
    pki = make_pki(tmp_path)
    objects = manifests(values)
    secrets = operator_secrets(values, pki) | chart_secrets(objects)
    kafka = values.get("kafka", {})
    tls = kafka.get("tls", {}).get("enabled", False)
    sasl = kafka.get("sasl", {}).get("enabled", False)
    wanted = {(True, True): "SASL_SSL", (True, False): "SSL", (False, True): "SASL_PLAINTEXT"}
    for index, (where, spec) in enumerate(sorted(pod_specs(objects).items())):
        env = pod_environment(objects, spec, secrets, tmp_path / f"pod{index}")
        with monkeypatch.context() as patch:
            for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
                patch.delenv(name, raising=False)
            for name in [n for n in os.environ if n.startswith("BILLING_")]:
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            (c,) = spec["containers"]
            settings = settings_class_of(c)()
        security = kafka_security(settings)
        if where.startswith("Job/"):
            assert security.protocol == "PLAINTEXT", where
            continue
        assert security.protocol == wanted.get((tls, sasl), "PLAINTEXT"), where
        if tls:
            assert security.ssl_context is not None
            [ca] = security.ssl_context.get_ca_certs()
            # The mounted CA file, not the system's CAs, is what the context trusts.
            assert "billing-fleet test CA" in str(ca["subject"]), where
        if sasl:
            assert (security.username, security.password) == (
                SASL_USERNAME.decode(),
                SASL_PASSWORD.decode(),
            ), where
        notification = where == f"Deployment/{full_name('worker-notification')}"
        if notification and "notificationWebhookEndpoints" in values.get("secrets", {}):
            assert isinstance(settings, NotificationSettings)
            assert settings.notification_webhook_endpoints_path is not None
            endpoints = load_endpoints(settings.notification_webhook_endpoints_path)
            assert [e.id for e in endpoints.endpoints] == ["accounting"]
            assert settings.notification_smtp_password is not None
            assert settings.notification_smtp_password.get_secret_value() in {
                SECRET_SAMPLES["notificationSmtpPassword"].decode(),
                values["secrets"]["notificationSmtpPassword"].get("value"),
            }


@pytest.mark.parametrize(
    ("kafka", "protocol"),
    [
        ({}, "PLAINTEXT"),
        ({"tls": {"enabled": True}}, "SSL"),
        ({"sasl": {"enabled": True, "existingSecret": "kafka-sasl"}}, "SASL_PLAINTEXT"),
        (
            {"tls": {"enabled": True}, "sasl": {"enabled": True, "existingSecret": "kafka-sasl"}},
            "SASL_SSL",
        ),
        # Explicit: TLS checked against the image's system CAs, without the tls block.
        ({"securityProtocol": "SSL"}, "SSL"),
    ],
)
def test_the_protocol_is_derived_unless_set(kafka: dict[str, Any], protocol: str) -> None:
    objects = manifests({"kafka": kafka})
    for where, spec in kafka_clients(objects).items():
        (c,) = spec["containers"]
        env = env_of(c)
        assert env["BILLING_KAFKA_SECURITY_PROTOCOL"]["value"] == protocol, where
        # No existingSecret: the system's CAs, so no file and no mount.
        assert "BILLING_KAFKA_SSL_CAFILE" not in env, where
        assert "kafka-tls" not in {v["name"] for v in spec["volumes"]}, where


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"securityProtocol": "PLAINTEXT", "tls": {"enabled": True}}, "needs a TLS protocol"),
        ({"securityProtocol": "SASL_SSL"}, "disagree"),
        (
            {"securityProtocol": "SSL", "sasl": {"enabled": True, "existingSecret": "s"}},
            "disagree",
        ),
        ({"sasl": {"enabled": True}}, "kafka.sasl.existingSecret"),
        ({"tls": {"enabled": True, "certKey": "tls.crt"}}, "kafka.tls.existingSecret"),
        (
            {"tls": {"enabled": True, "existingSecret": "t", "keyKey": "tls.key"}},
            "keyKey needs kafka.tls.certKey",
        ),
    ],
)
def test_combinations_the_settings_would_refuse_fail_the_render(
    kafka: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        manifests({"kafka": kafka})


def test_the_schema_offers_what_the_settings_accept() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["kafka"]
    assert schema["properties"]["sasl"]["properties"]["mechanism"]["enum"] == list(MECHANISMS)
    assert schema["properties"]["securityProtocol"]["enum"] == ["", *PROTOCOLS]
