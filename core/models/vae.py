"""Conditional spectrum VAE with injected labels (after the APOGEE DR16 VAE, seed section 5).

Encoder: [standardised spectrum (n_pix), z-scored labels (3)] → GELU MLP → μ, log σ² of the
free latents (28).  Decoder input z′ = [z, u] where z = μ + σ·ε and u = y + σ_y·ε′ are the
z-scored labels re-drawn from their errors on every pass; the decoder maps z′ back to flux.

Differences from the seed, on purpose:

* the input spectrum is standardised per pixel with the training set's mean and spread
  (bad pixels set to that mean) instead of per-row min–max, so the χ² errors stay valid;
* the compact preset predicts the flux as mean + spread · (linear decoder output), which
  trains in minutes on a CPU; the ``seed`` preset keeps the seed's widths and GELU output.

Scalings (flux mean/spread, label mean/std) are buffers: they travel in the safetensors file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations_with_replacement

import torch
from torch import nn

LABEL_NAMES = ("TEFF", "LOGG", "FE_H")

#: Named width settings; ``compact`` is the default.
PRESETS: dict[str, dict] = {
    "compact": {"encoder_widths": (128, 64), "output_activation": "none", "residual_output": True},
    "seed": {
        "encoder_widths": (3757, 1878, 939, 469, 234, 117, 58),
        "output_activation": "gelu",
        "residual_output": False,
    },
}

_ACTIVATIONS = {"gelu": nn.GELU, "none": nn.Identity}


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`SpectrumVAE`; stored as ``architecture`` in config.json."""

    n_pix: int = 7514
    n_latent: int = 28
    label_names: tuple[str, ...] = LABEL_NAMES
    encoder_widths: tuple[int, ...] = (128, 64)
    #: None: the encoder widths reversed (the seed's mirror shape)
    decoder_widths: tuple[int, ...] | None = None
    #: "gelu" (seed) or "none" after the decoder's last layer
    output_activation: str = "none"
    #: predict flux as mean + spread · output (True) or the flux itself (seed)
    residual_output: bool = True
    grid: str = "apogee7514"
    logvar_range: tuple[float, float] = (-12.0, 6.0)
    #: degree of the polynomial label trend that :meth:`SpectrumVAE.absorb_label_trend`
    #: can take out of the latent means
    label_trend_degree: int = 3
    #: label-correction latents: the encoder also gives a posterior δy for each injected
    #: label (z-score units, prior N(0, catalog error²)) and training decodes with y + δy, so
    #: the free latents need not carry what the spectrum says of the labels beyond the catalog
    label_offsets: bool = False

    def __post_init__(self):
        if self.output_activation not in _ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {sorted(_ACTIVATIONS)}")
        if self.n_latent < 1 or not self.encoder_widths:
            raise ValueError("a VAE needs ≥ 1 free latent and ≥ 1 hidden layer")
        object.__setattr__(self, "encoder_widths", tuple(int(w) for w in self.encoder_widths))
        if self.decoder_widths is not None:
            object.__setattr__(self, "decoder_widths", tuple(int(w) for w in self.decoder_widths))
        object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        object.__setattr__(self, "logvar_range", tuple(float(v) for v in self.logvar_range))

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    @property
    def n_joint(self) -> int:
        """Dimension of z′ = free latents + injected labels (31 by default)."""
        return self.n_latent + self.n_labels

    @property
    def trend_terms(self) -> tuple[tuple[int, ...], ...]:
        """Monomials of the label trend: label indices multiplied, degree 1 … degree."""
        return tuple(c for d in range(1, self.label_trend_degree + 1)
                     for c in combinations_with_replacement(range(self.n_labels), d))

    @property
    def decoder_shape(self) -> tuple[int, ...]:
        return self.decoder_widths if self.decoder_widths is not None else self.encoder_widths[::-1]

    @classmethod
    def preset(cls, name: str, **overrides) -> VAEConfig:
        if name not in PRESETS:
            raise KeyError(f"unknown VAE preset {name!r} (known: {sorted(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VAE architecture fields {sorted(unknown)}")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**d)


def _mlp(widths: list[int], final_activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        last = i == len(widths) - 2
        layers.append(_ACTIVATIONS[final_activation]() if last else nn.GELU())
    return nn.Sequential(*layers)


class SpectrumVAE(nn.Module):
    """The conditional VAE; ``forward`` takes physical labels and errors."""

    model_type = "vae"

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        enc = [config.n_pix + config.n_labels, *config.encoder_widths]
        self.encoder = _mlp(enc, "gelu")
        self.to_mu = nn.Linear(enc[-1], config.n_latent)
        self.to_logvar = nn.Linear(enc[-1], config.n_latent)
        if config.label_offsets:
            self.to_offset = nn.Linear(enc[-1], config.n_labels)
            self.to_offset_logvar = nn.Linear(enc[-1], config.n_labels)
            # start at δy = 0 with a narrow posterior: the first passes decode the catalog labels
            for layer, bias in ((self.to_offset, 0.0), (self.to_offset_logvar, -8.0)):
                nn.init.zeros_(layer.weight)
                nn.init.constant_(layer.bias, bias)
        self.decoder = _mlp([config.n_joint, *config.decoder_shape, config.n_pix],
                            config.output_activation)
        if config.residual_output:
            # start from the mean spectrum: small last-layer weights, zero bias
            last = self.decoder[-2]
            nn.init.normal_(last.weight, std=1e-3)
            nn.init.zeros_(last.bias)
        self.register_buffer("flux_mean", torch.ones(config.n_pix))
        self.register_buffer("flux_scale", torch.ones(config.n_pix))
        self.register_buffer("label_mean", torch.zeros(config.n_labels))
        self.register_buffer("label_std", torch.ones(config.n_labels))
        # μ′ = head(h) − g(y), g(y) = A·φ(y) + c a fixed polynomial label trend, and the
        # decoder adds g(u) back: zero unless a trained model was decorrelated
        n_terms = len(config.trend_terms)
        self.register_buffer("trend_weight", torch.zeros(config.n_latent, n_terms))
        self.register_buffer("trend_bias", torch.zeros(config.n_latent))

    # -- saving -------------------------------------------------------------------------------
    def architecture(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_architecture(cls, arch: dict) -> SpectrumVAE:
        return cls(VAEConfig.from_dict(arch))

    # -- scalings -----------------------------------------------------------------------------
    @torch.no_grad()
    def set_scaling(self, flux_mean, flux_scale, label_mean, label_std) -> None:
        """Install the training set's per-pixel flux mean/spread and label mean/std."""
        for name, value in (("flux_mean", flux_mean), ("flux_scale", flux_scale),
                            ("label_mean", label_mean), ("label_std", label_std)):
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=buf.dtype).to(buf.device)
            if t.shape != buf.shape:
                raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(t.shape)}")
            if name in ("flux_scale", "label_std") and not bool((t > 0).all()):
                raise ValueError(f"{name} must be positive everywhere")
            buf.copy_(t)

    def scale_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.label_mean) / self.label_std

    def scale_label_errors(self, errors: torch.Tensor) -> torch.Tensor:
        """Errors in z-score units; negative or NaN errors count as 0 (as the seed's ReLU)."""
        errors = torch.nan_to_num(errors, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.relu(errors) / self.label_std

    def standardise_flux(self, flux: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
        """Encoder input: (flux − mean)/spread on good pixels, 0 (the mean) elsewhere."""
        x = (flux - self.flux_mean) / self.flux_scale
        return torch.where(good, x, torch.zeros((), dtype=x.dtype, device=x.device))

    # -- the network --------------------------------------------------------------------------
    def encode(self, flux: torch.Tensor, good: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ² of the free latents from flux, good-pixel mask and z-scored labels."""
        return self._free_latents(self._trunk(flux, good, y), y)

    def _trunk(self, flux, good, y) -> torch.Tensor:
        return self.encoder(torch.cat([self.standardise_flux(flux, good), y], dim=-1))

    def _free_latents(self, h, y) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.config.logvar_range
        return self.to_mu(h) - self.label_trend(y), self.to_logvar(h).clamp(lo, hi)

    def _offsets(self, h) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.config.logvar_range
        return self.to_offset(h), self.to_offset_logvar(h).clamp(lo, hi)

    def encode_offsets(self, flux: torch.Tensor, good: torch.Tensor, y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log variance of the label corrections δy (z-score units) of a
        model with ``label_offsets``: the labels the spectrum points to are y + δy."""
        if not self.config.label_offsets:
            raise ValueError("this VAE has no label-correction latents (label_offsets off)")
        return self._offsets(self._trunk(flux, good, y))

    def trend_features(self, y: torch.Tensor) -> torch.Tensor:
        """φ(y): every monomial of the z-scored labels up to ``label_trend_degree``."""
        y = y.to(self.trend_weight.dtype)
        cols = []
        for term in self.config.trend_terms:
            col = y[..., term[0]]
            for i in term[1:]:
                col = col * y[..., i]
            cols.append(col)
        return torch.stack(cols, dim=-1)

    def label_trend(self, y: torch.Tensor) -> torch.Tensor:
        """g(y) = A·φ(y) + c, the part of the latent means explained by the labels."""
        return self.trend_features(y) @ self.trend_weight.T + self.trend_bias

    @torch.no_grad()
    def absorb_label_trend(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Re-express the model with latent means μ′ = μ − (A·φ(y) + c).

        The decoder adds the same trend of its labels back before its first layer, so
        decode(μ′, y) equals the old decode(μ, y) exactly: reconstructions do not change,
        only the coordinates of the free latents do.  With A, c fitted by least squares on
        the training set, μ′ carries no polynomial trend in the injected labels, which takes
        out the covariance the separability term measures (see core.train.decorrelate).
        """
        self.trend_weight += torch.as_tensor(weight, dtype=self.trend_weight.dtype,
                                             device=self.trend_weight.device)
        self.trend_bias += torch.as_tensor(bias, dtype=self.trend_bias.dtype,
                                           device=self.trend_bias.device)

    def decode(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Flux from free latents ``z`` and z-scored labels ``u``."""
        dtype = self.decoder[0].weight.dtype  # full precision even if z came out of autocast
        z = z.to(dtype) + self.label_trend(u).to(dtype)
        h = self.decoder[:-2](torch.cat([z, u.to(dtype)], dim=-1))
        # the output layer runs in float32 even under bf16 autocast: bf16 rounding of a
        # flux near 1 (~0.004) would be as large as the noise the χ² is measured against
        with torch.autocast(device_type=h.device.type, enabled=False):
            last = self.decoder[-2]
            out = self.decoder[-1](last(h.to(last.weight.dtype)))
        if self.config.residual_output:
            out = self.flux_mean + self.flux_scale * out
        return out

    def decoder_jacobian(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """∂ decode(z, u) / ∂z for one point: an (n_latent, n_pix) tensor.

        Propagated layer by layer (the decoder is Linear/GELU only), which is exact and
        avoids the start-up cost of torch.func on the first call.
        """
        first = self.decoder[0]
        z = z + self.label_trend(u).to(z.dtype)
        h = torch.cat([z, u], dim=-1).to(first.weight.dtype)
        tangent = first.weight[:, : self.config.n_latent].T  # (n_latent, width)
        h = first(h)
        for layer in list(self.decoder)[1:]:
            if isinstance(layer, nn.Linear):
                tangent, h = tangent @ layer.weight.T, layer(h)
            elif isinstance(layer, nn.GELU):
                # d/dx x·Φ(x) = Φ(x) + x·φ(x)
                cdf = 0.5 * (1.0 + torch.erf(h / 2.0**0.5))
                pdf = torch.exp(-0.5 * h**2) / (2.0 * torch.pi) ** 0.5
                tangent, h = tangent * (cdf + h * pdf), layer(h)
            elif not isinstance(layer, nn.Identity):
                raise TypeError(f"no Jacobian rule for decoder layer {type(layer).__name__}")
        if self.config.residual_output:
            tangent = tangent * self.flux_scale
        return tangent

    def forward(self, flux: torch.Tensor, good: torch.Tensor, labels: torch.Tensor,
                label_err: torch.Tensor | None = None, sample: bool = True) -> dict:
        """One pass.  ``labels``/``label_err`` in physical units; with ``sample`` False the
        decoder gets μ and the labels themselves (plus the posterior-mean δy of a model with
        ``label_offsets``).  ``label_err`` given: the labels are re-drawn from them."""
        y = self.scale_labels(labels)
        h = self._trunk(flux, good, y)
        mu, logvar = self._free_latents(h, y)
        extra = {}
        if self.config.label_offsets:
            # the decoder gets the corrected labels y + δy (δy sampled in training)
            d_mu, d_logvar = self._offsets(h)
            d = d_mu + torch.exp(0.5 * d_logvar) * torch.randn_like(d_mu) if sample else d_mu
            extra = {"offset_mu": d_mu, "offset_logvar": d_logvar}
            y = y + d
        if sample:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            u = y if label_err is None else y + self.scale_label_errors(label_err) * torch.randn_like(y)
        else:
            z, u = mu, y
        return {"recon": self.decode(z, u), "mu": mu, "logvar": logvar, "z": z, "u": u, **extra}


def build_vae(preset: str = "compact", **overrides) -> SpectrumVAE:
    return SpectrumVAE(VAEConfig.preset(preset, **overrides))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
