"""``rq worker -c tests.deployments.rq_settings``: the main worker imports the jobs module (and
so calls configure()) before it forks any work horse, as apps that preload their code do."""

from __future__ import annotations

from .rq_jobs import work

__all__ = ["work"]
