"""Wire shapes of the offerings route."""

from __future__ import annotations

from pydantic import BaseModel, Field


class VcpuOffer(BaseModel):
    vcpus: int = Field(examples=[2])
    monthly_cost_estimate: str = Field(
        examples=["$12.34"], description="What a CVM of this size costs a month (730 hours)."
    )


class PlatformOffer(BaseModel):
    cc_platform: str = Field(examples=["sev-snp"], description="As the create route spells it.")
    vcpus: list[VcpuOffer]


class ProviderOffer(BaseModel):
    name: str = Field(examples=["azure"])
    provisions_instantly: bool = Field(
        description="True when the tenant runs the machine (no remote create)."
    )
    platforms: list[PlatformOffer]


class UnavailableProvider(BaseModel):
    name: str = Field(examples=["gcp"])
    reason: str


class Offerings(BaseModel):
    providers: list[ProviderOffer]
    unavailable: list[UnavailableProvider] = Field(
        description="Providers configured here that cannot create now, with the reason."
    )
