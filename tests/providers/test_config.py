"""Provider configuration: Prism's defaults, TOML files, drivers and the catalog."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from prism_backends.providers.base import Machine, MachineRequest, MachineState
from prism_backends.providers.config import (
    ProviderConfig,
    ProviderConfigError,
    default_configs,
    load_configs,
    vcpu_list,
)
from prism_backends.providers.registry import build_catalog, load_catalog
from prism_backends.vocabulary import PROVIDER_NAMES, Platform

# --- a driver loaded by "module:factory" -------------------------------------------

THIS_MODULE = __name__


class ListedProvider:
    """A driver that offers exactly Prism's vcpusSEV / vcpusTDX lists of its file."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._offerings = {
            Platform.SEV_SNP: vcpu_list(config.settings, "vcpusSEV", config.source),
            Platform.TDX: vcpu_list(config.settings, "vcpusTDX", config.source),
        }

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        return self._offerings

    @property
    def provisions_instantly(self) -> bool:
        return False

    def create(self, request: MachineRequest) -> Machine:
        return Machine(provider_machine_id=request.cvm_id, state=MachineState.CREATING)

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        return None

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        return None


def make_listed_driver(config: ProviderConfig) -> ListedProvider:
    return ListedProvider(config)


NOT_A_FACTORY = "a string is not callable"


# --- helpers -----------------------------------------------------------------------

WriteProvider = Callable[[str, str], Path]


@pytest.fixture
def providers_dir(tmp_path: Path) -> Path:
    path = tmp_path / "providers"
    path.mkdir()
    return path


@pytest.fixture
def write_provider(providers_dir: Path) -> WriteProvider:
    def _write(filename: str, text: str) -> Path:
        path = providers_dir / filename
        path.write_text(text, encoding="utf-8")
        return path

    return _write


# --- defaults: the contract's lists ----------------------------------------------

CONTRACT_VCPUS: dict[str, tuple[list[int], list[int]]] = {
    "azure": ([2, 4, 8, 16, 32, 48, 64, 96], [2, 4, 8, 16, 32, 48, 64, 96, 128]),
    "gcp": ([2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224], [4, 8, 22, 44, 88, 176]),
    "aws": ([2, 4, 8, 16, 32, 48, 64, 96, 128, 192], []),
    "ultraviolet": ([1, 2, 4, 8, 16], [1, 2, 4, 8, 16]),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_VCPUS))
def test_default_vcpu_lists_match_the_contract(name: str) -> None:
    sev, tdx = CONTRACT_VCPUS[name]
    settings = default_configs()[name].settings

    assert settings["vcpusSEV"] == sev
    assert settings["vcpusTDX"] == tdx


def test_aws_offers_no_tdx_by_default() -> None:
    config = default_configs()["aws"]
    assert vcpu_list(config.settings, "vcpusTDX", config.source) == frozenset()


def test_every_known_provider_has_a_default() -> None:
    assert set(default_configs()) == set(PROVIDER_NAMES)


def test_only_external_is_enabled_by_default() -> None:
    enabled = {name for name, config in default_configs().items() if config.enabled}
    assert enabled == {"external"}
    assert load_catalog(None).enabled_names == ["external"]


def test_external_offers_1_to_512_vcpus_on_both_platforms() -> None:
    entry = load_catalog(None).get("external")
    assert entry is not None
    expected = frozenset(range(1, 513))
    assert entry.provider.offerings[Platform.SEV_SNP] == expected
    assert entry.provider.offerings[Platform.TDX] == expected


@pytest.mark.parametrize("name", ["azure", "gcp", "aws", "ultraviolet"])
def test_providers_not_enabled_say_so(name: str) -> None:
    catalog = load_catalog(None)
    assert catalog.get(name) is None
    assert "no provider file" in catalog.why_unavailable(name)


def test_defaults_have_no_price_override() -> None:
    catalog = load_catalog(None)
    assert catalog.price_override("external", Platform.SEV_SNP) is None
    assert catalog.price_override("azure", Platform.SEV_SNP) is None


# --- TOML files --------------------------------------------------------------------


def test_a_file_overrides_its_provider_only(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    path = write_provider(
        "gcp.toml",
        'name = "gcp"\nenabled = true\n[config]\nproject_id = "my-project"\nvcpusSEV = [2, 4]\n',
    )

    configs = load_configs(providers_dir)

    gcp = configs["gcp"]
    assert gcp.enabled is True
    assert gcp.source == str(path)
    assert gcp.settings["vcpusSEV"] == [2, 4]
    assert gcp.settings["project_id"] == "my-project"
    # A list the file does not mention keeps Prism's default.
    assert gcp.settings["vcpusTDX"] == CONTRACT_VCPUS["gcp"][1]
    # Other providers keep their defaults.
    assert configs["azure"] == default_configs()["azure"]
    assert configs["external"].enabled is True


def test_a_file_may_disable_external(providers_dir: Path, write_provider: WriteProvider) -> None:
    write_provider("external.toml", 'name = "external"\nenabled = false\n')

    catalog = load_catalog(providers_dir)

    assert catalog.enabled_names == []
    assert "no provider file" in catalog.why_unavailable("external")


def test_a_file_without_enabled_enables_its_provider(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider("ultraviolet.toml", 'name = "ultraviolet"\n')
    assert load_configs(providers_dir)["ultraviolet"].enabled is True


def test_provider_name_is_case_insensitive(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider("g.toml", 'name = "GCP"\nenabled = true\n')
    assert load_configs(providers_dir)["gcp"].enabled is True


def test_external_vcpu_limit_is_configurable(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider("external.toml", 'name = "external"\n[config]\nmax_vcpus = 64\n')

    entry = load_catalog(providers_dir).get("external")

    assert entry is not None
    assert entry.provider.offerings[Platform.TDX] == frozenset(range(1, 65))


def test_pricing_table_gives_exact_per_vcpu_overrides(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider(
        "external.toml",
        'name = "external"\n[pricing]\nsev-snp = 0.0045\n"Intel TDX" = 0\n',
    )

    catalog = load_catalog(providers_dir)

    assert catalog.price_override("external", Platform.SEV_SNP) == Decimal("0.0045")
    assert catalog.price_override("external", Platform.TDX) == Decimal("0")


def test_attestation_policy_is_read_relative_to_the_file(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    (providers_dir / "snp-policy.json").write_bytes(b'{"policy": 1}')
    write_provider(
        "external.toml", 'name = "external"\n[attestation_policy]\nsev-snp = "snp-policy.json"\n'
    )

    config = load_configs(providers_dir)["external"]

    assert config.attestation_policies == {Platform.SEV_SNP: b'{"policy": 1}'}


def test_files_other_than_toml_are_ignored(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider("README.md", "not = [toml")
    write_provider("gcp.toml.disabled", 'name = "gcp"\n')
    assert load_configs(providers_dir) == default_configs()


def test_missing_providers_dir_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ProviderConfigError, match=str(missing)):
        load_configs(missing)


MALFORMED: list[tuple[str, str, str]] = [
    ("enabled-not-bool", 'name = "gcp"\nenabled = "yes"\n', "'enabled'"),
    ("unknown-name", 'name = "nimbus"\n', "'name'"),
    ("no-name", "enabled = true\n", "'name'"),
    ("name-not-string", "name = 3\n", "'name'"),
    ("empty-driver", 'name = "gcp"\ndriver = ""\n', "'driver'"),
    ("config-not-table", 'name = "gcp"\nconfig = "x"\n', "[config]"),
    ("pricing-not-table", 'name = "gcp"\npricing = 5\n', "[pricing]"),
    ("negative-price", 'name = "gcp"\n[pricing]\nsev-snp = -1\n', "sev-snp"),
    ("price-not-number", 'name = "gcp"\n[pricing]\ntdx = "cheap"\n', "tdx"),
    ("price-bool", 'name = "gcp"\n[pricing]\ntdx = true\n', "tdx"),
    ("unknown-platform-price", 'name = "gcp"\n[pricing]\nsgx = 0.1\n', "'sgx'"),
    ("policy-not-path", 'name = "gcp"\n[attestation_policy]\ntdx = 3\n', "tdx"),
    (
        "policy-missing-file",
        'name = "gcp"\n[attestation_policy]\nsev-snp = "missing.json"\n',
        "sev-snp",
    ),
    ("policy-unknown-platform", 'name = "gcp"\n[attestation_policy]\nsgx = "p.json"\n', "'sgx'"),
    ("toml-syntax", 'name = "gcp"\nenabled = \n', "line 2"),
]


@pytest.mark.parametrize(
    ("text", "key"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_file_is_an_error_naming_file_and_key(
    providers_dir: Path, write_provider: WriteProvider, text: str, key: str
) -> None:
    (providers_dir / "p.json").write_bytes(b"{}")  # an existing policy file
    path = write_provider("broken.toml", text)

    with pytest.raises(ProviderConfigError) as caught:
        load_configs(providers_dir)

    message = str(caught.value)
    assert str(path) in message
    assert key in message


def test_malformed_external_limit_is_an_error_naming_file_and_key(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    path = write_provider("external.toml", 'name = "external"\n[config]\nmax_vcpus = "many"\n')

    with pytest.raises(ProviderConfigError) as caught:
        load_catalog(providers_dir)

    assert str(path) in str(caught.value)
    assert "max_vcpus" in str(caught.value)


# --- drivers -----------------------------------------------------------------------


def test_enabled_provider_without_a_driver_is_unavailable_with_the_reason(
    providers_dir: Path, write_provider: WriteProvider, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_provider(
        "azure.toml", 'name = "azure"\nenabled = true\ndriver = "azure-classic"\n'
    )

    with caplog.at_level(logging.WARNING):
        catalog = load_catalog(providers_dir)

    assert catalog.get("azure") is None
    assert catalog.enabled_names == ["external"]
    reason = catalog.why_unavailable("azure")
    assert "'azure-classic'" in reason
    assert "not available" in reason
    # The operator is told at start which file asked for it.
    assert any(
        str(path) in record.getMessage() and "azure" in record.getMessage()
        for record in caplog.records
    )


def test_module_factory_driver_is_loaded(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider(
        "azure.toml",
        f'name = "azure"\ndriver = "{THIS_MODULE}:make_listed_driver"\n'
        "[config]\nvcpusSEV = [2, 4]\n"
        "[pricing]\ntdx = 0.02\n",
    )

    catalog = load_catalog(providers_dir)

    assert catalog.enabled_names == ["azure", "external"]
    entry = catalog.get("azure")
    assert entry is not None
    assert isinstance(entry.provider, ListedProvider)
    assert entry.provider.config is entry.config
    assert entry.provider.offerings[Platform.SEV_SNP] == frozenset({2, 4})
    assert entry.provider.offerings[Platform.TDX] == frozenset(CONTRACT_VCPUS["azure"][1])
    assert catalog.price_override("azure", Platform.TDX) == Decimal("0.02")


def test_a_built_in_provider_can_use_an_external_style_driver(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    write_provider("ultraviolet.toml", 'name = "ultraviolet"\ndriver = "external"\n')

    entry = load_catalog(providers_dir).get("ultraviolet")

    assert entry is not None
    assert entry.provider.provisions_instantly is True


@pytest.mark.parametrize(
    "driver",
    [
        "prism_backends_no_such_module:make",
        f"{THIS_MODULE}:no_such_factory",
        f"{THIS_MODULE}:NOT_A_FACTORY",
    ],
)
def test_unloadable_driver_is_an_error_naming_it(
    providers_dir: Path, write_provider: WriteProvider, driver: str
) -> None:
    write_provider("gcp.toml", f'name = "gcp"\ndriver = "{driver}"\n')

    with pytest.raises(ProviderConfigError) as caught:
        load_catalog(providers_dir)

    assert driver in str(caught.value)


@pytest.mark.parametrize(
    "bad_list",
    ['"2,4"', '[2, "4"]', "[0, 2]", "[-2]", "[true]", "2"],
)
def test_malformed_vcpu_list_is_an_error_naming_file_and_key(
    providers_dir: Path, write_provider: WriteProvider, bad_list: str
) -> None:
    path = write_provider(
        "gcp.toml",
        f'name = "gcp"\ndriver = "{THIS_MODULE}:make_listed_driver"\n'
        f"[config]\nvcpusTDX = {bad_list}\n",
    )

    with pytest.raises(ProviderConfigError) as caught:
        load_catalog(providers_dir)

    assert str(path) in str(caught.value)
    assert "vcpusTDX" in str(caught.value)


def test_build_catalog_uses_given_configs() -> None:
    configs = dict(default_configs())
    configs["external"] = ProviderConfig(name="external", enabled=False, driver="external")

    assert build_catalog(configs).enabled_names == []


def test_corim_keys_load_from_pem_keys_and_certificates_and_bad_ones_are_named(
    providers_dir: Path, write_provider: WriteProvider
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    (providers_dir / "signer.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corim signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(other.public_key()).serial_number(7)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(other, hashes.SHA384())
    )  # fmt: skip
    (providers_dir / "signer-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_provider(
        "external.toml",
        'name = "external"\n[attestation_policy]\ncorim_keys = ["signer.pem", "signer-cert.pem"]\n',
    )
    keys = load_configs(providers_dir)["external"].corim_keys
    assert [k.public_numbers() for k in keys] == [
        key.public_key().public_numbers(),
        other.public_key().public_numbers(),
    ]

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (providers_dir / "rsa.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for listed, named in (('["rsa.pem"]', "not an EC key"), ('["missing.pem"]', "missing.pem"),
                          ('"signer.pem"', "must list")):  # fmt: skip
        write_provider(
            "external.toml", f'name = "external"\n[attestation_policy]\ncorim_keys = {listed}\n'
        )
        with pytest.raises(ProviderConfigError, match=named):
            load_configs(providers_dir)
