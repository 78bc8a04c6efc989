"""Elastic: running elastic jobs bound below their full size grow into free capacity."""

from scheduler.plugins.elastic.plugin import NAME, Elastic, ElasticArgs, new

__all__ = ["NAME", "Elastic", "ElasticArgs", "new"]
