"""Draw docs/figures/misalignment.png, the README's figure: ``python scripts/readme_figure.py``.

One 40 px disc whose box corner sits half a cell past a stride-16 cell corner. Left: RoIPool snaps
the box to whole cells and takes the max in each bin; right: RoIAlign (aligned=True) samples the
box where it is. Below, each pooled 14x14 crop pasted back over the box against the true outline.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minirc.explore import draw_roi_paste, draw_roi_reads, roi_case  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "figures",
                   "misalignment.png")


def main():
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 9))
    for col, kind in enumerate(("RoIPool", "RoIAlign aligned=True")):
        case = roi_case(offset=0.5, box_size=40.0, stride=16, kind=kind, output_size=14)
        draw_roi_reads(axes[0, col], case)
        draw_roi_paste(axes[1, col], case, show_image=False)
    fig.suptitle("The misalignment: a 40 px disc, its box half a cell off the stride-16 grid.\n"
                 "RoIPool reads whole cells (top left) and its pasted mask (bottom left) misses the outline "
                 "(lime);\nRoIAlign samples the box where it is (top right, dots)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
