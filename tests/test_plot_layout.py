"""The figures' text stays inside the figure at the default size (nothing is cut off)."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from streamkd.results.config import ResultsConfig
from streamkd.results.load import find_records, load_records
from streamkd.results.plots import plot_loss_curves, plot_wer_vs_chunk, plot_wer_vs_shift

from results_factory import utterance_errors as ue
from results_factory import write_run

PLOTTERS = {"wer_vs_chunk": plot_wer_vs_chunk, "wer_vs_apc_shift": plot_wer_vs_shift, "loss_curves": plot_loss_curves}


@pytest.fixture
def runs(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "teacher", method="teacher", seed=42, errors={"test": ue(5)})
    for seed, errors in zip((1, 2), (10, 12)):
        write_run(exp, f"none-chunk4-seed{seed}", seed=seed, errors={"test": ue(errors)})
        write_run(
            exp,
            f"aux-chunk4-seed{seed}",
            method="aux",
            kd_layers="3,6",
            apc_shift=2,
            seed=seed,
            errors={"test": ue(errors - 2)},
        )
    write_run(exp, "none-chunk8-seed1", chunk=8, errors={"test": ue(8)})
    return load_records(find_records(exp)).runs


def _drawn(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _inside(box, fig, tolerance=0.5):
    return (
        box.x0 >= -tolerance
        and box.x1 <= fig.bbox.width + tolerance
        and box.y0 >= -tolerance
        and box.y1 <= fig.bbox.height + tolerance
    )


@pytest.mark.parametrize("name", sorted(PLOTTERS))
def test_the_title_and_the_legend_do_not_overlap(tmp_path, name):
    """Long system names make a wide legend; the figure's title must stay clear of it."""
    exp = tmp_path / "exp"
    write_run(exp, "teacher", method="teacher", seed=42, errors={"test": ue(5)})
    write_run(exp, "none-chunk4-seed1", errors={"test": ue(10)})
    write_run(exp, "none-chunk8-seed1", chunk=8, errors={"test": ue(9)})
    for chunk in (4, 8):
        write_run(
            exp,
            f"aux-chunk{chunk}-seed1",
            method="aux",
            chunk=chunk,
            kd_layers="1,2,3,4,5,6,7,8,9,10,11,12",
            apc_shift=2,
            errors={"test": ue(8)},
        )
    fig = PLOTTERS[name](load_records(find_records(exp)).runs, ResultsConfig())
    renderer = _drawn(fig)
    title = fig._suptitle.get_window_extent(renderer)
    for legend in fig.legends:
        assert not title.overlaps(legend.get_window_extent(renderer)), (name, title.bounds)


@pytest.mark.parametrize("name", sorted(PLOTTERS))
def test_everything_drawn_lies_inside_the_figure(runs, name):
    fig = PLOTTERS[name](runs, ResultsConfig())
    renderer = _drawn(fig)
    # The tight box spans every drawn artist (titles, labels, visible ticks, legends, footnote).
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert _inside(tight, fig), (name, tight.bounds, fig.bbox.bounds)
    for text in [fig._suptitle, fig._supxlabel, *[t for legend in fig.legends for t in legend.get_texts()]]:
        if text is not None and text.get_text():
            box = text.get_window_extent(renderer)
            assert _inside(box, fig), (name, text.get_text(), box.bounds, fig.bbox.bounds)


def test_chunk_plot_caption_is_the_whole_sentence(runs):
    """Wrapping the caption to the figure keeps every word of it."""
    fig = plot_wer_vs_chunk(runs, ResultsConfig())
    _drawn(fig)
    caption = " ".join(fig._supxlabel.get_text().split())
    assert caption.startswith("Lines: mean over seeds;") and caption.endswith("for legibility.")
