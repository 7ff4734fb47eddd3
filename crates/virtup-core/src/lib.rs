//! Pure core of virtup: typed options, the virt-up config and data-dir models, digests and plans.
