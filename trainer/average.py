"""``trainer-average A.keras B.keras ... --out mean.keras``: the weighted mean of trained models.

Models of one architecture and one contract (labels, input) that descend from the same start
(a run and its continuation, say) can be averaged weight by weight, batch-norm statistics too,
into one model of the same size and speed (a "model soup", Wortsman et al. 2022). The shipped
``emotion_vgg`` is the mean of its GPU run's best weights and of the final weights of a second
cosine cycle run from them: 0.6898 on validation with one view, against 0.6776 and 0.6797
(model card). Choose the weights on validation, as every other setting, before scoring test.

Example:
    trainer-average runs/vgg/best.keras runs/vgg_cycle2/final.keras --out runs/vgg_mean.keras
    trainer-eval runs/vgg_mean.keras ../shared/fer2013 --split val
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from runtime.cli_support import ArgumentParser, Number, UserError, path_arg, run_main
from trainer.cli_common import check_new_output, load_models_of_one_contract, write_errors

WEIGHT = Number(float, 0.0, 1.0)  # one model's share of the mean


def mean_weights(weights: Sequence[Sequence[np.ndarray]], shares: Sequence[float]) -> list[np.ndarray]:
    """The ``shares``-weighted mean, array by array, of models' ``get_weights()`` lists.

    Raises:
        ValueError: The lists differ in length or in any array's shape, or the shares do not sum to 1.
    """
    if len(weights) != len(shares) or len(weights) < 2:
        raise ValueError(f"give two or more models and one share each, got {len(weights)} and {len(shares)}")
    if abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"the shares must sum to 1, got {sum(shares):.6g}")
    first = [w.shape for w in weights[0]]
    for i, ws in enumerate(weights[1:], start=2):
        if [w.shape for w in ws] != first:
            raise ValueError(f"model {i} has other weights than model 1 (another architecture or width)")
    return [sum(share * np.asarray(ws[k], np.float64) for share, ws in zip(shares, weights, strict=True))
            .astype(weights[0][k].dtype) for k in range(len(first))]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="trainer-average",
                            description="Average the weights of trainer-fit models of one architecture.")
    parser.add_argument("models", nargs="+", type=path_arg, help=".keras models from trainer-fit (two or more)")
    parser.add_argument("--out", type=path_arg, required=True, help=".keras file to write (a new file)")
    parser.add_argument("--weights", type=WEIGHT, nargs="+", metavar="W",
                        help="each model's share, in order, summing to 1 (default: equal shares)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """trainer-average: write the weighted mean of two or more .keras models."""
    args = _parser().parse_args(argv)
    if len(args.models) < 2:
        raise UserError("give two or more .keras models to average")
    shares = args.weights or [1.0 / len(args.models)] * len(args.models)
    if len(shares) != len(args.models):
        raise UserError(f"--weights has {len(shares)} values for {len(args.models)} models: give one per model")
    if abs(sum(shares) - 1.0) > 1e-6:
        raise UserError(f"--weights sum to {sum(shares):.6g}: give shares that sum to 1")
    check_new_output(args.out, ".keras")

    from trainer.model import save_model

    models, spec = load_models_of_one_contract(args.models, "average models of one run")
    try:
        mean = mean_weights([m.get_weights() for m in models], shares)
    except ValueError as exc:
        raise UserError(f"{exc}: average models of one architecture") from None
    models[0].set_weights(mean)
    extra = {"average_of": [str(m) for m in args.models], "shares": list(shares)}
    with write_errors(args.out):
        save_model(models[0], args.out, spec, extra)
    print(f"wrote {args.out}: the mean of {len(models)} models (shares {', '.join(f'{s:.3g}' for s in shares)})",
          file=sys.stderr)
    return 0


cli = run_main(main, "trainer-average")
