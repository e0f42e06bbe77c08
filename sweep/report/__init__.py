"""The comparison report of a sweep: ``cli`` (``python -m sweep.report``: the table, the text,
HTML) and ``figures`` (the plots and what they are drawn from)."""
