"""The dashboard's views, one registry line each (tab order; see :mod:`.registry`)."""

from .registry import ViewSpec, register_view, registered

register_view(ViewSpec("star", "Star", "dashboard.views.star:StarView", key="1"))
register_view(ViewSpec("latent", "Latent space", "dashboard.views.latent:LatentView", key="2",
                       needs=("vae",)))
register_view(ViewSpec("catalog", "Catalog", "dashboard.views.catalog:CatalogView", key="3"))
register_view(ViewSpec("fit", "Fit", "dashboard.views.fit:FitView", key="4",
                       needs=("emulator",)))
register_view(ViewSpec("attention", "Attention", "dashboard.views.attention:AttentionView",
                       key="5", needs=("transformer",)))

__all__ = ["ViewSpec", "register_view", "registered"]
