"""Drift between catalogues: is the data a model now sees still like the data it learned from?

* ``bins``: bin edges at a table's quantiles and counts on given edges, in Spark.
* ``stats``: PSI and Kolmogorov–Smirnov bounds from those counts (numpy).
* ``reference``: the training snapshot stored with each model version at training time.
* ``predictions``: scoring runs in gold.scored and their predicted genre shares.
* ``run``: ``genre drift``, writing gold.drift.
"""
