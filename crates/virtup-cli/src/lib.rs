//! Shared glue for the thin virtup binaries.
