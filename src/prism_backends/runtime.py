"""The parts a process is assembled from, built once from settings."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from cryptography import x509
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents.pki import AgentCA, load_ca, load_or_create_ca
from prism_backends.agents.sealing import Sealer, sealer_from
from prism_backends.agents.service import BootstrapSource, CredentialIssuer
from prism_backends.attestation.appraisal import Anchors
from prism_backends.attestation.fetch import CachingHttpFetcher
from prism_backends.attestation.service import Appraiser, AttestationSettings
from prism_backends.attestation.snp.roots import bundled_roots as snp_bundled_roots
from prism_backends.attestation.tdx.roots import bundled_roots as tdx_bundled_roots
from prism_backends.auth.keys import load_or_create_issuer_key
from prism_backends.auth.tokens import TokenVerifier, load_jwks_file
from prism_backends.config import Settings
from prism_backends.console.signin import SignInCodes
from prism_backends.datadir import prepare_data_dir, private_file
from prism_backends.db.backup import checkpoint
from prism_backends.db.engine import make_engine, make_session_factory
from prism_backends.pricing.core import PriceTable
from prism_backends.pricing.table import packaged_table
from prism_backends.providers.config import ProviderConfig, load_configs
from prism_backends.providers.registry import Catalog, load_catalog

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    # Provider configurations made at start (a local manager's), beside the files'.
    extra_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    # The replicas of the agents endpoints this process runs while they run: its
    # /metrics shows each one's connected agents, 0 as well.
    agents_replicas: set[str] = field(default_factory=set)

    @cached_property
    def engine(self) -> Engine:
        if self.settings.database_url is None:
            prepare_data_dir(self.settings.data_dir)
            private_file(self.settings.data_dir / "prism-backends.db")
        return make_engine(self.settings.effective_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(
            self.settings.effective_providers_dir,
            deployment_mark=self.deployment_mark,
            extra=self.extra_providers,
        )

    @cached_property
    def deployment_mark(self) -> str:
        """This deployment at shared providers: its agents CA's key identifier."""
        identifier = x509.SubjectKeyIdentifier.from_public_key(self.agent_ca.cert.public_key())
        return identifier.digest.hex()

    @cached_property
    def agent_bootstrap(self) -> BootstrapSource:
        return BootstrapSource(self.agent_ca, self.sealer, self.settings.effective_agents_address)

    @cached_property
    def prices(self) -> PriceTable:
        return packaged_table()

    @cached_property
    def sign_in_codes(self) -> SignInCodes:
        """The console's one-time sign-in codes (``serve`` mints them)."""
        return SignInCodes()

    @cached_property
    def verifier(self) -> TokenVerifier:
        settings = self.settings
        local_keys = []
        if settings.embedded_issuer:
            local_keys.append(load_or_create_issuer_key(settings.data_dir).public_key())
        return TokenVerifier(
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            max_lifetime=timedelta(days=settings.token_max_days),
            local_keys=local_keys,
            jwks=load_jwks_file(settings.jwks_file) if settings.jwks_file else None,
            jwks_url=settings.jwks_url,
        )

    @cached_property
    def agent_ca(self) -> AgentCA:
        settings = self.settings
        if settings.agents_ca_cert is not None or settings.agents_ca_key is not None:
            if settings.agents_ca_cert is None or settings.agents_ca_key is None:
                raise ValueError("agents_ca_cert and agents_ca_key go together")
            return load_ca(settings.agents_ca_cert, settings.agents_ca_key)
        return load_or_create_ca(settings.data_dir)

    @cached_property
    def sealer(self) -> Sealer:
        return sealer_from(self.settings.agents_key_encryption_key, self.settings.data_dir)

    @cached_property
    def credentials(self) -> CredentialIssuer:
        return CredentialIssuer(
            self.agent_ca, self.sealer, timedelta(days=self.settings.agent_cert_days)
        )

    @cached_property
    def anchors(self) -> Anchors:
        return Anchors(snp_roots=snp_bundled_roots(), tdx_roots=tdx_bundled_roots())

    @cached_property
    def appraiser(self) -> Appraiser:
        settings = self.settings
        return Appraiser(
            self.sessions,
            anchors=self.anchors,
            sealer=self.sealer,
            settings=AttestationSettings(
                issuer=settings.jwt_issuer,
                token_lifetime=timedelta(minutes=settings.attestation_token_minutes),
                key_rotation=timedelta(days=settings.attestation_key_rotation_days),
                trust_on_first_use=settings.attestation_trust_on_first_use,
                crl=settings.attestation_crl,
                evidence_max_bytes=settings.evidence_max_bytes,
            ),
            fetcher=(
                CachingHttpFetcher(settings.data_dir / "endorsements")
                if settings.attestation_fetch
                else None
            ),
            azure_jwks=(
                load_jwks_file(settings.azure_attestation_jwks_file)
                if settings.azure_attestation_jwks_file
                else None
            ),
            azure_jwks_url=settings.azure_attestation_jwks_url,
            corim_keys={
                name: config.corim_keys
                for name, config in load_configs(settings.effective_providers_dir).items()
                if config.corim_keys
            },
        )

    def close(self) -> None:
        if "engine" in self.__dict__:
            try:
                checkpoint(self.engine)  # the .db file alone then holds everything
            except (SQLAlchemyError, sqlite3.Error):  # a raw connection's errors are not wrapped
                log.warning("could not checkpoint the SQLite write-ahead log", exc_info=True)
            self.engine.dispose()
