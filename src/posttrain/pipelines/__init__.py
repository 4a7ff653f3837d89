"""Multi-stage recipes built on ``engine.train``: the few-shot grid (``grid``), and later PCP's stages."""
