"""Analysis pipelines: configuration, models, training and inference glue per analysis."""
