"""The learning-dynamics plot's log-scale PPL axis reads like numbers ("2", "3"), not
matplotlib's default "2 x 10^0"."""

import matplotlib

matplotlib.use("Agg")


def _labels(ax):
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
            if t.get_text()]


def test_plain_log_ticks_on_a_narrow_and_a_wide_range():
    import matplotlib.pyplot as plt

    from finemem.report.plots import plain_log_ticks

    for lo, hi, expect in ((1.8, 3.6, {"2", "3"}), (1.1, 40, {"2", "10", "20"})):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [lo, hi])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        plain_log_ticks(ax)
        labels = _labels(ax)
        assert expect <= set(labels), labels
        assert not any("times" in t or "^" in t or "$" in t for t in labels), labels
        plt.close(fig)


def test_dynamics_figure_ppl_axis_is_plain():
    from finemem.audit.summary import Row, RunSummary
    from finemem.analysis.stages import CheckpointStage, StageRule
    from finemem.config import AuditConfig
    from finemem.report.plots import dynamics_figure

    def row(step, acc, ppl):
        m = {"test/answer_accuracy": [{"value": acc, "n": 100, "lo": acc - .05, "hi": acc + .05,
                                       "settings": {}}],
             "test/perplexity": [{"value": ppl, "n": 100, "lo": ppl, "hi": ppl,
                                  "settings": {}}]}
        return Row(f"step-{step:06d}", step, step / 10, m)

    rows = [row(0, 0.1, 30.0)] + [row(s, 0.9, p) for s, p in ((10, 2.0), (20, 1.9),
                                                               (30, 2.6), (40, 3.1))]
    labels = [CheckpointStage(index=i, label="healthy", acc=r.get("test/answer_accuracy"),
                              acc_upper=1.0, n=100, ppl=r.get("test/perplexity"),
                              ppl_min_so_far=1.9, ppl_ratio=1.0, reason="")
              for i, r in enumerate(rows)]
    rec = type("Rec", (), {"name": "step-000020", "explanation": ""})()
    s = RunSummary("run", rows, labels, rec, StageRule(), AuditConfig())
    fig = dynamics_figure(s)
    log_axes = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    assert log_axes
    for ax in log_axes:
        labels = _labels(ax)
        assert labels and not any("times" in t or "$" in t for t in labels), labels
