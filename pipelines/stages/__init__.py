"""The pipeline's stages, one module per group, TFX-style.

Each stage is a function `(ctx, out_dir) -> StageResult` that reads the
outputs of the stages before it (`ctx.output(stage, Record)`: the typed records
of `outputs`) and writes only into `out_dir`; `pipelines.manifest` makes that
atomic and records it. `pipelines.plan` orders them and says what each reads.

  outputs     the record each stage writes (`PretrainOutput`, ...), and `StageResult`
  context     what every stage sees (`Context`) and how stages are named
  preprocess  import, vocab, corpus, records/<task>
  pretrain    pretrain
  finetune    finetune/<task>, and the analysis section's transfer/<task>/<name>
  zeroshot    zeroshot/<task>: the pre-trained LM alone, zero- and few-shot
  evaluate    evaluate: every model's scores on the test splits
  export      export: the served task model
"""
