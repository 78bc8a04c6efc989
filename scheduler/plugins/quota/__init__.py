"""Quota: per-tenant guaranteed GPUs with borrowing (Kueue cohorts, simplified to one cohort)."""

from scheduler.plugins.quota.plugin import NAME, Quota, QuotaArgs, new, nominal_gpus

__all__ = ["NAME", "Quota", "QuotaArgs", "new", "nominal_gpus"]
