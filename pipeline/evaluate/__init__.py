"""GEO-Bench evaluation: read the released files safely, map task bands to model inputs, probe,
fine-tune, segment, and report (``ofa eval geobench``).

Modules: ``safe_pickle`` (restricted unpickler), ``geobench`` (reader), ``bands`` (band mapping),
``metrics``, ``data`` (a split as a torch Dataset), ``features`` (backbone wrapper and feature caching), ``probe`` (linear probe),
``segmentation`` (UPerNet-style decoder), ``finetune``, ``runner`` (one task, one checkpoint),
``report`` (CSV, markdown, bar chart), ``cli``.
"""
