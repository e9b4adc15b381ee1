"""The handover Lambda: one code path for a deploy-time handover and one at the block's start.

Bundled as the package ``handover_handler`` beside a minimal ``trn_burnin`` (the report schema and
its checker), so its modules import each other relatively and ``trn_burnin`` absolutely.
"""
