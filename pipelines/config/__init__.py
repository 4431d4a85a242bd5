"""Experiment configuration: a YAML/JSON file with a schema.

The schema is pydantic models, one per section. Loading checks every key and
value before any stage runs: unknown keys, wrong types and bad values fail
with the full dotted path of the offending key (every bad section at once).
Command-line overrides use the same dotted paths: `--set pretrain.learning_rate=1e-4`.

A pure schema: it reads no checkpoint. What a config leaves to
`model.init_from` (sizes, tokenizer mode) or works out from the model (the
analysis variants) is resolved once by `pipelines.resolve`.

  validation  `Section`, `ConfigError`, and pydantic's errors as dotted-key messages
  data        the preprocess section: inputs, corpus, tasks
  training    the model, pretrain and finetune sections
  experiment  the analysis and export sections, and `ExperimentConfig`, the whole file
  loading     `load_config`: shipped names, `extends`, `--set` overrides
"""
