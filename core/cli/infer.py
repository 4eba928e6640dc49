"""``stellarscope infer FAMILY``: run any registered model family over a whole store.

One subcommand per family of :mod:`core.models.families`; each loads the family's
predictor from the model directory (``core.models.find``) and streams the store through
:func:`core.inference.runner.run_store`.  Under torchrun the same command shards the rows:
``torchrun --nproc_per_node 2 -m core.cli.main infer vae --store S``.
"""

from __future__ import annotations

import json


def register(sub, groups) -> None:
    from ..models.families import FAMILIES

    for fam in FAMILIES.values():
        if not fam.predictor:
            continue
        prefix = fam.column_prefix or fam.name.upper()
        p = groups["infer"].add_parser(
            fam.name, help=f"run the {fam.title} over a whole store and write {prefix}_* "
            "catalog columns",
            description=f"Stream every spectrum of the store through the {fam.title} and write "
            f"its {prefix}_* catalog columns (in one atomic catalog update). Under torchrun each "
            "process takes a share of the rows and the first writes them all.")
        p.add_argument("--store", default=None, help="store directory or name (default: demo store)")
        p.add_argument("--model", default=None,
                       help=f"model directory or name (default: the newest {fam.title} under "
                       "$STELLARSCOPE_HOME/models, else the shipped demo)")
        p.add_argument("--batch-size", type=int, default=None,
                       help="spectra per batch (default: the family's, e.g. 1024 for the VAE)")
        p.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)")
        p.add_argument("--amp", action="store_true",
                       help="bf16 autocast on CUDA where the family supports it (default: float32)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
        p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=run_infer, family=fam.name)


def run_infer(args) -> int:
    from .. import models
    from ..inference.runner import rank_device, run_store, world

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fam = models.get_family(args.family)
    model_dir = models.find(args.family, args.model)
    predictor = fam.part("predictor").load(model_dir, rank_device(args.device), amp=args.amp)
    figures = run_store(predictor, args.store, batch_size=args.batch_size,
                        progress=not (args.no_progress or args.json))
    if world()[0] != 0:  # under torchrun only the first process reports
        return 0
    if args.json:
        print(json.dumps(figures, default=str))
        return 0
    extra = ""
    if figures.get("median_chi2_nu") is not None:
        extra = f", median χ²_ν {figures['median_chi2_nu']:.3g}"
    print(f"{figures['columns_written']} {fam.title} columns written to {figures['store']}: "
          f"{figures['n_spectra']} spectra, {figures['spectra_per_s']} spectra/s on "
          f"{figures['world_size']} × {figures['device']}{extra}")
    return 0
