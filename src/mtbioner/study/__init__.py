"""Measuring models: the paper's study and its reports, bootstrap intervals, corpus overlap, comparisons.

``study_file`` and ``experiment`` (run a study), ``report`` and ``report_full``, ``bootstrap``, ``overlap``
(with ``overlap_findings`` and ``overlap_report``), ``compare`` and ``cross_corpus`` (scoring the merged
answer on any corpus). The top part below the command line.
"""
